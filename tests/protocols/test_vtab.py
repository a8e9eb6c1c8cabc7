"""tools/vtab.py, the VPT paper's VTAB-1k protocol: tasks, grid, tie rule, jobs and layout, the
summary table and the paper's reference numbers (units); then the protocol end to end on the toy
tasks (2 x 2 grid, two tasks, one seed) with a resume after an interrupt."""
import json
import os

import pytest

from datasets import vtab_tasks
from dassl_lite.errors import DasslLiteError
from dassl_lite.protocols import plans as plans_module
from dassl_lite.protocols import vtab_table
from dassl_lite.protocols.plans import RunSpec
from dassl_lite.protocols.vtab import (PAPER_GRIDS, GridPoint, check_opts, grid_axes, grid_points,
                                       plan_task, resolve_tasks, select_best)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------- tasks
def test_tasks_all_groups_toy_and_names_in_paper_order():
    assert resolve_tasks(["all"], vtab_tasks) == list(vtab_tasks.VTAB_TASKS)
    assert len(resolve_tasks(["all"], vtab_tasks)) == 19
    assert resolve_tasks(["specialized"], vtab_tasks) == [
        "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"]
    assert len(resolve_tasks(["Natural", "structured"], vtab_tasks)) == 7 + 8
    assert resolve_tasks(["toy"], vtab_tasks) == ["toy_colour", "toy_shape", "toy_position"]
    # listed out of order and twice: the paper's order, once
    assert resolve_tasks(["svhn", "cifar", "natural"], vtab_tasks)[:2] == ["cifar", "caltech101"]
    assert resolve_tasks(["toy_shape", "cifar"], vtab_tasks) == ["cifar", "toy_shape"]


def test_unknown_task_names_the_flag_and_the_closest_name():
    with pytest.raises(DasslLiteError, match=r"--tasks: unknown VTAB-1k task 'cifar100'.*"
                                             r"Did you mean 'cifar'\?"):
        resolve_tasks(["cifar100"], vtab_tasks)


# ---------------------------------------------------------------------- grid
def test_paper_grid_is_kmnp_vpt_tune_vtab():
    lrs, wds, source = grid_axes("prompt", None, None, "VPTSupervised (deep)")
    assert sorted(lrs) == [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0]
    assert wds == [0.01, 0.001, 0.0001, 0.0]
    assert source == "KMnP/vpt tune_vtab.py get_lrwd_range() (prompt)"
    assert sorted(PAPER_GRIDS["linear"][0]) == sorted(lrs)
    assert sorted(PAPER_GRIDS["end2end"][0]) == [0.0001, 0.0005, 0.001, 0.005]
    # one axis overridden, the other from the paper
    lrs, wds, source = grid_axes("end2end", [0.01, 0.02], None, "x")
    assert (lrs, wds) == ([0.01, 0.02], [0.01, 0.001, 0.0001, 0.0])
    assert source.endswith("(end2end), --lr flag")


def test_grid_points_scale_by_batch_in_upstream_order():
    points = grid_points([1.0, 4.0], [0.0, 0.01], scale=32 / 256)
    assert [p.label for p in points] == ["lr4_wd0.01", "lr4_wd0", "lr1_wd0.01", "lr1_wd0"]
    assert points[0].optim_lr == 0.5 and points[2].optim_lr == 0.125


def test_bad_grids_are_named():
    with pytest.raises(DasslLiteError, match=r"No grid for CoOp \(toy\): it has no "
                                             r"MODEL.TRANSFER_TYPE it reads .*pass --lr and --wd"):
        grid_axes(None, [0.1], None, "CoOp (toy)")
    with pytest.raises(DasslLiteError, match=r"--lr values must be > 0; got 0 -1"):
        grid_axes("prompt", [0.0, -1.0], None, "x")
    with pytest.raises(DasslLiteError, match=r"--wd values must be >= 0; got -0.1"):
        grid_axes("prompt", None, [-0.1], "x")
    with pytest.raises(DasslLiteError, match=r"--wd lists 0.01 more than once"):
        grid_axes("prompt", None, [0.01, 0.01], "x")
    with pytest.raises(DasslLiteError, match=r"OPTIM.LR is set by the VTAB protocol \(--lr\)"):
        check_opts(["OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.1"])


def test_selection_best_val_then_smallest_lr_then_largest_wd():
    a, b, c, d = (GridPoint(lr, wd, lr) for lr, wd in ((1.0, 0.0), (0.5, 0.0), (0.5, 0.01),
                                                       (5.0, 0.01)))
    assert select_best({a: 60.0, b: 70.0, c: 65.0, d: 69.5}) == b
    assert select_best({a: 70.0, b: 70.0, d: 70.0}) == b  # tie: the smallest lr (upstream)
    assert select_best({a: 70.0, b: 70.0, c: 70.0}) == c  # same lr: the largest wd (ours)


