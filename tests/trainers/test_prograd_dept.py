"""ProGrad (gradient projection through the template's per-loss backward hook) and DePT (the CAT
head over CoOp or MaPLe): the maths on hand-sized cases, the step against an independent
computation, configs (upstream YAMLs, booleans, bad values) and checkpoints."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dassl_lite.config import ConfigError, apply_config_extenders, get_cfg_default, merge_from_file
from dassl_lite.config import merge_from_list
from dassl_lite.engine.base import TrainerBase
from trainers.dept import dept_losses
from trainers.prograd import DATASET_TEMPLATE, project_conflict, prograd_losses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "trainers")
BASE = ["DATASET.SUBSAMPLE_CLASSES", "base"]


# ------------------------------------------------------------------ ProGrad maths
def test_projection_by_hand():
    g, ref = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    projected = project_conflict(g, ref, 1.0)  # cos < 0: the component along ref is removed
    assert torch.allclose(projected, torch.tensor([0.5, 0.5]))
    assert torch.dot(projected, ref).item() == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(project_conflict(g, ref, 0.5), torch.tensor([0.75, 0.25]))
    same_side = torch.tensor([1.0, 1.0])
    assert torch.equal(project_conflict(g, same_side, 1.0), g)  # no conflict: unchanged
    assert torch.equal(project_conflict(g, torch.zeros(2), 1.0), g)  # zero reference: unchanged


def test_prograd_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    zs = torch.tensor([[0.0, 1.0, 0.0]])
    labels = torch.tensor([0])
    for t in (1.0, 2.0):
        p = F.softmax(zs / t, dim=1)
        q = F.log_softmax(logits / t, dim=1)
        terms = prograd_losses(logits, zs, labels, t)
        assert terms["kl_loss"].item() == pytest.approx(-(p * q).sum().item() * t * t, rel=1e-6)
        assert terms["xe_loss"].item() == pytest.approx(F.cross_entropy(logits, labels).item())


class _Two(TrainerBase):
    """One linear model and the template's per-loss backward, with ProGrad's rule or the sum."""

    def __init__(self, project):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 2)
        self.register_model("net", self.net, torch.optim.SGD(self.net.parameters(), lr=0.0))
        self.project = project

    def combine_gradients(self, grads, params):
        if not self.project:
            return super().combine_gradients(grads, params)
        return [project_conflict(g, r, 1.0) for g, r in zip(grads["b"], grads["a"])]


@pytest.mark.parametrize("project", [False, True])
def test_backward_each_hands_every_loss_gradient_to_the_rule(project):
    trainer = _Two(project)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    loss_a = lambda: trainer.net(x)[0, 0]  # noqa: E731
    loss_b = lambda: -3.0 * trainer.net(x)[0, 0] + trainer.net(x)[0, 1]  # noqa: E731
    params = list(trainer.net.parameters())
    g_a = torch.autograd.grad(loss_a(), params)
    g_b = torch.autograd.grad(loss_b(), params)
    out = trainer.net(x)
    trainer.model_backward_each_and_update({"a": out[0, 0], "b": -3.0 * out[0, 0] + out[0, 1]})
    for p, a, b in zip(params, g_a, g_b):
        expected = project_conflict(b, a, 1.0) if project else a + b
        assert torch.allclose(p.grad, expected, atol=1e-6)
    if project:  # the weight's two gradients conflict: what is left is orthogonal to g_a
        assert torch.dot(params[0].grad.flatten(), g_a[0].flatten()).abs() < 1e-5


# ------------------------------------------------------------------ ProGrad trainer
def test_prograd_step_against_an_independent_computation(build):
    trainer = build("ProGrad", "LOSS.NAME", "prograd", "LOSS.T", "2.0",
                    "DATALOADER.FEATURE_CACHE.ENABLED", "False")
    batch = next(iter(trainer.train_loader_x))
    model, ctx = trainer.model, trainer.model.prompt_learner.ctx
    images, labels = batch["img"], batch["label"]
    image = model.image_features(images)
    logits = model.logits(image, model.text_features())
    zs = model.logits(image, model.zs_text_features)
    p = F.softmax(zs / 2.0, dim=1)
    kl = -(p * F.log_softmax(logits / 2.0, dim=1)).sum(1).mean() * 4.0
    xe = F.cross_entropy(logits, labels)
    g_kl = torch.autograd.grad(kl, ctx, retain_graph=True)[0]
    g_xe = torch.autograd.grad(xe, ctx)[0]
    out = trainer.forward_backward(batch)
    assert out["xe_loss"] == pytest.approx(xe.item(), rel=1e-5)
    assert out["kl_loss"] == pytest.approx(kl.item(), rel=1e-5)
    assert out["loss"] == out["xe_loss"]
    assert torch.allclose(ctx.grad, project_conflict(g_xe, g_kl, 1.0), atol=1e-6)


def test_prograd_ctx_init_true_is_the_dataset_prompt_after_zeros(build):
    trainer = build("ProGrad", "LOSS.NAME", "prograd", "TRAINER.COOP.N_CTX", "6",
                    "TRAINER.COOP.CTX_INIT", "True")
    learner = trainer.model.prompt_learner
    assert trainer.cfg.TRAINER.COOP.CTX_INIT == DATASET_TEMPLATE
    assert learner.ctx.shape[0] == 6
    assert torch.equal(learner.ctx[:2], torch.zeros_like(learner.ctx[:2]))  # 6 - 4 words
    clip = trainer.model.clip
    from dassl_lite.clip import tokenize
    words = clip.token_embedding(tokenize("a photo of a"))[0, 1:5]
    assert torch.allclose(learner.ctx[2:], words.float())


def test_prograd_upstream_yamls_merge_and_bad_values_are_named(build):
    for name in ("rn50.yaml", "rn50_ep50.yaml", "rn50_ep100.yaml", "toy.yaml"):
        cfg = apply_config_extenders(get_cfg_default())
        merge_from_file(cfg, os.path.join(CONFIGS, "ProGrad", name))
        assert cfg.LOSS.NAME == "prograd" and cfg.TRAINER.COOP.CTX_INIT == DATASET_TEMPLATE
    cfg = apply_config_extenders(get_cfg_default())
    merge_from_list(cfg, ["TRAINER.COOP.CTX_INIT", "False"])
    assert cfg.TRAINER.COOP.CTX_INIT == ""
    with pytest.raises(ConfigError, match="LOSS.NAME 'prograd'.*got ''"):
        build("ProGrad")
    with pytest.raises(ConfigError, match="LOSS.T must be > 0; got 0.0"):
        build("ProGrad", "LOSS.NAME", "prograd", "LOSS.T", "0.0")
    with pytest.raises(ConfigError, match=r"N_CTX \(2\) must be >= the 4 words"):
        build("ProGrad", "LOSS.NAME", "prograd", "TRAINER.COOP.N_CTX", "2",
              "TRAINER.COOP.CTX_INIT", "a photo of a")


# ------------------------------------------------------------------ DePT
def test_dept_losses_by_hand():
    out = {"logits": torch.tensor([[1.0, 0.0]]), "logits_lp": torch.tensor([[0.0, 2.0], [1.0, 1.0]]),
           "labels_lp": torch.tensor([1, 1])}
    terms = dept_losses(out, torch.tensor([0]), 0.7)
    ce = F.cross_entropy(out["logits"], torch.tensor([0]))
    ce_lp = F.cross_entropy(out["logits_lp"], torch.tensor([1, 1]))
    assert terms["loss"].item() == pytest.approx((0.3 * ce + 0.7 * ce_lp).item(), rel=1e-6)


@pytest.mark.parametrize("base", ["CoOp", "MaPLe"])
def test_dept_head_training_fusion_and_groups(build, base):
    opts = ["TRAINER.DEPT.BASE", base, *BASE, "OPTIM.LR", "0.01"]
    if base == "MaPLe":
        opts += ["TRAINER.MAPLE.PREC", "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "2"]
    trainer = build("DePT", *opts)
    assert type(trainer).__name__ == f"DePT{base}" and trainer.model_name == "PromptLearner"
    model, learner = trainer.model, trainer.model.learner
    # prompts at OPTIM.LR, the head at OPTIM.LR * OPTIM.LR_EXP (upstream's staged lr)
    assert [g["lr"] for g in trainer.optim.param_groups] == pytest.approx([0.01, 0.065])
    batch = next(iter(trainer.train_loader_x))
    images, labels = batch["img"], batch["label"]
    if base == "CoOp":  # frozen unprompted image encoder: trains on cached unnormalised features
        assert trainer.cached_features == "unnormalised" and images.dim() == 2
        uncached = build("DePT", *opts, "DATALOADER.FEATURE_CACHE.ENABLED", "False")
        batch_img = next(iter(uncached.train_loader_x))
        assert torch.equal(batch_img["label"], labels)
        with torch.no_grad():
            raw = model.base.clip.visual(batch_img["img"])
            assert torch.allclose(images, raw, atol=1e-5)  # not normalised (norms are not 1)
            assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(raw)), atol=1e-2)
            for key, value in model(images, labels).items():
                assert torch.allclose(value.float(), uncached.model(batch_img["img"], labels)[key]
                                      .float(), atol=1e-5), key
        images = batch_img["img"]
    else:
        assert images.dim() == 4  # MaPLe prompts the image encoder: no cache
    with torch.no_grad():
        raw_text = model.raw_text_features()
        image = model.base.clip.visual(images, **(model.base.prompt_learner.vision_inputs(
            len(images)) if base == "MaPLe" else {}))
        sim = model.base.logits(F.normalize(image, dim=-1), F.normalize(raw_text, dim=-1))
        film_i = learner.film_lp_img.scale * image + learner.film_lp_img.bias
        film_t = learner.film_lp_text.scale * raw_text + learner.film_lp_text.bias
        head = learner.linear_probe_proj(torch.cat([film_t[labels], film_i]))
        out = model(images, labels)
        assert torch.allclose(out["logits"], sim, atol=1e-4)
        assert torch.allclose(out["logits_lp"], head, atol=1e-5)
        assert torch.equal(out["labels_lp"], torch.cat([labels, labels]))
        trainer.set_model_mode("eval")
        fused = 0.3 * sim + 0.7 * learner.linear_probe_proj(film_i)
        assert torch.allclose(model(images), fused, atol=1e-4)
    trainer.set_model_mode("train")
    step = trainer.forward_backward(batch)
    assert set(step) == {"ce", "ce_lp", "loss", "acc"}
    assert step["loss"] == pytest.approx(0.3 * step["ce"] + 0.7 * step["ce_lp"], rel=1e-5)


def test_dept_checkpoint_new_classes_ignore_the_head_and_upstream_files_load(build, tmp_path):
    trainer = build("DePT", *BASE, output_dir=tmp_path / "base")
    trainer.save_model(0, str(tmp_path / "base"))
    saved = trainer.model_state_dict("PromptLearner")
    assert "linear_probe_proj.weight" in saved and "prompt_learner.ctx" in saved
    new = build("DePT", "DATASET.SUBSAMPLE_CLASSES", "new", output_dir=tmp_path / "new")
    assert isinstance(new.model.learner.linear_probe_proj, nn.Identity)
    new.load_model(str(tmp_path / "base"), epoch=1)
    assert torch.equal(new.model.learner.film_lp_img.scale, saved["film_lp_img.scale"])
    # upstream writes the whole model (frozen CLIP keys included) into PromptLearner/
    upstream = {**{k: v + 1 for k, v in saved.items()}, "logit_scale": torch.tensor(4.6),
                "image_encoder.conv1.weight": torch.zeros(1),
                "prompt_learner.token_prefix": torch.zeros(1)}
    folder = tmp_path / "up" / "PromptLearner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": upstream, "epoch": 10, "optimizer": None, "scheduler": None},
               folder / "model.pth.tar-10")
    trainer.load_model(str(tmp_path / "up"), epoch=10)
    assert torch.equal(trainer.model.learner.linear_probe_proj.weight,
                       upstream["linear_probe_proj.weight"])


def test_dept_bad_configs_are_named(build):
    with pytest.raises(ConfigError, match="TRAINER.DEPT.BASE must be one of CoOp, MaPLe; got 'VPT'"):
        build("DePT", "TRAINER.DEPT.BASE", "VPT")
    with pytest.raises(ConfigError, match="LINEAR_PROBE.TYPE must be one of linear, similarity"):
        build("DePT", "TRAINER.LINEAR_PROBE.TYPE", "mlp")
    with pytest.raises(ConfigError, match="OPTIM.STAGED_LR True: DePT builds its own"):
        build("DePT", "OPTIM.STAGED_LR", "True")
    trainer = build("DePT")  # SUBSAMPLE_CLASSES all on a non-ImageNet dataset: no head to train
    with pytest.raises(ConfigError, match="train with DATASET.SUBSAMPLE_CLASSES base"):
        trainer.forward_backward(next(iter(trainer.train_loader_x)))


def test_dept_upstream_yamls_merge():
    for name, base in (("vit_b16_ep10_bs4_lr35.yaml", "CoOp"),
                       ("vit_b16_c2_ep10_batch4_2ctx.yaml", "MaPLe"), ("toy.yaml", "CoOp"),
                       ("toy_maple.yaml", "MaPLe")):
        cfg = apply_config_extenders(get_cfg_default())
        merge_from_file(cfg, os.path.join(CONFIGS, "DePT", name))
        assert cfg.TRAINER.DEPT.BASE == base and cfg.OPTIM.LR_EXP == 6.5
        assert cfg.TRAINER.LINEAR_PROBE.WEIGHT == 0.7 and cfg.TRAINER.LINEAR_PROBE.TYPE == "linear"
