"""Checkpoints: only learned tensors are saved; upstream CoOp/CoCoOp checkpoints load."""
import os
import pytest
import torch

from dassl_lite.engine import CheckpointError, load_checkpoint

@pytest.mark.parametrize("name, keys", [
    ("CoOp", ["ctx"]),
    ("CoCoOp", ["ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                "meta_net.linear2.weight", "meta_net.linear2.bias"]),
])
def test_checkpoint_holds_only_learned_tensors(build, name, keys):
    trainer = build(name)
    trainer.train()
    ckpt = load_checkpoint(os.path.join(trainer.output_dir, "prompt_learner", "model.pth.tar-1"))
    assert list(ckpt["state_dict"]) == keys
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())


def test_upstream_coop_checkpoint_loads_and_evaluates(build, tmp_path, upstream):
    state = upstream.coop_state()
    model_dir = upstream.write(tmp_path / "upstream", state)
    trainer = build("CoOp", output_dir=tmp_path / "eval")
    trainer.load_model(model_dir, epoch=50)
    ctx = trainer.model.prompt_learner.ctx
    assert ctx.dtype == torch.float32 and torch.equal(ctx.data, state["ctx"].float())
    assert trainer.model_epoch == 50
    # token_prefix/suffix of the file are ignored: the fixed parts come from these class names
    assert not torch.equal(trainer.model.prompt_learner.token_prefix, state["token_prefix"].float())
    assert 0 <= trainer.test() <= 100


def test_upstream_coop_csc_checkpoint_loads(build, tmp_path, upstream):
    state = upstream.coop_state(csc=True)
    trainer = build("CoOp", "TRAINER.COOP.CSC", "True")
    trainer.load_model(upstream.write(tmp_path / "up", state), epoch=50)
    assert torch.equal(trainer.model.prompt_learner.ctx.data, state["ctx"].float())


def test_upstream_cocoop_checkpoint_loads(build, tmp_path, upstream):
    state = upstream.cocoop_state()
    trainer = build("CoCoOp")
    trainer.load_model(upstream.write(tmp_path / "up", state, epoch=10), epoch=10)
    learned = trainer.model.prompt_learner.state_dict()
    assert list(learned) == ["ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                             "meta_net.linear2.weight", "meta_net.linear2.bias"]
    for k, v in learned.items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float()), k
    assert 0 <= trainer.test() <= 100


@pytest.mark.parametrize("opts, kwargs, got, expected", [
    ((), dict(n_ctx=8), (8, 32), (4, 32)),  # context length
    (("TRAINER.COOP.CSC", "True"), dict(n_cls=10, csc=True), (10, 4, 32), (4, 4, 32)),
    ((), dict(width=512), (4, 512), (4, 32)),  # another backbone's width
])
def test_mismatched_checkpoint_names_both_shapes(build, tmp_path, upstream, opts, kwargs, got,
                                                 expected):
    model_dir = upstream.write(tmp_path / "up", upstream.coop_state(**kwargs))
    trainer = build("CoOp", *opts)
    with pytest.raises(CheckpointError) as e:
        trainer.load_model(model_dir, epoch=50)
    path = os.path.join(model_dir, "prompt_learner", "model.pth.tar-50")
    assert str(e.value) == (
        f"Checkpoint {path!r}: 'ctx' has shape {got} but the model expects {expected} "
        f"(different class count, context length or backbone?)")


def test_missing_meta_net_is_named(build, tmp_path, upstream):
    model_dir = upstream.write(tmp_path / "up", upstream.coop_state())  # a CoOp file for CoCoOp
    trainer = build("CoCoOp")
    with pytest.raises(CheckpointError, match=r"missing trainable keys \['meta_net.linear1.weight'"):
        trainer.load_model(model_dir, epoch=50)


def test_init_weights_starts_from_a_checkpoint_file(build, tmp_path, upstream):
    state = upstream.coop_state()
    model_dir = upstream.write(tmp_path / "up", state)
    path = os.path.join(model_dir, "prompt_learner", "model.pth.tar-50")
    trainer = build("CoOp", "MODEL.INIT_WEIGHTS", path)
    assert torch.equal(trainer.model.prompt_learner.ctx.data, state["ctx"].float())