def _grid_of(config: str, toy: bool, dataset: str):
    """The protocol's grid points and description for VPTSupervised's ``config``."""
    import argparse

    import trainers  # noqa: F401
    from dassl_lite.protocols.vtab_cli import _grid

    spec = RunSpec("VPTSupervised", _config_path(config), "/data", "/out", [], [])
    args = argparse.Namespace(toy=toy, lr=None, wd=None, lr_scale="batch")
    return _grid(spec, args, dataset)


def _config_path(config: str) -> str:
    return os.path.join(REPO, "configs", "trainers", "VPTSupervised", config + ".yaml")


@pytest.mark.parametrize("config, toy, lrs, transfer", [
    ("toy_vtab_linear", False, sorted(PAPER_GRIDS["linear"][0], reverse=True), "linear"),
    ("toy_vtab_end2end", False, [0.005, 0.001, 0.0005, 0.0001], "end2end"),
    ("toy_vtab_end2end", True, [0.08, 0.02], "end2end"),
    ("toy_vtab_shallow", True, [3.2, 0.8], "prompt"),
])
def test_each_config_gets_the_grid_of_its_transfer_type(config, toy, lrs, transfer):
    points, grid = _grid_of(config, toy, "VTAB1k_toy_colour")
    assert grid["transfer_type"] == transfer and grid["batch_size"] == 32
    assert sorted({p.lr for p in points}, reverse=True) == lrs
    assert len(points) == len(lrs) * (2 if toy else 4)
    assert all(p.optim_lr == p.lr / 8 for p in points)
    assert grid["source"].startswith("the --toy grid" if toy else "KMnP/vpt tune_vtab.py")


@pytest.mark.parametrize("variant, transfer, batch, lr_axis, optim", [
    ("shallow", "prompt", 128, PAPER_GRIDS["prompt"][0], "sgd"),
    ("deep", "prompt", 128, PAPER_GRIDS["prompt"][0], "sgd"),
    ("linear", "linear", 1024, PAPER_GRIDS["linear"][0], "sgd"),
    ("end2end", "end2end", 384, PAPER_GRIDS["end2end"][0], "adamw"),
])
def test_shipped_vtab_configs_follow_kmnp_vpt(variant, transfer, batch, lr_axis, optim):
    """configs/trainers/VPTSupervised/vit_b16_in21k_vtab_*.yaml: KMnP/vpt's base-prompt /
    base-linear / base-finetune settings; the paper grid of the transfer type, lr per 256."""
    config = f"vit_b16_in21k_vtab_{variant}"
    points, grid = _grid_of(config, False, "VTAB1k_cifar")
    assert grid["transfer_type"] == transfer and grid["batch_size"] == batch
    assert sorted({p.lr for p in points}) == sorted(lr_axis)
    assert len(points) == len(lr_axis) * len(PAPER_GRIDS[transfer][1])
    assert all(p.optim_lr == pytest.approx(p.lr * batch / 256) for p in points)

    # the config a run gets (trainer keys, dataset config), as the protocol builds it
    cfg = plans_module.expected_config(["--root", "/data", "--trainer", "VPTSupervised",
                                        "--config-file", _config_path(config),
                                        "DATASET.NAME", "VTAB1k_cifar"])
    assert cfg.MODEL.BACKBONE.NAME == "sup_vitb16_imagenet21k" and cfg.INPUT.SIZE == (224, 224)
    assert list(cfg.INPUT.TRANSFORMS) == ["normalize"]  # no flip: Structured labels
    assert cfg.OPTIM.NAME == optim and cfg.OPTIM.MAX_EPOCH == 100
    assert cfg.TEST.FINAL_MODEL == "last_step"
    if transfer == "prompt":
        assert cfg.MODEL.PROMPT.DEEP == (variant == "deep")


# ---------------------------------------------------------------------- jobs
def test_tune_and_final_jobs_layout_and_options(monkeypatch, tmp_path):
    argvs = []
    monkeypatch.setattr(plans_module, "expected_config", lambda argv: argvs.append(argv))
    spec = RunSpec("VPTSupervised", "/cfgs/toy_vtab_deep.yaml", "/data", str(tmp_path), [],
                   ["OPTIM.MAX_EPOCH", "2"])
    points = grid_points([1.0, 2.0], [0.0, 0.001], scale=32 / 256)
    plan = plan_task(spec, "toy_shape", "VTAB1k_toy_shape", points, tune_seed=7)
    base = tmp_path / "vtab" / "toy_shape" / "VPTSupervised" / "toy_vtab_deep"
    assert [j.output_dir for j in plan.tune.values()] == [
        str(base / "tune" / x) for x in ("lr2_wd0.001", "lr2_wd0", "lr1_wd0.001", "lr1_wd0")]
    job = plan.tune[points[0]]
    assert job.seed == 7 and job.name == "tune toy_vtab_deep lr2_wd0.001 toy_shape seed7 " \
                                         "(VPTSupervised)"
    assert "--dataset-config-file" not in job.flags
    assert job.opts == ["DATASET.NAME", "VTAB1k_toy_shape", "OPTIM.MAX_EPOCH", "2",
                        "DATASET.VTAB.MODE", "tune", "OPTIM.LR", "0.25",
                        "OPTIM.WEIGHT_DECAY", "0.001", "TEST.FINAL_MODEL", "last_step"]
    finals = plan.final_jobs(points[3], [1, 2])
    assert [j.output_dir for j in finals] == [str(base / "final" / "lr1_wd0" / f"seed{s}")
                                              for s in (1, 2)]
    assert finals[1].seed == 2 and finals[1].opts[5:8] == ["final", "OPTIM.LR", "0.125"]
    assert len(argvs) == 6


