"""Job states read from run directories, the epoch an evaluation loads, and the launchers."""
import json
import logging
import os
import sys

import pytest

from dassl_lite.protocols.jobs import checkpoint_epoch, command_argv, job_status
from dassl_lite.protocols.plans import RunSpec, plan_base2new
from dassl_lite.protocols.resolve import DatasetConfig
from dassl_lite.protocols.runner import SubprocessLauncher, launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures")
TINY = DatasetConfig("tiny", os.path.join(FIX, "tiny_dataset.yaml"), "TinyColors")


@pytest.fixture
def plan(tiny_world, tiny_root, tmp_path):
    """``plan(*opts)`` -> [train_base, test_new] jobs of seed 1 (not run)."""
    def make(*opts):
        spec = RunSpec("TinyNet", os.path.join(FIX, "tiny_trainer.yaml"), tiny_root,
                       str(tmp_path / "out"), [os.path.join(FIX, "tiny_world.py")], list(opts))
        return plan_base2new(spec, [TINY], [1], 2)
    return make


def fake_run(run_dir, epoch, pointer=None, results=True):
    """A run directory as the engine leaves it: checkpoint pointer and results.json."""
    os.makedirs(os.path.join(run_dir, "model"), exist_ok=True)
    if pointer is not None:
        with open(os.path.join(run_dir, "model", "checkpoint"), "w") as f:
            f.write(f"model.pth.tar-{pointer}\n")
    if results:
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump({"accuracy": 50.0, "epoch": epoch}, f)


def test_states_of_a_training_run_and_its_evaluation(plan):
    train, test = plan()
    assert job_status(train) == ("new", "")
    assert job_status(test) == ("waiting", "its training run is not finished")
    fake_run(train.output_dir, None, pointer=2, results=False)
    assert checkpoint_epoch(train.output_dir) == 2
    assert job_status(train) == ("resume", "from epoch 2")
    fake_run(train.output_dir, 3, pointer=3)
    assert job_status(train) == ("finished", "epoch 3")
    assert job_status(test) == ("new", "")
    assert command_argv(test)[-9:] == ["--eval-only", "--model-dir", train.output_dir,
                                       "--load-epoch", "3", "DATASET.NUM_SHOTS", "2",
                                       "DATASET.SUBSAMPLE_CLASSES", "new"]
    assert "--load-epoch" not in command_argv(train)
    fake_run(test.output_dir, 3)
    assert job_status(test) == ("finished", "epoch 3")
    fake_run(test.output_dir, 2)  # evaluated older weights: redo
    assert job_status(test) == ("new", "")


def test_best_val_runs_are_finished_by_their_last_checkpoint(plan):
    train, test = plan("TEST.FINAL_MODEL", "best_val")
    fake_run(train.output_dir, 2, pointer=3)  # best epoch 2, trained to 3 of 3
    assert job_status(train) == ("finished", "epoch 2")
    assert "--load-epoch" not in command_argv(test)  # load_model picks model-best


def test_runs_without_learned_weights_need_no_epoch(plan):
    train, test = plan()
    fake_run(train.output_dir, None)  # zero-shot CLIP: results with epoch null, no checkpoint
    assert job_status(train) == ("finished", "no learned weights")
    assert "--load-epoch" not in command_argv(test)


def test_zero_exit_without_results_is_a_failure(plan):
    train, _ = plan()
    outcome = launch(train, lambda argv, log: log.write("did nothing\n") and 0)
    assert outcome.state == "failed"
    assert outcome.detail == ("exit code 0 but no final results.json (log: "
                              f"{os.path.join(train.output_dir, 'job.log')})")
    assert outcome.log_tail.endswith("did nothing")


def test_subprocess_launcher_streams_output_to_the_log(tmp_path, caplog):
    script = tmp_path / "fake_train.py"
    script.write_text("import sys\nprint('line one')\nprint('oops', file=sys.stderr)\nsys.exit(3)\n")
    log_path = tmp_path / "job.log"
    with caplog.at_level(logging.INFO, logger="dassl_lite.protocols.runner.output"):
        with open(log_path, "w") as log:
            code = SubprocessLauncher(str(script), echo=True)(["--seed", "1"], log)
    assert code == 3
    assert log_path.read_text() == (f"$ {sys.executable} {script} --seed 1\nline one\noops\n")
    assert [r.getMessage() for r in caplog.records] == ["line one", "oops"]
