"""VPTSupervised without training: trainable-value counts at ViT-B/16 shapes (the VPT paper's
formula), class weights, the head's initialisation and config errors."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.backbones import ARCHS, PromptableViT, build_timm_vit
from dassl_lite.config import (ConfigError, apply_config_extenders, get_cfg_default, merge_from_file,
                               merge_from_list)
from trainers.vpt_supervised import (SupervisedVPT, VPTSupervised, build_learner,
                                     class_weights)

D, L, PATCH, CUB = 768, 12, 16, 200  # ViT-B/16 width, blocks, patch; CUB-200 classes


def cfg_with(*opts):
    cfg = get_cfg_default()
    apply_config_extenders(cfg)
    merge_from_list(cfg, list(opts))
    return cfg


@pytest.fixture(scope="module")
def vit_b16():
    """ViT-B/16 at 224 px on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        return PromptableViT(build_timm_vit(ARCHS["ViT-B/16"], 224), ARCHS["ViT-B/16"])


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


HEAD = D * CUB + CUB  # linear head on the 768-d class token
CASES = {
    "shallow-10": (["MODEL.PROMPT.NUM_TOKENS", "10"], 10 * D + HEAD),
    "shallow-50": (["MODEL.PROMPT.NUM_TOKENS", "50"], 50 * D + HEAD),
    "deep-10": (["MODEL.PROMPT.NUM_TOKENS", "10", "MODEL.PROMPT.DEEP", "True"], 10 * D * L + HEAD),
    "deep-50": (["MODEL.PROMPT.NUM_TOKENS", "50", "MODEL.PROMPT.DEEP", "True"], 50 * D * L + HEAD),
    "deep-10-project-128": (["MODEL.PROMPT.NUM_TOKENS", "10", "MODEL.PROMPT.DEEP", "True",
                             "MODEL.PROMPT.PROJECT", "128"], 10 * 128 * L + (128 * D + D) + HEAD),
    "deep-10-mlp-head": (["MODEL.PROMPT.NUM_TOKENS", "10", "MODEL.PROMPT.DEEP", "True",
                          "MODEL.HEAD.NAME", "mlp"], 10 * D * L + (D * D + D) + 2 * D + HEAD),
    "linear-probe": (["MODEL.TRANSFER_TYPE", "linear"], HEAD),
    # KMnP/vpt's ablations: prompts in 6 of the 12 layers (first or last), one shared set
    "deep-10-first-6": (["MODEL.PROMPT.NUM_TOKENS", "10", "MODEL.PROMPT.DEEP", "True",
                         "MODEL.PROMPT.NUM_DEEP_LAYERS", "6"], 10 * D * 6 + HEAD),
    "deep-10-last-6": (["MODEL.PROMPT.NUM_TOKENS", "10", "MODEL.PROMPT.DEEP", "True",
                        "MODEL.PROMPT.NUM_DEEP_LAYERS", "6", "MODEL.PROMPT.REVERSE_DEEP", "True"],
                       10 * D * 6 + HEAD),
    "deep-10-shared": (["MODEL.PROMPT.NUM_TOKENS", "10", "MODEL.PROMPT.DEEP", "True",
                        "MODEL.PROMPT.DEEP_SHARED", "True"], 10 * D + HEAD),
    # full fine-tuning: ViT-B/16 without its classifier has 85,798,656 values
    "end2end": (["MODEL.TRANSFER_TYPE", "end2end"], 85_798_656 + HEAD),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trainable_values_equal_the_papers_formula(vit_b16, case):
    opts, expected = CASES[case]
    learner = build_learner(cfg_with(*opts), vit_b16.arch, CUB, vit_b16)
    model = SupervisedVPT(vit_b16, learner)
    assert trainable(model) == trainable(learner) == expected
    end2end = case == "end2end"
    assert all(p.requires_grad == end2end for p in model.backbone.parameters())


def test_prompts_start_uniform_within_the_papers_bound(vit_b16):
    torch.manual_seed(0)
    learner = build_learner(cfg_with("MODEL.PROMPT.NUM_TOKENS", "50", "MODEL.PROMPT.DEEP", "True"),
                            vit_b16.arch, CUB)
    bound = math.sqrt(6 / (3 * PATCH * PATCH + D))
    prompts = torch.cat([learner.prompts.ctx.flatten(), learner.prompts.deep.flatten()])
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.99 * bound
    assert abs(prompts.mean().item()) < 0.01 * bound
    assert learner.prompts.deep.shape == (L - 1, 50, D)
    head = learner.head.last_layer
    assert torch.allclose(head.bias, torch.full((CUB,), -math.log(99.0)))
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / CUB), rel=0.05)  # fan-out


