"""MODEL.COMPILE: compiled vs eager outputs and gradients for a text-prompt trainer (CoOp) and a
deep-prompt trainer (MaPLe) on the tiny random CLIP (fp32, the smallest shapes, so compiling
stays short), and no recompilation for a second batch of the same shape. Skipped, with the
reason, where torch.compile cannot run here."""
import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip.compile import compiler_unavailable
from dassl_lite.config import ConfigError

REASON = compiler_unavailable()
OPTS = {"CoOp": ["TRAINER.COOP.N_CTX", "4"], "MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH", "3"]}


def _outputs(trainer, images, labels):
    """Training logits, the loss gradients of the trainable parameters, and eval logits."""
    trainer.set_model_mode("train")
    logits = trainer.model(images)
    params = [p for p in trainer.trainable_module().parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), params)
    trainer.set_model_mode("eval")
    trainer.before_test()
    with torch.no_grad():
        evaluated = trainer.model_inference(images)
    trainer.after_test()
    return [logits.detach(), *grads, evaluated]


@pytest.mark.skipif(bool(REASON), reason=f"torch.compile unavailable here: {REASON}")
@pytest.mark.parametrize("name", ["CoOp", "MaPLe"])
def test_compiled_equals_eager_without_recompiling(name, clip_cfg, deep_clip_path, build_seeded):
    from torch._dynamo.utils import counters

    eager = build_seeded(clip_cfg(name, deep_clip_path, *OPTS[name]))
    compiled = build_seeded(clip_cfg(name, deep_clip_path, *OPTS[name], "MODEL.COMPILE", "True"))
    assert compiled.model.clip._compiled and not getattr(eager.model.clip, "_compiled", False)
    torch.manual_seed(0)
    images, labels = torch.randn(2, 8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    for i, batch in enumerate(images):
        before = counters["stats"]["unique_graphs"]
        want, got = _outputs(eager, batch, labels), _outputs(compiled, batch, labels)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        if i == 0:
            assert counters["stats"]["unique_graphs"] > before, "nothing was compiled"
        else:  # a second batch of the same shape reuses the graphs
            assert counters["stats"]["unique_graphs"] == before, "recompiled for a same-shape batch"
    # checkpoints keep their names: the compiled learner's state dict equals the eager one's keys
    assert list(compiled.trainable_module().state_dict()) == list(eager.trainable_module().state_dict())


def test_compile_refused_by_trainers_without_it(clip_cfg, deep_clip_path, build_seeded):
    """A trainer outside the CLIP prompt family names the key instead of ignoring it."""
    import trainers  # noqa: F401
    from dassl_lite.registry import TRAINER_REGISTRY

    name = next(n for n in TRAINER_REGISTRY.names()
                if not getattr(TRAINER_REGISTRY.get(n), "supports_compile", False)
                and getattr(TRAINER_REGISTRY.get(n), "task", "") == "classification")
    with pytest.raises(ConfigError, match="MODEL.COMPILE True is not supported by"):
        build_seeded(clip_cfg(name, deep_clip_path, "MODEL.COMPILE", "True"))
