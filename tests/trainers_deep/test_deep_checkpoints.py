"""Checkpoints hold only learned tensors; upstream MaPLe, IVLP and VPT checkpoint directories
(whole-model state dicts in fp16, with frozen CLIP keys) load through ``load_model``."""
import os
from collections import OrderedDict

import pytest
import torch

from dassl_lite.engine import CheckpointError, load_checkpoint


@pytest.mark.parametrize("name, opts, folder, keys", [
    ("MaPLe", (), "MultiModalPromptLearner",
     ["ctx", "compound_prompts_text", "proj.weight", "proj.bias",
      "compound_prompt_projections.0.weight", "compound_prompt_projections.0.bias",
      "compound_prompt_projections.1.weight", "compound_prompt_projections.1.bias"]),
    ("IVLP", (), "VLPromptLearner", ["text.ctx", "text.deep", "vision.ctx", "vision.deep"]),
    ("VPT", (), "prompt_learner", ["ctx", "deep"]),
    ("VPTDeep", ("TRAINER.VPTDEEP.HEAD", "linear"), "prompt_learner",
     ["ctx", "deep", "head.weight", "head.bias"]),
])
def test_checkpoint_holds_only_learned_tensors(build, name, opts, folder, keys):
    trainer = build(name, *opts)
    trainer.train()
    ckpt = load_checkpoint(os.path.join(trainer.output_dir, folder, "model.pth.tar-1"))
    assert list(ckpt["state_dict"]) == keys
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())
    assert trainer.get_model_names() == [folder]