# ---------------------------------------------------------------------- table
def _entry(group, mean, std, lr=1.0):
    point = GridPoint(lr, 0.0, lr / 8)
    per_seed = {1: mean - std, 2: mean + std}
    return vtab_table.task_entry(point, {point: 50.0}, per_seed, group)


def test_table_group_means_and_mean_of_groups():
    tasks = {"a": _entry("Natural", 80.0, 1.0), "b": _entry("Natural", 60.0, 0.0),
             "c": _entry("Specialized", 90.0, 2.0), "d": _entry("Structured", 40.0, 0.5)}
    row = vtab_table.config_row("x.yaml", tasks, vtab_tasks.GROUPS)
    assert row["groups"] == {"Natural": 70.0, "Specialized": 90.0, "Structured": 40.0}
    assert row["mean"] == pytest.approx(200.0 / 3)  # of the three group means, not of 4 tasks
    summary = vtab_table.summary_header("VPTSupervised", [1, 2], 1, {}, {t: e["group"] for t, e
                                                                        in tasks.items()})
    summary["rows"] = {"deep": row}
    table = vtab_table.results_table(summary)
    assert [c.strip() for c in table.splitlines()[0].split("|")[1:-1]] == [
        "Config", "a", "b", "c", "d", "Natural", "Specialized", "Structured", "Mean (3 groups)"]
    assert "| deep     | 80.00 ± 1.00 | 60.00 ± 0.00 | 90.00 ± 2.00 | 40.00 ± 0.50 | 70.00" \
           in table
    assert "| 66.67 " in table
    assert "1 / 0 (50.00)" in vtab_table.choice_table(summary)
    rows = vtab_table.csv_rows(summary)
    assert rows[0]["task"] == "a" and rows[0]["seed1"] == 79.0 and rows[0]["optim_lr"] == 0.125
    assert rows[-1] == {"config": "deep", "task": "mean of group means", "mean": row["mean"]}


def test_missing_seed_or_tuning_is_marked_not_averaged():
    e = vtab_table.task_entry(None, {GridPoint(1.0, 0.0, 1.0): None}, {1: None, 2: None},
                              "Natural")
    row = vtab_table.config_row("x.yaml", {"a": e}, vtab_tasks.GROUPS)
    assert row["groups"] == {"Natural": None} and row["mean"] is None
    summary = vtab_table.summary_header("T", [1, 2], 1, {}, {"a": "Natural"})
    summary["rows"] = {"c": row}
    assert "n/a (missing seed 1, 2)" in vtab_table.results_table(summary)
    assert "n/a (tuning incomplete)" in vtab_table.choice_table(summary)


def test_paper_reference_numbers_give_the_papers_group_means():
    assert vtab_table.PAPER_TASKS == tuple(vtab_tasks.VTAB_TASKS)
    for method, values in vtab_table.PAPER_PER_TASK.items():
        assert len(values) == 19
        for group in vtab_tasks.GROUPS:
            idx = [vtab_table.PAPER_TASKS.index(t) for t in vtab_tasks.tasks_of_group(group)]
            mean = sum(values[i] for i in idx) / len(idx)
            # Table 1's group means from the per-task numbers (rounded to 0.1) within 0.02
            assert mean == pytest.approx(vtab_table.PAPER_GROUP_MEANS[method][group], abs=0.02)
    table = vtab_table.reference_table(["cifar", "eurosat"])
    assert ("| VPT-deep    | 78.8    | 96.1      | 78.48     | 82.43         | 54.98        "
            "| 71.96") in table


