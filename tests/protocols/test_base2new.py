"""tools/base2new.py on TinyNet x TinyColors (in-process jobs): layout, summary, skip, resume,
failures."""
import json
import os

import pytest

from dassl_lite.protocols.stats import harmonic_mean

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_DATASET = os.path.join(REPO, "tests", "fixtures", "tiny_dataset.yaml")  # 4 classes: 2 base, 2 new
B2N = ["--datasets", TINY_DATASET, "--shots", "2"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_dir(out, phase, seed):
    return out / "base2new" / phase / "tiny_dataset" / "shots_2" / "TinyNet" / "tiny_trainer" / f"seed{seed}"


def test_two_seeds_summary_matches_the_runs(tool):
    r = tool("base2new", *B2N, "--seeds", "1", "2")
    assert r.code == 0, r.out + r.err
    assert "[1/4] train_base tiny_dataset seed1 (TinyNet)" in r.out
    assert "[4/4] test_new tiny_dataset seed2 (TinyNet)" in r.out
    assert "remaining ~" in r.out and "elapsed 0:00:" in r.out
    base = {s: read_json(run_dir(tool.out, "train_base", s) / "results.json") for s in (1, 2)}
    new = {s: read_json(run_dir(tool.out, "test_new", s) / "results.json") for s in (1, 2)}
    for s in (1, 2):
        assert (base[s]["subsample"], base[s]["num_shots"], base[s]["epoch"]) == ("base", 2, 3)
        assert (new[s]["subsample"], new[s]["epoch"], new[s]["seed"]) == ("new", 3, s)
        assert (run_dir(tool.out, "train_base", s) / "job.log").read_text().count("$ tools/train.py") == 1
    summary = read_json(tool.out / "base2new" / "summary_TinyNet_tiny_trainer_shots2.json")
    assert {k: summary[k] for k in ("protocol", "trainer", "config", "shots", "seeds", "metric")} == {
        "protocol": "base2new", "trainer": "TinyNet", "config": "tiny_trainer", "shots": 2,
        "seeds": [1, 2], "metric": "accuracy"}
    st = summary["datasets"]["tiny_dataset"]
    b = [base[s]["accuracy"] for s in (1, 2)]
    n = [new[s]["accuracy"] for s in (1, 2)]
    assert st["base"]["per_seed"] == {"1": b[0], "2": b[1]}
    assert st["new"]["per_seed"] == {"1": n[0], "2": n[1]}
    assert st["base"]["mean"] == pytest.approx((b[0] + b[1]) / 2)
    assert st["base"]["std"] == pytest.approx(abs(b[0] - b[1]) / 2)  # population std of 2 values
    assert st["hm"]["mean"] == pytest.approx(harmonic_mean(sum(b) / 2, sum(n) / 2))
    assert summary["average"] == {"base": st["base"]["mean"], "new": st["new"]["mean"],
                                  "hm": st["hm"]["mean"]}
    assert summary["failed_jobs"] == []
    times = {k: [r[s]["wall_time_s"] for s in (1, 2)] for k, r in (("train_base", base),
                                                                   ("test_new", new))}
    assert all(t > 0 for v in times.values() for t in v)
    assert summary["wall_time"] == {
        "total_s": pytest.approx(sum(times["train_base"] + times["test_new"]), abs=0.02),
        "mean_s": {k: pytest.approx(sum(v) / 2, abs=0.01) for k, v in times.items()}}
    cell = f"{st['base']['mean']:.2f} ± {st['base']['std']:.2f}"
    assert f"| tiny_dataset | {cell}" in r.out and "| Dataset" in r.out
    csv = (tool.out / "base2new" / "summary_TinyNet_tiny_trainer_shots2.csv").read_text().splitlines()
    assert csv[0] == "trainer,config,shots,dataset,metric,mean,std,seed1,seed2,missing_seeds"
    assert csv[1].startswith(f"TinyNet,tiny_trainer,2,tiny_dataset,base,{st['base']['mean']},")

    again = tool("base2new", *B2N, "--seeds", "1", "2")
    assert again.code == 0
    assert again.out.count("): skipped") == 4 and "new ->" not in again.out
    assert read_json(tool.out / "base2new" / "summary_TinyNet_tiny_trainer_shots2.json") == summary


def test_lost_results_and_truncated_runs_are_resumed(tool):
    assert tool("base2new", *B2N, "--seeds", "1", "TRAIN.CHECKPOINT_FREQ", "1").code == 0
    train = run_dir(tool.out, "train_base", 1)
    expected = read_json(train / "results.json")["accuracy"]

    # results.json lost: the run resumes at its last epoch (nothing left to train) and tests
    os.remove(train / "results.json")
    r = tool("base2new", *B2N, "--seeds", "1", "TRAIN.CHECKPOINT_FREQ", "1")
    assert r.code == 0 and "resume from epoch 3 ->" in r.out
    assert "[2/2] test_new tiny_dataset seed1 (TinyNet)\n  finished (epoch 3): skipped" in r.out
    assert read_json(train / "results.json")["accuracy"] == expected

    # killed after epoch 2: resumes from epoch 2, trains epoch 3, tests again
    os.remove(train / "results.json")
    os.remove(train / "model" / "model.pth.tar-3")
    (train / "model" / "checkpoint").write_text("model.pth.tar-2\n")
    r = tool("base2new", *B2N, "--seeds", "1", "TRAIN.CHECKPOINT_FREQ", "1")
    assert r.code == 0 and "resume from epoch 2 ->" in r.out
    log = (train / "job.log").read_text()
    assert "Resuming 'model' from" in log and "epoch [3/3]" in log.split("Resuming 'model'")[-1]
    assert read_json(train / "results.json")["epoch"] == 3


def test_failed_job_is_reported_and_marked_missing(tool):
    assert tool("base2new", *B2N, "--seeds", "1", "2").code == 0
    # seed 2's checkpoint is corrupt and its results lost: training and evaluation cannot run
    train2 = run_dir(tool.out, "train_base", 2)
    os.remove(train2 / "results.json")
    (train2 / "model" / "model.pth.tar-3").write_bytes(b"not a checkpoint")
    r = tool("base2new", *B2N, "--seeds", "1", "2")
    assert r.code == 1
    assert "[3/4] train_base tiny_dataset seed2 (TinyNet)" in r.out
    assert f"  FAILED: exit code 2 (log: {train2 / 'job.log'})" in r.out
    assert "\n    error: Cannot read checkpoint" in r.out  # the log tail
    assert "  not run: its training run is not finished" in r.out
    assert "2 of 4 jobs did not complete; their values are marked missing:" in r.out
    # the closing list shows each failed job's own error line under it (not the whole log tail)
    closing = r.out.split("did not complete")[-1]
    assert (f"- train_base tiny_dataset seed2 (TinyNet): failed: exit code 2 (log: "
            f"{train2 / 'job.log'})\n    error: Cannot read checkpoint") in closing
    assert "Traceback" not in closing
    assert "| tiny_dataset | n/a (missing seed 2) | n/a (missing seed 2) | n/a (missing seed 2) |" in r.out
    summary = read_json(tool.out / "base2new" / "summary_TinyNet_tiny_trainer_shots2.json")
    st = summary["datasets"]["tiny_dataset"]
    assert st["base"]["mean"] is None and st["base"]["missing"] == [2]
    assert st["base"]["per_seed"]["2"] is None and st["base"]["per_seed"]["1"] is not None
    assert summary["average"] == {"base": None, "new": None, "hm": None}
    assert "error: Cannot read checkpoint" in summary["failed_jobs"][0]["log_tail"]
    assert [(f["job"], f["state"], f["returncode"]) for f in summary["failed_jobs"]] == [
        ("train_base tiny_dataset seed2 (TinyNet)", "failed", 2),
        ("test_new tiny_dataset seed2 (TinyNet)", "not_run", None)]


def test_a_run_of_another_config_is_never_reused(tool):
    assert tool("base2new", *B2N, "--seeds", "1").code == 0
    r = tool("base2new", *B2N, "--seeds", "1", "OPTIM.MAX_EPOCH", "4", "OPTIM.LR", "0.1")
    assert r.code == 1
    train = run_dir(tool.out, "train_base", 1)
    assert (f"  FAILED: {train} holds a run with another config (OPTIM.LR: 0.05 in the run, 0.1 "
            f"now; OPTIM.MAX_EPOCH: 3 in the run, 4 now); delete the directory or use another "
            f"--output-root") in r.out
    assert f"  FAILED: {run_dir(tool.out, 'test_new', 1)} holds a run with another config" in r.out
    # an evaluation never uses the weights of a training run of another config
    os.remove(run_dir(tool.out, "test_new", 1) / "results.json")
    r = tool("base2new", *B2N, "--seeds", "1", "OPTIM.MAX_EPOCH", "4", "OPTIM.LR", "0.1")
    assert "  not run: its training run directory holds another config" in r.out
    assert read_json(train / "results.json")["epoch"] == 3  # untouched


def test_dry_run_lists_states_and_runs_nothing(tool):
    r = tool("base2new", *B2N, "--seeds", "1", "--dry-run")
    assert r.code == 0
    assert "[1/2] train_base tiny_dataset seed1 (TinyNet)\n  would run: new" in r.out
    assert "[2/2] test_new tiny_dataset seed1 (TinyNet)\n  would run: after its training run" in r.out
    assert not tool.out.exists()


@pytest.mark.parametrize("flags, message", [
    (["OPTIM.LRR", "0.1"], "error: Unknown config key 'OPTIM.LRR' in command-line options. "
                           "Did you mean 'OPTIM.LR'?"),
    (["DATASET.NUM_SHOTS", "4"], "error: DATASET.NUM_SHOTS is set by the protocol; use --shots "
                                 "instead"),
    (["--datasets", "tiny_colours"], "error: No dataset config for 'tiny_colours'"),
])
def test_bad_arguments_fail_before_any_job(tool, flags, message):
    r = tool("base2new", "--seeds", "1", *(B2N if flags[0] != "--datasets" else []), *flags)
    assert r.code == 2 and r.err.startswith(message) and r.out == ""
    assert not tool.out.exists()
