"""Parallel launchers: the local device pool (--devices) and submitit (--launcher slurm)."""
import json
import os
import sys

import pytest

from dassl_lite.errors import DasslLiteError
from dassl_lite.protocols.jobs import Job
from dassl_lite.protocols.pool import device_slots, run_jobs_on_devices
from dassl_lite.protocols.runner import SubprocessLauncher

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_DATASET = os.path.join(REPO, "tests", "fixtures", "tiny_dataset.yaml")

# A stand-in for tools/train.py: records the devices it sees and when it ran, then writes the
# results.json of a run without learned weights (so the job counts as finished).
FAKE_TRAIN = '''
import json, os, sys, time
out = sys.argv[sys.argv.index("--output-dir") + 1]
start = time.time()
time.sleep(0.4)
if "--fail" in sys.argv:
    print("boom: this job fails on purpose")
    sys.exit(3)
with open(os.path.join(out, "seen.json"), "w") as f:
    json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
               "end": time.time()}, f)
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"accuracy": 50.0, "epoch": None}, f)
'''


def _job(tmp_path, name, train_job=None, fail=False):
    out = str(tmp_path / name)
    flags = ["--output-dir", out] + (["--fail"] if fail else [])
    return Job("test" if train_job else "train", "Fake", name, 1, 1, out, flags, [],
               train_job=train_job)


@pytest.fixture
def pool(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)

    def run(jobs, devices="0,1"):
        def launcher_for(slot):
            return SubprocessLauncher(str(script), python=sys.executable,
                                      env={"CUDA_VISIBLE_DEVICES": slot})
        return run_jobs_on_devices(jobs, launcher_for, device_slots(devices))

    return run


def test_device_pool_runs_one_job_per_device_at_a_time(tmp_path, pool):
    jobs = [_job(tmp_path, f"job{i}") for i in range(4)]
    outcomes = pool(jobs)
    assert [o.state for o in outcomes] == ["ran"] * 4
    assert [o.job for o in outcomes] == jobs
    seen = [json.loads((tmp_path / f"job{i}" / "seen.json").read_text()) for i in range(4)]
    by_device = {}
    for s in seen:
        by_device.setdefault(s["cuda"], []).append((s["start"], s["end"]))
    assert set(by_device) == {"0", "1"}  # each job saw exactly one of the two devices
    for spans in by_device.values():
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert "CUDA_VISIBLE_DEVICES=" in (tmp_path / "job0" / "job.log").read_text()


def test_device_pool_reports_a_failed_job_and_runs_the_others(tmp_path, pool):
    bad = _job(tmp_path, "bad", fail=True)
    good = _job(tmp_path, "good")
    jobs = [bad, good, _job(tmp_path, "bad_eval", train_job=bad),
            _job(tmp_path, "good_eval", train_job=good)]
    states = [o.state for o in pool(jobs)]
    assert states == ["failed", "ran", "not_run", "ran"]
    failed = pool([bad])[0]
    log = os.path.join(bad.output_dir, "job.log")
    assert f"(log: {log})" in failed.detail and "boom" in failed.log_tail
    assert [o.state for o in pool(jobs[1::2])] == ["skipped", "skipped"]  # reruns skip


@pytest.mark.parametrize("devices,per_job,slots", [("0,1,2,3", 1, ["0", "1", "2", "3"]),
                                                   ("0,1,2,3", 2, ["0,1", "2,3"])])
def test_device_slots(devices, per_job, slots):
    assert device_slots(devices, per_job) == slots


@pytest.mark.parametrize("devices,per_job,message", [
    ("0,0", 1, "distinct device ids"), ("", 1, "distinct device ids"),
    ("0,1,2", 2, "must divide the 3 devices")])
def test_device_slots_errors(devices, per_job, message):
    with pytest.raises(DasslLiteError, match=message):
        device_slots(devices, per_job)


def test_launch_flag_errors_come_before_any_job(tool):
    r = tool("base2new", "--datasets", TINY_DATASET, "--devices", "0,1")
    assert r.code == 2 and "cannot be used with --launcher inprocess" in r.err
    r = tool("base2new", "--datasets", TINY_DATASET, "--devices", "0,0", launcher="subprocess")
    assert r.code == 2 and "distinct device ids" in r.err
    assert not (tool.out / "base2new").exists()


@pytest.mark.slow
def test_submitit_local_executor_gives_the_in_process_summary(tool, tmp_path):
    flags = ["--datasets", TINY_DATASET, "--shots", "2", "--seeds", "1"]
    stem = os.path.join("base2new", "summary_TinyNet_tiny_trainer_shots2.json")
    inproc = tool("base2new", *flags, "--output-root", str(tmp_path / "inproc"))
    assert inproc.code == 0, inproc.out + inproc.err
    args = [*flags, "--output-root", str(tmp_path / "slurm"), "--submitit-cluster", "local",
            "--time", "5"]
    sub = tool("base2new", *args, launcher="slurm")
    assert sub.code == 0, sub.out + sub.err
    assert sub.out.count("Submitted 1 job(s)") == 2  # training, then the evaluation it feeds
    summaries = [json.loads((tmp_path / d / stem).read_text()) for d in ("inproc", "slurm")]
    for s in summaries:
        del s["wall_time"]
    assert summaries[0] == summaries[1]
    assert summaries[0]["datasets"]["tiny_dataset"]["hm"]["mean"] is not None
    again = tool("base2new", *args, launcher="slurm")
    assert again.code == 0 and "Submitted" not in again.out and again.out.count("skipped") == 2


def test_devices_that_this_machine_lacks_are_named_before_any_job(tool):
    import torch

    r = tool("base2new", "--datasets", TINY_DATASET, "--devices", "98,99", launcher="subprocess")
    assert r.code == 2 and r.err.startswith("error: --devices 98,99: no GPU 98, 99 on this "
                                            "machine; available: ")
    count = torch.cuda.device_count()
    assert (f"available: GPU {', '.join(map(str, range(count)))}" if count
            else "available: no GPU (torch sees no CUDA device)") in r.err
    assert "would run on the CPU" in r.err
    assert not (tool.out / "base2new").exists()


@pytest.mark.parametrize("devices, count, missing", [("0,1", 0, "0, 1"), ("1,2", 2, "2"),
                                                     ("0,x", 4, "x"), ("GPU-1a2b", 0, "GPU-1a2b")])
def test_check_devices_present(devices, count, missing):
    from dassl_lite.protocols.pool import check_devices_present

    with pytest.raises(DasslLiteError, match=f"--devices {devices}: no GPU {missing} on this"):
        check_devices_present(devices, count)
    check_devices_present("0,1", 2)
    check_devices_present("GPU-1a2b", 1)


def test_slurm_launcher_without_submitit_or_sbatch_says_so_in_one_line(tool, monkeypatch,
                                                                        tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    r = tool("base2new", "--datasets", TINY_DATASET, launcher="slurm")
    assert r.code == 2 and r.err == (
        "error: --launcher slurm: no Slurm on this machine (sbatch is not on PATH); run from a "
        "Slurm login node, or use --devices or the default subprocess launcher "
        "(--submitit-cluster local tests the Slurm path without Slurm)\n")
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    r = tool("base2new", "--datasets", TINY_DATASET, launcher="slurm")
    assert r.code == 2 and r.err == ("error: --launcher slurm needs the submitit package, which "
                                     "is not installed (pip install submitit)\n")
    assert not (tool.out / "base2new").exists()