def test_class_weights_none_inv_inv_sqrt():
    labels = [0] + [1] * 2 + [2] * 4
    assert class_weights(labels, 3, "none") is None
    inv = torch.tensor([1, 1 / 2, 1 / 4])
    torch.testing.assert_close(class_weights(labels, 3, "inv"), inv / inv.sum() * 3)
    sqrt = torch.tensor([1, 2 ** -0.5, 1 / 2])
    torch.testing.assert_close(class_weights(labels, 3, "inv_sqrt"), sqrt / sqrt.sum() * 3)
    with pytest.raises(ConfigError, match=r"classes \[3\] have none"):
        class_weights(labels, 4, "inv")


def test_weighted_loss_is_the_weighted_mean_of_per_image_losses():
    logits = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 2])
    w = class_weights(labels.tolist(), 3, "inv")
    per_image = F.cross_entropy(logits, labels, reduction="none")
    expected = (w[labels] * per_image).sum() / w[labels].sum()
    torch.testing.assert_close(F.cross_entropy(logits, labels, weight=w), expected)


@pytest.mark.parametrize("opts, message", [
    (["MODEL.PROMPT.LOCATION", "add"], "MODEL.PROMPT.LOCATION must be one of prepend; got 'add'"),
    (["MODEL.PROMPT.INITIATION", "cls-first12"], "MODEL.PROMPT.INITIATION must be one of "
     "random, final-cls, cls-nolastl, cls-nofirstl; got 'cls-first12'"),
    (["MODEL.TRANSFER_TYPE", "full"],
     "MODEL.TRANSFER_TYPE must be one of prompt, linear, end2end; got 'full'"),
    (["MODEL.HEAD.NAME", "conv"], "MODEL.HEAD.NAME must be one of linear, mlp; got 'conv'"),
    (["TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE", "sqrt"],
     "TRAINER.VPTSUPERVISED.CLASS_WEIGHTS_TYPE must be one of none, inv, inv_sqrt; got 'sqrt'"),
    (["MODEL.PROMPT.NUM_TOKENS", "0"], "MODEL.PROMPT.NUM_TOKENS must be >= 1; got 0"),
    (["MODEL.BACKBONE.NAME", ""], "MODEL.BACKBONE.NAME must name a supervised ViT"),
])
def test_config_errors(opts, message):
    cfg = cfg_with("MODEL.BACKBONE.NAME", "ToyViT", *opts)
    with pytest.raises(ConfigError) as info:
        VPTSupervised.check_cfg(None, cfg)
    assert message in str(info.value)


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "configs", "trainers", "VPTSupervised")


@pytest.mark.parametrize("name, tokens, deep, transfer", [
    ("vit_b16_in21k_cub_deep_10", 10, True, "prompt"),
    ("vit_b16_in21k_cub_deep_50", 50, True, "prompt"),
    ("vit_b16_in21k_cub_shallow_10", 10, False, "prompt"),
    ("vit_b16_in21k_cub_shallow_50", 50, False, "prompt"),
    ("vit_b16_in21k_cub_linear", 10, False, "linear"),
    ("toy", 2, True, "prompt"),
    ("toy_supervised", 2, False, "prompt"),
])
def test_shipped_configs_merge_and_pass_the_checks(name, tokens, deep, transfer):
    cfg = cfg_with()
    merge_from_file(cfg, os.path.join(CONFIGS, f"{name}.yaml"))
    VPTSupervised.check_cfg(None, cfg)
    p = cfg.MODEL.PROMPT
    assert (p.NUM_TOKENS, p.DEEP, cfg.MODEL.TRANSFER_TYPE, cfg.MODEL.HEAD.NAME) == (
        tokens, deep, transfer, "linear")
    if name.startswith("vit_b16"):  # KMnP/vpt's CUB recipe
        assert cfg.MODEL.BACKBONE.NAME == "sup_vitb16_imagenet21k" and cfg.INPUT.SIZE == (224, 224)
        assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.WEIGHT_DECAY, cfg.OPTIM.MAX_EPOCH,
                cfg.OPTIM.WARMUP_EPOCH) == ("sgd", 0.1, 0.01, 100, 10)
    else:
        assert cfg.MODEL.BACKBONE.NAME == "ToyViT" and cfg.INPUT.SIZE == (64, 64)
