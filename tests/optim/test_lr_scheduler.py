"""build_lr_scheduler: Dassl's lr sequences (hand-computed literals), warmup, resume, errors.

Every sequence lists the lr in force during epoch 0, 1, 2, ...: the lr after construction,
then after each ``scheduler.step()`` (one step per epoch, after the epoch's optimizer steps).
"""
import io

import pytest
import torch
from torch import nn

from dassl_lite.config import get_cfg_default
from dassl_lite.optim import build_lr_scheduler, build_optimizer
from dassl_lite.registry import LR_SCHEDULER_REGISTRY

pytestmark = pytest.mark.filterwarnings("error")  # no torch scheduler warnings either

# Cosine with base lr 0.0035 and T_max 5: c(t) = 0.0035 * (1 + cos(pi * t / 5)) / 2, with
# cos(pi/5) = (1 + sqrt 5) / 4 and cos(2 pi/5) = (sqrt 5 - 1) / 4.
C1 = 0.0031657797401561582  # 0.0035 * (5 + sqrt 5) / 8
C2 = 0.002290779740156158  # 0.0035 * (3 + sqrt 5) / 8
C3 = 0.0012092202598438422  # 0.0035 * (5 - sqrt 5) / 8
C4 = 0.00033422025984384217  # 0.0035 * (3 - sqrt 5) / 8


def optim_cfg(**overrides):
    cfg = get_cfg_default().OPTIM
    cfg.NAME = "sgd"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def build(cfg, n_groups=1):
    params = [nn.Parameter(torch.zeros(1)) for _ in range(n_groups)]
    groups = [{"params": [p], "lr": cfg.LR * 10**-i} for i, p in enumerate(params)]
    optimizer = build_optimizer(None, cfg, param_groups=groups)
    return optimizer, build_lr_scheduler(optimizer, cfg)


def run(optimizer, scheduler, n_steps):
    """lrs (all groups) of the current epoch and the next ``n_steps`` epochs."""
    lrs = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(n_steps):
        optimizer.step()
        scheduler.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
        assert scheduler.get_last_lr() == lrs[-1]
    return lrs


def lr_sequence(n_steps, **overrides):
    cfg = optim_cfg(**overrides)
    return [lrs[0] for lrs in run(*build(cfg), n_steps)]


COSINE = dict(LR=0.0035, LR_SCHEDULER="cosine", MAX_EPOCH=5)
CONSTANT_1 = dict(WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)


def test_cosine_without_warmup():
    assert lr_sequence(5, **COSINE) == pytest.approx([0.0035, C1, C2, C3, C4, 0.0], rel=1e-12)


def test_cosine_constant_warmup_recount():
    # Epoch 0 warms up; the cosine then starts at its own epoch 0, so it never gets below C4.
    got = lr_sequence(5, **COSINE, **CONSTANT_1, WARMUP_RECOUNT=True)
    assert got == pytest.approx([1e-5, 0.0035, C1, C2, C3, C4], rel=1e-12)


def test_cosine_constant_warmup_no_recount():
    # The cosine is set to epoch 1 but its lr is still 0.0035; torch's recursive cosine then
    # scales from there: lr(e) = 0.0035 * (1 + cos(pi e / 5)) / (1 + cos(pi / 5)).
    got = lr_sequence(5, **COSINE, **CONSTANT_1, WARMUP_RECOUNT=False)
    expected = [
        1e-5,
        0.0035,
        0.0025326237921249263,  # 0.0035 * (5 + sqrt 5) / 10
        0.0013368810393753683,  # 0.0035 * (3 - sqrt 5) / 2
        0.0003695048315002946,  # 0.0035 * (1 - 2 sqrt 5 / 5)
        0.0,
    ]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_cosine_linear_warmup_two_epochs():
    got = lr_sequence(6, **COSINE, WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5)
    # min_lr at epoch 0, lr * 1/2 at epoch 1, then the (recounted) cosine
    assert got == pytest.approx([1e-5, 0.00175, 0.0035, C1, C2, C3, C4], rel=1e-12)


def test_linear_warmup_scales_each_group_from_its_own_lr():
    cfg = optim_cfg(LR=0.01, LR_SCHEDULER="cosine", MAX_EPOCH=4, WARMUP_EPOCH=2,
                    WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5)
    lrs = run(*build(cfg, n_groups=2), 3)
    c1 = 0.8535533905932737  # (1 + cos(pi / 4)) / 2
    expected = [[1e-5, 1e-5], [0.005, 0.0005], [0.01, 0.001], [0.01 * c1, 0.001 * c1]]
    for got, want in zip(lrs, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("stepsize", [2, (2,), [9, 2]])
def test_single_step_takes_an_int_or_the_last_list_entry(stepsize):
    got = lr_sequence(6, LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=stepsize, GAMMA=0.1)
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001], rel=1e-12)


