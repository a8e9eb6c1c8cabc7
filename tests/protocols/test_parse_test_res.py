"""tools/parse_test_res.py on synthetic upstream-style logs: exact output and numbers."""
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "parse_test_res.py")

TRAIN_LOG = """Loading trainer: CoOp
epoch [1/5] batch [5/5] loss 1.2 lr 2.0e-03
=> result
* total: 100
* accuracy: 50.0%
Finish training
Deploy the last-epoch model
Evaluate on the *test* set
=> result
* total: 1,000
* correct: {correct}
* accuracy: {acc}%
* error: {err}%
* macro_f1: {f1}%
Elapsed: 0:01:00
"""
TEST_LOG = """Loading weights to prompt_learner from "x/model.pth.tar-5" (epoch = 5)
Evaluate on the *test* set
=> result
* total: 500
* accuracy: {acc}%
* error: 0.0%
* macro_f1: 60.0%
"""


def load_tool():
    spec = importlib.util.spec_from_file_location("parse_test_res_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_runs(directory, template, accs):
    for seed, acc in enumerate(accs, 1):
        run = directory / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "log.txt").write_text(template.format(correct=int(acc * 10), acc=acc,
                                                     err=100 - acc, f1=acc - 1))
    return directory


def test_train_logs_mean_and_population_std(tmp_path, capsys):
    d = write_runs(tmp_path / "exp", TRAIN_LOG, [73.4, 75.0, 76.6])
    assert load_tool().main([str(d)]) == 0
    assert capsys.readouterr().out == (
        f"Parsing files in {d}\n"
        f"file: {d}/seed1/log.txt. accuracy: 73.40%.\n"
        f"file: {d}/seed2/log.txt. accuracy: 75.00%.\n"
        f"file: {d}/seed3/log.txt. accuracy: 76.60%.\n"
        f"===\n"
        f"Summary of directory: {d}\n"
        f"* accuracy: 75.00% +- 1.31%\n"  # np.std([73.4, 75, 76.6]) = 1.3064
        f"===\n"
    )


def test_keyword_ci95_and_test_logs(tmp_path, capsys):
    d = write_runs(tmp_path / "exp", TRAIN_LOG, [73.4, 75.0, 76.6])
    assert load_tool().main([str(d), "--keyword", "macro_f1", "--ci95"]) == 0
    out = capsys.readouterr().out
    assert "file: " + str(d / "seed1" / "log.txt") + ". macro_f1: 72.40%." in out
    assert "* macro_f1: 74.00% +- 1.48%\n" in out  # 1.96 * 1.3064 / sqrt(3) = 1.478

    t = write_runs(tmp_path / "test_new", TEST_LOG, [60.0, 70.0])
    assert load_tool().main([str(t), "--test-log"]) == 0
    assert "* accuracy: 65.00% +- 5.00%\n" in capsys.readouterr().out


def test_only_lines_after_the_end_signal_count_and_later_logs_win(tmp_path, capsys):
    d = write_runs(tmp_path / "exp", TRAIN_LOG, [80.0])
    # The 50.0% before "Finish training" is a validation result and never counts; a resumed
    # run's later log (log.txt-<timestamp>) holds the final result.
    (d / "seed1" / "log.txt-2024-01-02-03-04-05").write_text(
        TRAIN_LOG.format(correct=900, acc=90.0, err=10.0, f1=89.0))
    (d / "seed1" / "log.txt").write_text("Finished training\n* accuracy: 10.0%\n")  # MaPLe's signal
    assert load_tool().main([str(d)]) == 0
    out = capsys.readouterr().out
    assert f"file: {d}/seed1/log.txt-2024-01-02-03-04-05. accuracy: 90.00%." in out
    assert "* accuracy: 90.00% +- 0.00%" in out


def test_multi_exp_averages_the_experiment_means(tmp_path, capsys):
    write_runs(tmp_path / "all" / "caltech101", TEST_LOG, [90.0, 92.0])
    write_runs(tmp_path / "all" / "dtd", TEST_LOG, [40.0, 50.0])
    (tmp_path / "all" / "summary.json").write_text("{}")  # files are not experiments
    (tmp_path / "all" / ".hidden").mkdir()
    assert load_tool().main([str(tmp_path / "all"), "--test-log", "--multi-exp"]) == 0
    out = capsys.readouterr().out
    assert out.count("Summary of directory") == 2
    assert out.endswith("Average performance\n* accuracy: 68.00%\n")  # (91 + 45) / 2


def test_a_run_without_result_is_an_error_not_a_smaller_mean(tmp_path, capsys):
    d = write_runs(tmp_path / "exp", TRAIN_LOG, [73.4, 75.0])
    (d / "seed3").mkdir()
    (d / "seed3" / "log.txt").write_text("epoch [1/5] batch [1/5]\n")  # killed mid-training
    assert load_tool().main([str(d)]) == 1
    assert capsys.readouterr().err == (
        f"error: No '* accuracy: ...%' line after 'Finish training' or 'Finished training' in the "
        f"log.txt of seed3 (in {d}); unfinished or failed runs? (use --test-log for "
        f"evaluation-only runs)\n")


def test_runs_as_a_script_without_torch(tmp_path):
    d = write_runs(tmp_path / "exp", TEST_LOG, [60.0])
    code = ("import runpy, sys\n"
            "sys.argv = ['parse_test_res.py', %r, '--test-log']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n"
            % (str(d), TOOL))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("* accuracy: 60.00% +- 0.00%\n===\nexit 0 False\n")


@pytest.mark.parametrize("missing", ["nowhere", "empty"])
def test_missing_or_empty_directory(tmp_path, capsys, missing):
    d = tmp_path / missing
    if missing == "empty":
        d.mkdir()
    assert load_tool().main([str(d)]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: No directory {str(d)!r}\n" if missing == "nowhere"
                   else f"error: No run directories (e.g. seed1/) in {d}\n")
