"""CLIP-Adapter: the residual blend against a hand computation; upstream checkpoints load."""
import torch

from trainers.clip_adapter import Adapter


def test_logits_blend_the_adapted_feature(build):
    trainer = build("CLIPAdapter", "TRAINER.CLIP_ADAPTER.RATIO", "0.3")
    model = trainer.model.eval()
    images = next(iter(trainer.test_loader))["img"]
    with torch.no_grad():
        x = model.clip.visual(images).float()
        w1, w2 = model.adapter.fc[0].weight, model.adapter.fc[2].weight
        adapted = torch.relu(torch.relu(x @ w1.t()) @ w2.t())
        blended = 0.3 * adapted + 0.7 * x
        blended = blended / blended.norm(dim=-1, keepdim=True)
        expected = model.clip.logit_scale.exp() * blended @ model.fixed_text_features.t()
        assert torch.allclose(model(images), expected, atol=1e-5)
    assert [k for k, p in trainer.model.named_parameters() if p.requires_grad] == [
        "adapter.fc.0.weight", "adapter.fc.2.weight"]


def test_upstream_checkpoint_loads(build, tmp_path):
    state = Adapter(32, 4).state_dict()  # upstream's registered module: the Adapter itself
    assert list(state) == ["fc.0.weight", "fc.2.weight"]
    folder = tmp_path / "up" / "clip_adapter"
    folder.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 200, "optimizer": None, "scheduler": None,
                "val_result": None}, folder / "model.pth.tar-200")
    trainer = build("CLIPAdapter")
    trainer.load_model(str(tmp_path / "up"), epoch=200)
    assert torch.equal(trainer.model.adapter.fc[0].weight, state["fc.0.weight"])
    assert torch.equal(trainer.model.adapter.fc[2].weight, state["fc.2.weight"])
