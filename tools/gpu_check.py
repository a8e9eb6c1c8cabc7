#!/usr/bin/env python
"""Check every registered trainer on CUDA: a few training steps in fp16, amp and bf16, and (with
two or more GPUs) DataParallel and DistributedDataParallel.

    python tools/gpu_check.py [--trainers CoOp MaPLe] [--precisions fp16 amp bf16] [--steps 3]
    python tools/gpu_check.py --compile [--trainers CoOp MaPLe]   # eager vs compiled table

Each trainer runs on the toy world (ToyShapes, generated under --root on first use) with its
toy config. Asserted: every loss is finite, trainable parameters stay float32 (also after the
optimizer steps), amp on GPU has a GradScaler (float16 autocast), the evaluation gives a finite
accuracy. With several GPUs each trainer also trains under DataParallel (amp) and under
``torchrun --nproc_per_node <GPUs> tools/train.py`` (amp). A trainer without trainable weights
(zero-shot CLIP) is evaluated only. What a maintainer runs on a GPU machine; the test suite never
depends on it. Exit status: 0 all passed, 1 some check failed, 2 no CUDA device.
"""
import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers)
from dassl_lite.cli import build_parser, setup_cfg  # noqa: E402
from dassl_lite.engine import build_trainer  # noqa: E402
from dassl_lite.errors import DasslLiteError  # noqa: E402
from dassl_lite.protocols.resolve import resolve_trainer_config  # noqa: E402
from dassl_lite.registry import TRAINER_REGISTRY  # noqa: E402
from dassl_lite.utils import set_random_seed, setup_logger  # noqa: E402

DATASET_CONFIG = os.path.join(ROOT, "configs", "datasets", "toy_shapes.yaml")


def _argv(trainer, args, out, prec, *opts):
    cfg_file = resolve_trainer_config("toy", trainer, os.path.join(ROOT, "configs", "trainers"))
    prec_key = TRAINER_REGISTRY.get(trainer).precision_key
    return ["--trainer", trainer, "--root", args.root, "--seed", "1", "--output-dir", out,
            "--dataset-config-file", DATASET_CONFIG, "--config-file", cfg_file,
            "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1", "USE_CUDA", "True",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch_size),
            *([prec_key, prec] if prec_key else []), *opts]


def _trainable(trainer):
    return [(f"{name}.{n}", p) for name, model in trainer._models.items()
            for n, p in model.named_parameters() if p.requires_grad]


def _check_trainer(trainer, prec, steps, device_type):
    """Steps, dtypes, scaler and an evaluation of a built trainer; raises AssertionError."""
    assert trainer.device.type == device_type, f"ran on {trainer.device}, not {device_type}"
    params = _trainable(trainer)
    if prec == "amp" and device_type == "cuda":
        assert isinstance(trainer.scaler, torch.amp.GradScaler), "amp-fp16 without a GradScaler"
        assert trainer.precision.autocast_dtype == torch.float16, trainer.precision
    losses = []
    if params:
        for i, batch in enumerate(trainer.train_loader_x):
            if i == steps:
                break
            trainer.set_model_mode("train")
            losses.append(trainer.forward_backward(batch)["loss"])
        assert losses and all(math.isfinite(v) for v in losses), f"losses {losses}"
        bad = [n for n, p in params if p.dtype != torch.float32]
        assert not bad, f"trainable parameters not float32: {bad}"
        assert all(torch.isfinite(p).all() for _, p in params), "non-finite trainable parameter"
    accuracy = trainer.test()
    assert math.isfinite(accuracy), f"accuracy {accuracy}"
    return f"losses {', '.join(f'{v:.3f}' for v in losses) or '-'}; accuracy {accuracy:.1f}"


def check_one(trainer_name, prec, args, out, device_type, *opts):
    cfg = setup_cfg(build_parser().parse_args(_argv(trainer_name, args, out, prec, *opts)))
    setup_logger(out)  # the run's log.txt; the console shows warnings only
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    try:
        return _check_trainer(trainer, prec, args.steps, device_type)
    finally:
        trainer.close_writer()


