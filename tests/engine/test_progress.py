"""Progress lines and TensorBoard: the ETA follows the recent batch rate (a slow first batch does
not inflate it for the rest of the run), and test metrics share training's step axis (the
global iteration)."""
import logging
import re

import pytest

from dassl_lite.engine import build_trainer
from dassl_lite.utils import set_random_seed
from dassl_lite.utils.meters import RecentRate


def test_recent_rate_leaves_out_the_first_step_and_follows_the_last_window():
    rate = RecentRate(window=3)
    assert rate.eta(10) == 0.0
    rate.update(10.0)
    assert rate.seconds_per_step() == 10.0  # nothing else measured yet
    for seconds in (1.0, 1.0):
        rate.update(seconds)
    assert rate.seconds_per_step() == 1.0 and rate.eta(10) == 10.0
    for seconds in (2.0, 2.0, 2.0):  # the window keeps the last 3
        rate.update(seconds)
    assert rate.seconds_per_step() == 2.0


class FakeClock:
    """Advanced by the fake training step: 30 s for the first batch, 1 s for each later one."""

    def __init__(self):
        self.now, self.steps = 0.0, 0

    def __call__(self):
        return self.now

    def step(self):
        self.now += 30.0 if self.steps == 0 else 1.0
        self.steps += 1


def etas(caplog):
    found = []
    for r in caplog.records:
        m = re.search(r"batch \[(\d+)/6\] .* eta (\d+):(\d\d):(\d\d)$", r.getMessage())
        if m:
            found.append((int(m.group(1)), int(m.group(2)) * 3600 + int(m.group(3)) * 60
                          + int(m.group(4))))
    return found


def test_eta_after_the_first_batches_uses_the_recent_rate(make_cfg, tmp_path, caplog):
    set_random_seed(1)
    trainer = build_trainer(make_cfg("OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True",
                                     output_dir=tmp_path / "run"))
    clock = FakeClock()
    trainer.clock = clock
    train_step = trainer.forward_backward

    def timed_step(batch):
        clock.step()
        return train_step(batch)

    trainer.forward_backward = timed_step
    caplog.set_level(logging.INFO)
    trainer.train()
    # 6 batches an epoch, logged every 2nd; 1 s a batch after the first (30 s) one.
    # A run-long average would say 31 * 10 / 2 = 155 s at batch 2 (the run takes 41 s in all).
    assert etas(caplog) == [(2, 10), (4, 8), (6, 6), (2, 4), (4, 2), (6, 0)]


def test_test_metrics_use_the_training_step_axis(make_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    set_random_seed(1)
    trainer = build_trainer(make_cfg("OPTIM.MAX_EPOCH", "2", output_dir=tmp_path / "run"))
    trainer.train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    train_steps = [e.step for e in events.Scalars("train/loss")]
    assert train_steps == list(range(12))  # 2 epochs x 6 batches, one point per iteration
    assert [e.step for e in events.Scalars("test/accuracy")] == [12]  # after the 12th