@pytest.mark.parametrize("stepsize", [-1, 0, (-1,)])
def test_single_step_nonpositive_means_max_epoch(stepsize):
    got = lr_sequence(4, LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=stepsize, MAX_EPOCH=3)
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


def test_multi_step():
    got = lr_sequence(5, LR=0.08, LR_SCHEDULER="multi_step", STEPSIZE=(2, 3), GAMMA=0.5)
    assert got == [0.08, 0.08, 0.04, 0.02, 0.02, 0.02]


@pytest.mark.parametrize(
    "recount, expected",
    [
        # recount: the step schedule restarts after the 2 warmup epochs -> decays at epoch 2 + 3
        (True, [1e-5, 1e-5, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001]),
        # no recount: it keeps counting from epoch 2 -> decays at epochs 3 and 6
        (False, [1e-5, 1e-5, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]),
    ],
)
def test_single_step_warmup_recount(recount, expected):
    got = lr_sequence(8, LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=3, GAMMA=0.1,
                      WARMUP_EPOCH=2, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5,
                      WARMUP_RECOUNT=recount)
    assert got == pytest.approx(expected, rel=1e-12)


def test_multi_step_linear_warmup_no_recount_uses_absolute_epochs():
    got = lr_sequence(6, LR=0.1, LR_SCHEDULER="multi_step", STEPSIZE=(3, 5), GAMMA=0.1,
                      WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5,
                      WARMUP_RECOUNT=False)
    assert got == pytest.approx([1e-5, 0.05, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


RESUME_CASES = {
    "cosine": dict(**COSINE),
    "cosine_warmup_recount": dict(**COSINE, **CONSTANT_1, WARMUP_RECOUNT=True),
    "cosine_warmup_no_recount": dict(**COSINE, **CONSTANT_1, WARMUP_RECOUNT=False),
    "cosine_linear3": dict(**COSINE, WARMUP_EPOCH=3, WARMUP_TYPE="linear"),
    "single_step_warmup": dict(LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=2, **CONSTANT_1),
    "multi_step_warmup": dict(LR=0.1, LR_SCHEDULER="multi_step", STEPSIZE=(2, 4),
                              WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_RECOUNT=False),
}


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # plain data only: no scheduler objects


@pytest.mark.parametrize("with_optimizer_state", [True, False])
@pytest.mark.parametrize("stop", [1, 3, 5])
@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_state_dict_round_trip_continues_identically(case, stop, with_optimizer_state):
    cfg = optim_cfg(**RESUME_CASES[case])
    reference = run(*build(cfg, n_groups=2), 8)
    optimizer, scheduler = build(cfg, n_groups=2)
    run(optimizer, scheduler, stop)
    state = roundtrip({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})

    optimizer, scheduler = build(cfg, n_groups=2)  # fresh, as a resumed run builds them
    if with_optimizer_state:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert scheduler.last_epoch == stop
    assert run(optimizer, scheduler, 8 - stop) == reference[stop:]


def test_warmup_state_dict_nests_the_successor_state():
    optimizer, scheduler = build(optim_cfg(**COSINE, **CONSTANT_1))
    state = scheduler.state_dict()
    assert state["successor"] == scheduler.successor.state_dict()
    assert "optimizer" not in state and "optimizer" not in state["successor"]


def test_unknown_scheduler_and_bad_settings_are_clear_errors():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(KeyError) as err:
        build_lr_scheduler(optimizer, optim_cfg(LR_SCHEDULER="cosin"))
    registered = ", ".join(LR_SCHEDULER_REGISTRY.names())
    assert err.value.args[0] == (
        f"No lr_scheduler 'cosin' in LR_SCHEDULER registry. Did you mean 'cosine'? "
        f"Registered: {registered}"
    )
    with pytest.raises(ValueError) as err:
        build_lr_scheduler(optimizer, optim_cfg(WARMUP_EPOCH=1, WARMUP_TYPE="cosine"))
    assert str(err.value) == "OPTIM.WARMUP_TYPE must be one of constant, linear; got 'cosine'"
    with pytest.raises(ValueError) as err:
        build_lr_scheduler(optimizer, optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=(-1,)))
    assert str(err.value) == (
        "OPTIM.STEPSIZE for multi_step must be positive epoch numbers; got (-1,)"
    )
    with pytest.raises(TypeError) as err:
        build_lr_scheduler(optimizer, optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=2.5))
    assert str(err.value) == (
        "OPTIM.STEPSIZE for single_step must be an int or a non-empty list of ints; got 2.5"
    )