@pytest.mark.parametrize("flags, message", [
    (["--tasks", "cifar"], "error: --config-file is required (or --toy for the toy preset)"),
    (["--trainer", "CoOp", "--config-file", "toy", "--tasks", "cifar", "--lr", "0.002"],
     "error: No grid for CoOp (toy): it has no MODEL.TRANSFER_TYPE it reads"),
    (["--config-file", "toy_vtab_deep", "--tasks", "svhn", "--seeds", "1", "1"],
     "error: --seeds lists 1 more than once"),
    (["--config-file", "toy_vtab_deep", "toy_vtab_deep", "--tasks", "svhn"],
     "error: --config-file: two configs are named toy_vtab_deep"),
    (["--config-file", "toy_vtab_deep", "--tasks", "svhn", "--", "TEST.FINAL_MODEL", "best_val"],
     "error: TEST.FINAL_MODEL is set by the VTAB protocol (last_step)"),
])
def test_bad_arguments_exit_2_before_any_job(tmp_path, capsys, flags, message):
    import trainers  # noqa: F401
    from dassl_lite.protocols.vtab_cli import main

    code = main(vtab_tasks, ["--root", str(tmp_path), "--output-root", str(tmp_path / "out"),
                             *flags], repo_root=REPO)
    assert code == 2 and capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- end to end
TOY_FLAGS = ["--tasks", "toy_colour", "toy_shape", "--config-file", "toy_vtab_deep", "--toy",
             "--seeds", "1", "--lr", "0.8", "3.2", "--wd", "0", "0.001",
             "--launcher", "inprocess"]
TOY_OPTS = ["OPTIM.MAX_EPOCH", "1"]


def _vtab(root, out, *extra):
    from dassl_lite.protocols.vtab_cli import main

    return main(vtab_tasks, ["--root", str(root), "--output-root", str(out), *TOY_FLAGS,
                             *extra, *TOY_OPTS], repo_root=REPO)


def test_toy_protocol_end_to_end_interrupted_and_resumed(tmp_path, capsys, monkeypatch):
    import trainers  # noqa: F401  (registers VPTSupervised, as tools/vtab.py does)
    from dassl_lite.protocols import runner

    root, out = tmp_path / "data", tmp_path / "out"
    real_main, calls = runner.train_main, []

    def ctrl_c_at_third_job(argv):
        calls.append(argv)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third tune run starts
        return real_main(argv)

    monkeypatch.setattr(runner, "train_main", ctrl_c_at_third_job)
    assert _vtab(root, out) == 130
    assert "Run the same command again to resume" in capsys.readouterr().err
    monkeypatch.setattr(runner, "train_main", real_main)

    # the same command: the two finished tune runs are skipped, the other six and the finals run
    assert _vtab(root, out) == 0
    log = capsys.readouterr().out
    assert log.count("): skipped") == 2
    assert log.count("  new -> ") == 6 + 2
    assert "[1/2] final toy_vtab_deep " in log
    summary = json.loads((out / "vtab" / "summary_VPTSupervised.json").read_text())
    row = summary["rows"]["toy_vtab_deep"]
    for task in ("toy_colour", "toy_shape"):
        entry = row["tasks"][task]
        base = out / "vtab" / task / "VPTSupervised" / "toy_vtab_deep"
        tuned = {p: json.loads((base / "tune" / p / "results.json").read_text())["accuracy"]
                 for p in ("lr3.2_wd0.001", "lr3.2_wd0", "lr0.8_wd0.001", "lr0.8_wd0")}
        assert entry["tune"] == tuned
        best = max(tuned.values())
        pick = next(p for p in ("lr0.8_wd0.001", "lr0.8_wd0", "lr3.2_wd0.001", "lr3.2_wd0")
                    if tuned[p] == best)  # the tie rule, written out
        assert f"lr{entry['lr']:g}_wd{entry['wd']:g}" == pick and entry["val_top1"] == best
        assert entry["optim_lr"] == entry["lr"] * 32 / 256
        final = base / "final" / pick / "seed1"
        assert entry["per_seed"] == {"1": json.loads((final / "results.json").read_text())[
            "accuracy"]}
        cfg = (final / "config.yaml").read_text()
        assert "MODE: final" in cfg and f"LR: {entry['optim_lr']}" in cfg
    assert row["groups"] == {"Natural": row["tasks"]["toy_colour"]["mean"],
                             "Specialized": row["tasks"]["toy_shape"]["mean"]}
    md = (out / "vtab" / "summary_VPTSupervised.md").read_text()
    assert "| toy_vtab_deep |" in md and md in log

    # a final run killed before its results: only that run resumes; the rest is skipped
    final = out / "vtab" / "toy_colour" / "VPTSupervised" / "toy_vtab_deep" / "final"
    (next(final.iterdir()) / "seed1" / "results.json").unlink()
    assert _vtab(root, out) == 0
    log = capsys.readouterr().out
    assert log.count("): skipped") == 9 and log.count("resume from epoch 1 ->") == 1
    assert json.loads((out / "vtab" / "summary_VPTSupervised.json").read_text())["rows"] == \
        summary["rows"]