def fp16_exact(learner):
    """Give every learned tensor new random values that fp16 represents exactly."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_((p + 0.05 * torch.randn(p.shape, generator=g)).half().float())


def upstream_maple_state(learner, clip_model):
    """Upstream MaPLe's CustomCLIP.state_dict(): prompt_learner.* learned keys (numbered
    compound prompts) among the frozen CLIP keys, in fp16."""
    state = OrderedDict()
    state["prompt_learner.ctx"] = learner.ctx
    for i, p in enumerate(learner.compound_prompts_text):
        state[f"prompt_learner.compound_prompts_text.{i}"] = p
    for k, v in learner.proj.state_dict().items():
        state[f"prompt_learner.proj.{k}"] = v
    for k, v in learner.compound_prompt_projections.state_dict().items():
        state[f"prompt_learner.compound_prompt_projections.{k}"] = v
    return OrderedDict((k, v.detach().clone().half()) for k, v in state.items())


def test_upstream_maple_directory_evaluates_like_our_checkpoint(build, tmp_path, upstream):
    source = build("MaPLe", output_dir=tmp_path / "src")
    fp16_exact(source.model.prompt_learner)
    source.save_model(4, str(tmp_path / "ours"))  # ours/MultiModalPromptLearner/model.pth.tar-5
    state = upstream_maple_state(source.model.prompt_learner, source.model.clip)
    state.update(upstream.frozen(source.model.clip))
    model_dir = upstream.write(tmp_path / "upstream", "MultiModalPromptLearner", state, epoch=5)

    results = {}
    for label, directory in (("ours", str(tmp_path / "ours")), ("upstream", model_dir)):
        trainer = build("MaPLe", output_dir=tmp_path / f"eval_{label}")
        trainer.load_model(directory, epoch=5)
        assert trainer.model_epoch == 5
        trainer.set_model_mode("eval")
        with torch.no_grad():
            images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            logits = trainer.model(images)
        results[label] = (trainer.test(), logits, trainer.model.prompt_learner.state_dict())
    assert results["ours"][0] == results["upstream"][0]
    assert torch.equal(results["ours"][1], results["upstream"][1])
    for k, v in results["upstream"][2].items():
        expected = source.model.prompt_learner.state_dict()[k]
        assert v.dtype == torch.float32 and torch.equal(v, expected)


def test_upstream_ivlp_directory_loads(build, tmp_path, upstream):
    trainer = build("IVLP")  # text: 2 tokens x depth 4; vision: 3 tokens x depth 2
    g = torch.Generator().manual_seed(4)
    learned = OrderedDict([("prompt_learner.ctx", torch.randn(2, 32, generator=g))])
    for i in (1, 2, 3):
        key = f"text_encoder.transformer.resblocks.{i}.VPT_shallow"
        learned[key] = torch.randn(2, 32, generator=g)
    learned["image_encoder.VPT"] = torch.randn(3, 48, generator=g)
    learned["image_encoder.transformer.resblocks.1.VPT_shallow"] = torch.randn(3, 48, generator=g)
    learned = OrderedDict((k, v.half()) for k, v in learned.items())
    state = OrderedDict(learned, **upstream.frozen(trainer.model.clip))
    trainer.load_model(upstream.write(tmp_path / "up", "VLPromptLearner", state), epoch=5)
    pl = trainer.model.prompt_learner
    assert torch.equal(pl.text.ctx.data, learned["prompt_learner.ctx"].float())
    for i in (1, 2, 3):
        key = f"text_encoder.transformer.resblocks.{i}.VPT_shallow"
        assert torch.equal(pl.text.deep[i - 1].data, learned[key].float())
    assert torch.equal(pl.vision.ctx.data, learned["image_encoder.VPT"].float())
    assert torch.equal(pl.vision.deep[0].data,
                       learned["image_encoder.transformer.resblocks.1.VPT_shallow"].float())
    assert 0 <= trainer.test() <= 100


def test_upstream_vpt_directory_loads(build, tmp_path, upstream):
    trainer = build("VPT")  # 3 tokens x depth 2
    g = torch.Generator().manual_seed(5)
    ctx, deep = torch.randn(3, 48, generator=g).half(), torch.randn(3, 48, generator=g).half()
    state = upstream.frozen(trainer.model.clip, prefix_tokens=False)  # the whole CustomCLIP
    state["image_encoder.VPT"] = ctx
    state["image_encoder.transformer.resblocks.1.VPT_shallow"] = deep
    trainer.load_model(upstream.write(tmp_path / "up", "prompt_learner", state), epoch=5)
    pl = trainer.model.prompt_learner
    assert torch.equal(pl.ctx.data, ctx.float()) and torch.equal(pl.deep[0].data, deep.float())


@pytest.fixture
def maple_upstream(build, tmp_path, upstream):
    """``write(edit)``: an upstream MaPLe directory (depth 3) after ``edit(state)``."""
    source = build("MaPLe", output_dir=tmp_path / "src")

    def write(edit):
        state = upstream_maple_state(source.model.prompt_learner, source.model.clip)
        state.update(upstream.frozen(source.model.clip))
        edit(state)
        return upstream.write(tmp_path / f"up{len(list(tmp_path.iterdir()))}",
                              "MultiModalPromptLearner", state)

    return write


def test_missing_trainable_key_is_named(build, maple_upstream):
    model_dir = maple_upstream(lambda s: s.pop("prompt_learner.proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing trainable keys \['proj.weight'\]; "
                                              r"unexpected keys none"):
        build("MaPLe").load_model(model_dir, epoch=5)


def test_gap_in_numbered_upstream_prompts_is_named(build, maple_upstream):
    model_dir = maple_upstream(lambda s: s.pop("prompt_learner.compound_prompts_text.0"))
    with pytest.raises(CheckpointError) as e:
        build("MaPLe").load_model(model_dir, epoch=5)
    assert str(e.value) == (
        "Upstream checkpoint is missing trainable keys ['prompt_learner.compound_prompts_text.0'] "
        "(it has ['prompt_learner.compound_prompts_text.1'])")


def test_other_depth_is_named(build, maple_upstream):
    model_dir = maple_upstream(lambda s: None)  # depth 3: 2 deep prompts and projections
    with pytest.raises(CheckpointError, match=r"unexpected keys \['compound_prompt_projections.1"
                                              r".weight', 'compound_prompt_projections.1.bias'\]"):
        build("MaPLe", "TRAINER.MAPLE.PROMPT_DEPTH", "2").load_model(model_dir, epoch=5)
    shorter = maple_upstream(lambda s: [s.pop(k) for k in list(s)  # depth 2
                                        if k.endswith("text.1") or "projections.1." in k])
    with pytest.raises(CheckpointError, match=r"missing trainable keys \['compound_prompt_"
                                              r"projections.1.weight', 'compound_prompt_"
                                              r"projections.1.bias'\]"):
        build("MaPLe").load_model(shorter, epoch=5)


def test_unknown_learned_key_is_named(build, maple_upstream):
    extra = {"prompt_learner.meta_net.weight": torch.ones(2)}
    model_dir = maple_upstream(lambda s: s.update(extra))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['meta_net.weight'\]"):
        build("MaPLe").load_model(model_dir, epoch=5)
