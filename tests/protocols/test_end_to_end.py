"""End to end as users run it: tools/base2new.py with child-process jobs (TinyNet), and the
toy-world base-to-novel run of two real trainers x two seeds (with the shipped toy CLIP)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures")
TOY_CLIP = os.path.join(REPO, "dassl_lite", "clip", "assets", "ToyCLIP.pt")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def check_summary_matches_runs(summary, out, dataset, cfg, shots, seeds):
    """Every per-seed value of the summary is the accuracy in that run's results.json."""
    trainer = summary["trainer"]
    for phase, key in (("train_base", "base"), ("test_new", "new")):
        for s in seeds:
            run = os.path.join(out, "base2new", phase, dataset, f"shots_{shots}", trainer, cfg,
                               f"seed{s}", "results.json")
            assert summary["datasets"][dataset][key]["per_seed"][str(s)] == read_json(run)["accuracy"]


@pytest.mark.slow
def test_tool_with_child_process_jobs(tmp_path, tiny_root):
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(REPO, "tools", "base2new.py"),
           "--import", os.path.join(FIX, "tiny_world.py"), "--trainer", "TinyNet",
           "--config-file", os.path.join(FIX, "tiny_trainer.yaml"),
           "--datasets", os.path.join(FIX, "tiny_dataset.yaml"), "--seeds", "1", "2",
           "--shots", "2", "--root", tiny_root, "--output-root", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[4/4] test_new tiny_dataset seed2 (TinyNet)" in r.stdout
    summary = read_json(out / "base2new" / "summary_TinyNet_tiny_trainer_shots2.json")
    check_summary_matches_runs(summary, str(out), "tiny_dataset", "tiny_trainer", 2, [1, 2])
    job_log = (out / "base2new/test_new/tiny_dataset/shots_2/TinyNet/tiny_trainer/seed1/job.log")
    assert "--load-epoch 3" in job_log.read_text() and "* accuracy:" in job_log.read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("): skipped") == 4


@pytest.mark.slow
def test_toy_world_base2new_two_trainers_two_seeds(tmp_path):
    assert os.path.isfile(TOY_CLIP), f"the shipped toy CLIP {TOY_CLIP} is missing"
    import datasets  # noqa: F401  (registers the toy datasets, as tools/base2new.py does)
    import trainers  # noqa: F401
    from datasets.toy_world import SplitCounts, make_toy_world
    from dassl_lite.protocols.cli import main

    root, out = str(tmp_path / "data"), str(tmp_path / "out")
    make_toy_world(root, ["ToyShapes"], counts=SplitCounts(train=4, val=2, test=4))
    argv = ["--trainer", "ZeroshotCLIP", "CoOp", "--config-file", "toy", "--datasets", "ToyShapes",
            "--seeds", "1", "2", "--shots", "2", "--root", root, "--output-root", out,
            "OPTIM.MAX_EPOCH", "1"]
    assert main("base2new", argv, repo_root=REPO) == 0
    summaries = {t: read_json(os.path.join(out, "base2new", f"summary_{t}_toy_shots2.json"))
                 for t in ("ZeroshotCLIP", "CoOp")}
    for summary in summaries.values():
        check_summary_matches_runs(summary, out, "toy_shapes", "toy", 2, [1, 2])
        avg, st = summary["average"], summary["datasets"]["toy_shapes"]
        assert avg == {"base": st["base"]["mean"], "new": st["new"]["mean"], "hm": st["hm"]["mean"]}
        assert 0 < avg["hm"] <= 100
    zs = summaries["ZeroshotCLIP"]["datasets"]["toy_shapes"]
    assert zs["base"]["std"] == 0 and zs["new"]["std"] == 0  # nothing learned: seeds agree
    coop_log = os.path.join(out, "base2new/test_new/toy_shapes/shots_2/CoOp/toy/seed1/job.log")
    zs_log = os.path.join(out, "base2new/test_new/toy_shapes/shots_2/ZeroshotCLIP/toy/seed1/job.log")
    assert "--load-epoch 1" in open(coop_log).read() and "--load-epoch" not in open(zs_log).read()
