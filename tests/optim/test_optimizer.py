"""build_optimizer: Dassl names and hyper-parameters, trainable-only, staged lr, errors."""
import logging

import pytest
import torch
from torch import nn

from dassl_lite.config import get_cfg_default
from dassl_lite.optim import build_optimizer
from dassl_lite.registry import OPTIMIZER_REGISTRY


def optim_cfg(**overrides):
    cfg = get_cfg_default().OPTIM
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


class Net(nn.Module):
    """backbone (frozen first layer), head, and a parameter owned by the root."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4))
        self.head = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(()))
        for p in self.backbone[0].parameters():
            p.requires_grad_(False)


def ids(params):
    return {id(p) for p in params}


HYPER = dict(LR=0.02, WEIGHT_DECAY=1e-3, MOMENTUM=0.8, SGD_DAMPNING=0.1, RMSPROP_ALPHA=0.95,
             ADAM_BETA1=0.85, ADAM_BETA2=0.99)


@pytest.mark.parametrize(
    "name, cls, expected",
    [
        ("sgd", torch.optim.SGD, dict(momentum=0.8, dampening=0.1, nesterov=False)),
        ("adam", torch.optim.Adam, dict(betas=(0.85, 0.99), amsgrad=False)),
        ("amsgrad", torch.optim.Adam, dict(betas=(0.85, 0.99), amsgrad=True)),
        ("adamw", torch.optim.AdamW, dict(betas=(0.85, 0.99))),
        ("rmsprop", torch.optim.RMSprop, dict(momentum=0.8, alpha=0.95)),
        ("radam", torch.optim.RAdam, dict(betas=(0.85, 0.99), decoupled_weight_decay=True)),
    ],
)
def test_each_dassl_name_builds_its_optimizer_with_config_values(name, cls, expected):
    opt = build_optimizer(nn.Linear(2, 2), optim_cfg(NAME=name, **HYPER))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 1e-3
    assert {k: group[k] for k in expected} == expected


def test_registry_holds_exactly_dassls_names():
    assert {"sgd", "adam", "amsgrad", "adamw", "rmsprop", "radam"} <= set(OPTIMIZER_REGISTRY)


def test_only_trainable_parameters_are_optimized():
    net = Net()
    opt = build_optimizer(net, optim_cfg(NAME="sgd"))
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(opt.param_groups) == 1
    assert ids(opt.param_groups[0]["params"]) == ids(trainable)
    assert len(trainable) == 5  # backbone[1] w+b, head w+b, scale


def test_iterables_and_param_groups_are_filtered_too():
    net = Net()
    opt = build_optimizer(net.backbone.parameters(), optim_cfg(NAME="adam"))
    assert ids(opt.param_groups[0]["params"]) == ids(net.backbone[1].parameters())
    groups = [{"params": net.backbone.parameters(), "lr": 0.5}, {"params": net.head.weight}]
    opt = build_optimizer(None, optim_cfg(NAME="sgd", LR=0.1), param_groups=groups)
    assert ids(opt.param_groups[0]["params"]) == ids(net.backbone[1].parameters())
    assert ids(opt.param_groups[1]["params"]) == {id(net.head.weight)}
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]


def test_nothing_trainable_is_a_clear_error():
    net = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError) as err:
        build_optimizer(net, optim_cfg(NAME="sgd"))
    assert str(err.value) == (
        "build_optimizer: expected at least one parameter with requires_grad=True; "
        "got 2 parameter(s), none trainable (check what the trainer froze)"
    )


def test_unknown_optimizer_names_the_closest():
    with pytest.raises(KeyError) as err:
        build_optimizer(nn.Linear(2, 2), optim_cfg(NAME="sgdd"))
    registered = ", ".join(OPTIMIZER_REGISTRY.names())
    assert err.value.args[0] == (
        f"No optimizer 'sgdd' in OPTIMIZER registry. Did you mean 'sgd'? Registered: {registered}"
    )
    assert registered.startswith("adam, adamw, amsgrad, radam, rmsprop, sgd")


@pytest.mark.parametrize("new_layers", [("head",), "head"])
def test_staged_lr_splits_base_and_new_layers(new_layers):
    net = Net()
    cfg = optim_cfg(NAME="sgd", LR=0.01, STAGED_LR=True, BASE_LR_MULT=0.1)
    cfg.NEW_LAYERS = new_layers
    opt = build_optimizer(nn.DataParallel(net), cfg)
    base, new = opt.param_groups
    assert base["lr"] == pytest.approx(0.001, rel=1e-15) and new["lr"] == 0.01
    # the root's own parameter goes with the base layers (Dassl would drop it); frozen ones nowhere
    assert ids(base["params"]) == ids([*net.backbone[1].parameters(), net.scale])
    assert ids(new["params"]) == ids(net.head.parameters())


def test_staged_lr_errors_and_warnings(caplog):
    cfg = optim_cfg(NAME="sgd", STAGED_LR=True, NEW_LAYERS=("haed",))
    with pytest.raises(ValueError) as err:
        build_optimizer(Net(), cfg)
    assert str(err.value) == (
        "OPTIM.NEW_LAYERS must name direct children of Net (backbone, head); got ['haed']"
    )
    with pytest.raises(TypeError) as err:
        build_optimizer(list(Net().parameters()), cfg)
    assert str(err.value) == (
        "OPTIM.STAGED_LR needs an nn.Module to split into base and new layers; got list"
    )
    caplog.set_level(logging.WARNING, logger="dassl_lite.optim.optimizer")
    groups = [{"params": Net().head.parameters()}]
    opt = build_optimizer(Net(), cfg, param_groups=groups)
    assert len(opt.param_groups) == 1
    assert caplog.messages == [
        "OPTIM.STAGED_LR is ignored because param_groups were given; "
        "set the per-group lr in param_groups yourself"
    ]
