"""``SlowTinyNet``: TinyNet taking 0.1 s a step, so a test can press Ctrl-C mid-training.

Load after tests/fixtures/tiny_world.py (``--import`` both, in that order)."""
import sys
import time

from dassl_lite.registry import TRAINER_REGISTRY

TinyNet = sys.modules["dassl_lite_user_tiny_world"].TinyNet


@TRAINER_REGISTRY.register()
class SlowTinyNet(TinyNet):
    """TinyNet with a pause after each step (the maths is TinyNet's)."""

    def forward_backward(self, batch):
        out = super().forward_backward(batch)
        time.sleep(0.1)
        return out
