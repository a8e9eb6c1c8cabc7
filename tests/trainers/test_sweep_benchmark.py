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