def check_ddp(trainer_name, args, out, n_gpu):
    """``torchrun --nproc_per_node n_gpu tools/train.py`` for one epoch in amp."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={n_gpu}", os.path.join(ROOT, "tools", "train.py"),
           *_argv(trainer_name, args, out, "amp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"exit {r.returncode}: {(r.stdout + r.stderr)[-1500:]}"
    with open(os.path.join(out, "results.json")) as f:
        accuracy = json.load(f)["accuracy"]
    assert math.isfinite(accuracy), f"accuracy {accuracy}"
    return f"{n_gpu} processes; accuracy {accuracy:.1f}"


def _plan(args, n_gpu):
    """(trainer, mode, precision, extra opts) of every check."""
    checks = []
    for name in args.trainers:
        checks += [(name, prec, prec, ("TRAIN.DATA_PARALLEL", "False")) for prec in args.precisions]
        if n_gpu > 1:
            checks.append((name, "DataParallel", "amp", ("TRAIN.DATA_PARALLEL", "True")))
            checks.append((name, "DDP", "amp", ()))
    return checks


def run_checks(args, n_gpu, device_type, work):
    rows, failed = [], 0
    for i, (name, mode, prec, opts) in enumerate(_plan(args, n_gpu)):
        out = os.path.join(work, f"{i:02d}_{name}_{mode}")
        try:
            if mode == "DDP":
                detail = check_ddp(name, args, out, n_gpu)
            else:
                detail = check_one(name, prec, args, out, device_type, *opts)
            status = "PASS"
        except (AssertionError, DasslLiteError, RuntimeError, ValueError) as e:
            status, failed = "FAIL", failed + 1
            detail = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            with open(os.path.join(work, "failures.txt"), "a") as f:
                f.write(f"== {name} {mode}\n{traceback.format_exc()}\n")
        rows.append((name, mode, status, detail))
        print(f"{status} {name:14s} {mode:12s} {detail}", flush=True)
    return rows, failed


def compile_argv(args, device: str):
    """Arguments of ``tools/benchmark.py`` for the eager-vs-compiled table: every trainer's
    training step (eval batch for the training-free ones) at ViT-B/16 shapes, eager and with
    MODEL.COMPILE True interleaved, the first compiled call (compilation) apart, next to its
    limit. On a CPU (``--cpu``) the shapes are cut to 1 layer and batches of 2."""
    argv = ["--only", "limit", "--compile", "--device", device, "--reps", str(args.steps)]
    if args.trainers:
        argv += ["--limit-trainers", *args.trainers]
    return argv + (["--layers", "1", "--limit-batch", "2"] if device == "cpu" else [])


def run_compile_table(args) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark_tool", os.path.join(ROOT, "tools", "benchmark.py"))
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    argv = compile_argv(args, "cpu" if args.cpu else "cuda")
    print("python tools/benchmark.py " + " ".join(argv), flush=True)
    return 0 if args.dry_run else benchmark.main(argv)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainers", nargs="+", default=None, help="default: every registered one")
    p.add_argument("--precisions", nargs="+", default=["fp16", "amp", "bf16"],
                   choices=["fp16", "fp32", "amp", "bf16"])
    p.add_argument("--steps", type=int, default=3, help="training steps per check (default 3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--root", default=os.path.join(os.getcwd(), "data"), help="toy world root")
    p.add_argument("--output-dir", default="", help="keep the runs here (default: a temp dir)")
    p.add_argument("--cpu", action="store_true",
                   help="run the same checks on CPU (tests this tool; fp16 runs as fp32 there)")
    p.add_argument("--compile", action="store_true",
                   help="instead of the checks: time every trainer eager vs MODEL.COMPILE True "
                        "(tools/benchmark.py --only limit --compile; one table)")
    p.add_argument("--dry-run", action="store_true",
                   help="with --compile: print the benchmark command only")
    args = p.parse_args(argv)
    if args.dry_run and not args.compile:
        p.error("--dry-run goes with --compile")
    if args.compile and (args.dry_run or args.cpu or torch.cuda.is_available()):
        return run_compile_table(args)
    if not args.cpu and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device is visible (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}). Run it on a machine with "
              f"a GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    args.trainers = args.trainers or TRAINER_REGISTRY.names()
    n_gpu = 0 if args.cpu else torch.cuda.device_count()
    work = args.output_dir or tempfile.mkdtemp(prefix="gpu_check_")
    gpu = "CPU" if args.cpu else f"{n_gpu} x {torch.cuda.get_device_name(0)}"
    print(f"gpu_check on {gpu}: {len(args.trainers)} trainers x {', '.join(args.precisions)}"
          f"{' + DataParallel + DDP' if n_gpu > 1 else ''}; runs in {work}", flush=True)
    rows, failed = run_checks(args, n_gpu, "cpu" if args.cpu else "cuda", work)
    print(f"\n{len(rows) - failed} of {len(rows)} checks passed"
          + (f"; tracebacks in {os.path.join(work, 'failures.txt')}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
