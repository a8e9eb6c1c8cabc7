"""Configuration errors name what was expected and what was given."""
import pytest

from dassl_lite.clip import CLIP, CLIPConfig
from dassl_lite.config import ConfigError
from trainers.deep_prompts import vit_layers


@pytest.mark.parametrize("name, opts, message", [
    ("MaPLe", ("TRAINER.MAPLE.PROMPT_DEPTH", "5"),
     "TRAINER.MAPLE.PROMPT_DEPTH=5 exceeds the layers of backbone {clip!r} (text encoder 4, "
     "vision encoder 3); use at most 3"),
    ("MaPLe", ("TRAINER.MAPLE.PROMPT_DEPTH", "0"),
     "TRAINER.MAPLE.PROMPT_DEPTH must be >= 1 (1 = shallow MaPLe); got 0"),
    ("MaPLe", ("TRAINER.MAPLE.N_CTX", "0"), "TRAINER.MAPLE.N_CTX must be >= 1; got 0"),
    ("IVLP", ("TRAINER.IVLP.PROMPT_DEPTH_VISION", "4"),
     "TRAINER.IVLP.PROMPT_DEPTH_VISION=4 exceeds the 3 layers of the backbone's vision encoder; "
     "use at most 3"),
    ("IVLP", ("TRAINER.IVLP.PROMPT_DEPTH_TEXT", "5"),
     "TRAINER.IVLP.PROMPT_DEPTH_TEXT=5 exceeds the 4 layers of the backbone's text encoder; "
     "use at most 4"),
    ("IVLP", ("TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "0"),
     "TRAINER.IVLP needs PROMPT_DEPTH_TEXT > 0 or PROMPT_DEPTH_VISION > 0 (both are 0: nothing "
     "to learn; use ZeroshotCLIP)"),
    ("IVLP", ("TRAINER.IVLP.N_CTX_VISION", "0"),
     "TRAINER.IVLP.N_CTX_VISION must be >= 1 when PROMPT_DEPTH_VISION > 0; got 0"),
    ("VPT", ("TRAINER.VPT.PROMPT_DEPTH_VISION", "0"),
     "TRAINER.VPT.PROMPT_DEPTH_VISION must be >= 1; got 0"),
    ("VPTDeep", ("TRAINER.VPTDEEP.HEAD", "mlp"),
     "TRAINER.VPTDEEP.HEAD must be one of clip, linear; got 'mlp'"),
    ("VPTDeep", ("TRAINER.VPTDEEP.DEPTH", "0"),
     "TRAINER.VPTDEEP.DEPTH must be -1 (all layers) or >= 1; got 0"),
    ("VPTDeep", ("TRAINER.VPTDEEP.DEPTH", "7"),
     "TRAINER.VPTDEEP.DEPTH=7 exceeds the 3 layers of the backbone's vision encoder; "
     "use at most 3"),
    ("VPTDeep", ("TRAINER.VPTDEEP.PROJECT", "0"),
     "TRAINER.VPTDEEP.PROJECT must be -1 (no projection) or >= 1; got 0"),
])
def test_bad_config_is_named(build, deep_clip_path, name, opts, message):
    with pytest.raises(ConfigError) as e:
        build(name, *opts)
    assert str(e.value) == message.format(clip=deep_clip_path)


def test_resnet_backbone_is_refused():
    config = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=(1, 1, 1, 1),
                        vision_width=8, vision_patch_size=None, vision_heads=4,
                        context_length=77, vocab_size=1000, transformer_width=16,
                        transformer_heads=1, transformer_layers=1)
    with pytest.raises(ConfigError, match="MaPLe puts prompts into the image encoder and needs "
                                          "a ViT backbone \\(e.g. ViT-B/16\\); 'RN50' has a "
                                          "ResNet image encoder"):
        vit_layers(CLIP(config), "MaPLe", "RN50")
