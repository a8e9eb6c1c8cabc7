"""tools/benchmark.py --only sweep on a tiny sweep: the warm cache encodes nothing and changes no
accuracy; training time is counted."""


def test_sweep_rows_per_trainer_and_mode(benchmark, tmp_path, toy_shapes_root):
    args = benchmark.build_parser().parse_args([
        "--only", "sweep", "--sweep-trainers", "ZeroshotCLIP", "CoOp", "--sweep-seeds", "1",
        "--sweep-datasets", "toy_shapes", "--sweep-modes", "cold", "filling", "warm",
        "--sweep-dir", str(tmp_path)])
    rows = benchmark.bench_sweep(args)
    by = {(r["case"], r["trainer"]): r for r in rows}
    assert set(by) == {(m, t) for m in ("cold", "filling", "warm")
                       for t in ("ZeroshotCLIP", "CoOp", "all")}
    for trainer in ("ZeroshotCLIP", "CoOp"):
        cold, warm = by["cold", trainer], by["warm", trainer]
        assert cold["images encoded"] > 0 and warm["images encoded"] == 0
        assert (warm["base"], warm["new"]) == (cold["base"], cold["new"])  # exact
    assert by["cold", "ZeroshotCLIP"]["training s"] == 0 < by["cold", "CoOp"]["training s"]
    assert by["cold", "all"]["images encoded"] == sum(
        by["cold", t]["images encoded"] for t in ("ZeroshotCLIP", "CoOp"))


def test_sweep_shots_test_images_and_options_reach_every_job(benchmark, tmp_path):
    """CoOp, 2 shots, 2 test images per class, 3 epochs: a cold run encodes the 32 base classes'
    64 training images every epoch plus the 64 base and 64 new test images; training on cached
    views encodes nothing and the views fill encodes 10 views per training image."""
    args = benchmark.build_parser().parse_args([
        "--only", "sweep", "--sweep-trainers", "CoOp", "--sweep-seeds", "1",
        "--sweep-datasets", "toy_shapes", "--sweep-modes", "cold", "views filling", "views",
        "--sweep-shots", "2", "--sweep-test-images", "2", "--sweep-opts", "OPTIM.MAX_EPOCH", "3",
        "--sweep-dir", str(tmp_path)])
    rows = benchmark.bench_sweep(args)
    by = {r["case"]: r for r in rows if r["trainer"] == "CoOp"}
    assert by["cold"]["images encoded"] == 64 * 3 + 64 + 64
    assert by["views filling"]["images encoded"] == 64 * 10 + 64 + 64
    assert by["views"]["images encoded"] == 0
    with open(tmp_path / "output" / "cold" / "base2new" / "train_base" / "toy_shapes" / "shots_2"
              / "CoOp" / "toy" / "seed1" / "config.yaml") as f:
        assert "MAX_EPOCH: 3\n" in f.read()
    assert benchmark.sweep_backbone_opts("ToyCLIP", str(tmp_path)) == []


def test_sweep_rejects_odd_options(benchmark, tmp_path):
    import pytest

    args = benchmark.build_parser().parse_args([
        "--only", "sweep", "--sweep-opts", "OPTIM.MAX_EPOCH", "--sweep-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--sweep-opts takes KEY VALUE pairs"):
        benchmark.bench_sweep(args)


def test_sweep_rounds_keep_the_fastest_and_check_the_rest(benchmark, tmp_path):
    """Two rounds: the fill runs once, the other modes twice; the rounds must agree on images
    encoded and accuracies, and the fastest time is reported."""
    args = benchmark.build_parser().parse_args([
        "--only", "sweep", "--sweep-trainers", "ZeroshotCLIP", "--sweep-seeds", "1",
        "--sweep-datasets", "toy_shapes", "--sweep-modes", "cold", "filling", "warm",
        "--sweep-rounds", "2", "--sweep-dir", str(tmp_path)])
    calls = []
    real = benchmark._sweep_once

    def recording(args, work, data, mode, trainer):
        calls.append(mode)
        return real(args, work, data, mode, trainer)

    benchmark._sweep_once = recording
    try:
        rows = benchmark.bench_sweep(args)
    finally:
        benchmark._sweep_once = real
    assert calls == ["cold", "filling", "warm", "warm", "cold"]
    by = {r["case"]: r for r in rows if r["trainer"] == "ZeroshotCLIP"}
    assert by["cold"]["rounds"] == by["warm"]["rounds"] == 2 and "rounds" not in by["filling"]
    assert by["warm"]["images encoded"] == 0 < by["cold"]["images encoded"]
    runs = [{"wall s": 3.0, "training s": 1.0, "base": 50.0},
            {"wall s": 2.0, "training s": 1.5, "base": 50.0}]
    assert benchmark._fastest(runs) == {"wall s": 2.0, "training s": 1.0, "base": 50.0,
                                        "rounds": 2}
    import pytest

    with pytest.raises(RuntimeError, match="disagree beyond timing"):
        benchmark._fastest([runs[0], {**runs[1], "base": 49.0}])
