"""tools/fewshot.py and tools/crossdataset.py on TinyNet x TinyColors (in-process jobs)."""
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_DATASET = os.path.join(REPO, "tests", "fixtures", "tiny_dataset.yaml")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_fewshot_layout_and_summary(tool):
    r = tool("fewshot", "--datasets", TINY_DATASET, "--shots", "1", "2", "--seeds", "1", "2")
    assert r.code == 0, r.out + r.err
    assert "[1/4] train tiny_dataset 1shots seed1 (TinyNet)" in r.out
    runs = {(k, s): read_json(tool.out / "tiny_dataset" / "TinyNet" / f"tiny_trainer_{k}shots"
                              / f"seed{s}" / "results.json") for k in (1, 2) for s in (1, 2)}
    assert {(v["num_shots"], v["seed"], v["subsample"]) for v in runs.values()} == {
        (1, 1, "all"), (1, 2, "all"), (2, 1, "all"), (2, 2, "all")}
    summary = read_json(tool.out / "fewshot_summary_TinyNet_tiny_trainer.json")
    assert summary["shots"] == [1, 2] and summary["seeds"] == [1, 2]
    for k in (1, 2):
        st = summary["datasets"]["tiny_dataset"][str(k)]
        accs = [runs[(k, s)]["accuracy"] for s in (1, 2)]
        assert st["per_seed"] == {"1": accs[0], "2": accs[1]}
        assert st["mean"] == pytest.approx(sum(accs) / 2)
        assert st["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2)
        assert summary["average"][str(k)] == st["mean"]
    assert "| Dataset      | 1 shots" in r.out and "| Average      |" in r.out


def test_crossdataset_trains_once_per_seed_and_evaluates_each_target(tool, tmp_path):
    target = tmp_path / "tiny_target.yaml"
    with open(TINY_DATASET) as f:
        target.write_text(f.read())  # the same dataset (and input size) under another name
    r = tool("crossdataset", "--source", TINY_DATASET, "--targets", str(target), "--shots", "2",
             "--seeds", "1")
    assert r.code == 0, r.out + r.err
    assert "[1/2] train tiny_dataset 2shots seed1 (TinyNet)" in r.out
    assert "[2/2] test tiny_target seed1 (TinyNet)" in r.out
    source_run = tool.out / "tiny_dataset" / "TinyNet" / "tiny_trainer_2shots" / "seed1"
    eval_run = tool.out / "evaluation" / "TinyNet" / "tiny_trainer_2shots" / "tiny_target" / "seed1"
    src, tgt = read_json(source_run / "results.json"), read_json(eval_run / "results.json")
    assert tgt["epoch"] == 3 and tgt["num_shots"] == -1  # the full target dataset, as upstream
    assert "--load-epoch 3" in (eval_run / "job.log").read_text()
    summary = read_json(tool.out / "evaluation" /
                        "summary_TinyNet_tiny_trainer_2shots_from_tiny_dataset.json")
    assert summary["source"]["dataset"] == "tiny_dataset"
    assert summary["source"]["per_seed"] == {"1": src["accuracy"]}
    assert summary["targets"]["tiny_target"]["per_seed"] == {"1": tgt["accuracy"]}
    assert summary["average"] == tgt["accuracy"]
    assert "| Trainer   | Source: tiny_dataset   | tiny_target" in r.out

    # a few-shot run with the same shots is the same directory: nothing to redo
    again = tool("fewshot", "--datasets", TINY_DATASET, "--shots", "2", "--seeds", "1")
    assert again.code == 0 and "finished (epoch 3): skipped" in again.out


def test_crossdataset_needs_a_target_besides_the_source(tool):
    r = tool("crossdataset", "--source", TINY_DATASET, "--targets", TINY_DATASET, "--seeds", "1")
    assert r.code == 2
    assert r.err == "error: No target dataset besides the source 'tiny_dataset'; give --targets\n"
