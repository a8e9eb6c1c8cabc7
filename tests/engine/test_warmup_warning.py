"""A run whose every epoch is warm-up (``OPTIM.MAX_EPOCH`` <= ``OPTIM.WARMUP_EPOCH``) trains only
at the warm-up learning rate: one warning at the start names both keys and their values."""
import logging

import pytest

from dassl_lite.engine import build_trainer
from dassl_lite.optim import warmup_only_warning
from dassl_lite.utils import set_random_seed

WARNING_1_1 = ("OPTIM.MAX_EPOCH 1 with OPTIM.WARMUP_EPOCH 1: every epoch of this run is warm-up, "
               "so it trains only at the warm-up learning rate (OPTIM.WARMUP_CONS_LR 0.001), never "
               "at OPTIM.LR 0.05; set OPTIM.MAX_EPOCH above 1 or OPTIM.WARMUP_EPOCH below 1")


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "warm-up" in r.getMessage()]


def test_a_warmup_only_run_warns_once_at_the_start(make_cfg, tmp_path, caplog):
    set_random_seed(1)
    trainer = build_trainer(make_cfg("OPTIM.MAX_EPOCH", "1", output_dir=tmp_path / "run"))
    caplog.set_level(logging.INFO)
    trainer.train()
    assert warnings_of(caplog) == [WARNING_1_1]
    first_epoch_line = next(i for i, r in enumerate(caplog.records) if "epoch [1/1]" in
                            r.getMessage())
    assert caplog.records.index(next(r for r in caplog.records
                                     if r.getMessage() == WARNING_1_1)) < first_epoch_line
    batch_lines = [r.getMessage() for r in caplog.records if "epoch [1/1] batch" in r.getMessage()]
    assert len(batch_lines) == 3 and all(" lr 1.0000e-03 " in ln for ln in batch_lines)


def test_runs_that_leave_warmup_do_not_warn(make_cfg, tmp_path, caplog):
    set_random_seed(1)
    trainer = build_trainer(make_cfg("OPTIM.MAX_EPOCH", "2", output_dir=tmp_path / "run"))
    caplog.set_level(logging.INFO)
    trainer.train()
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("opts, expected", [
    ({"MAX_EPOCH": 2, "WARMUP_EPOCH": 1}, None),
    ({"MAX_EPOCH": 5, "WARMUP_EPOCH": 0}, None),
    ({"MAX_EPOCH": 2, "WARMUP_EPOCH": 3, "WARMUP_TYPE": "linear"},
     "OPTIM.MAX_EPOCH 2 with OPTIM.WARMUP_EPOCH 3: every epoch of this run is warm-up, so it "
     "trains only at the warm-up learning rate (rising linearly from OPTIM.WARMUP_MIN_LR 1e-05), "
     "never at OPTIM.LR 0.002; set OPTIM.MAX_EPOCH above 3 or OPTIM.WARMUP_EPOCH below 2"),
])
def test_warning_text(opts, expected):
    from dassl_lite.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.OPTIM.LR, cfg.OPTIM.WARMUP_MIN_LR = 0.002, 1e-5
    for k, v in opts.items():
        cfg.OPTIM[k] = v
    assert warmup_only_warning(cfg.OPTIM) == expected
