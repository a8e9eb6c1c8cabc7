#!/usr/bin/env python
"""The toy-world demo behind ``make demo``: MaPLe base-to-novel, printing Base / New / HM.

On each toy dataset (ToyShapes, ToyTextures, ToySketch) it trains MaPLe on the 32 base classes
(16 shots, seed 1) and evaluates the final checkpoint on the 32 new classes, through
``tools/base2new.py``; zero-shot CLIP runs the same protocol as the reference. It uses the shipped toy CLIP
(``dassl_lite/clip/assets/ToyCLIP.pt``); a checkout without that file first pretrains a quick
toy CLIP (a few hundred steps, a couple of minutes), says so, and runs on that instead.
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "dassl_lite", "clip", "assets", "ToyCLIP.pt")
OUT = os.path.join(ROOT, "output", "demo")
QUICK_STEPS = 300


def run(args):
    print("$ " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def backbone_opts():
    if os.path.isfile(SHIPPED):
        return []
    quick = os.path.join(OUT, "quick_toy_clip.pt")
    if not os.path.isfile(quick):
        print(f"The shipped toy CLIP ({os.path.relpath(SHIPPED, ROOT)}) is not in this checkout: "
              f"pretraining a quick one ({QUICK_STEPS} steps) for the demo.", flush=True)
        run(["tools/pretrain_toy_clip.py", "--steps", str(QUICK_STEPS), "--patch-size", "16",
             "--batch-size", "64", "--out", quick])
    return ["MODEL.BACKBONE.NAME", quick]


def main() -> int:
    start = time.time()
    try:
        opts = backbone_opts()
        run(["tools/base2new.py", "--trainer", "ZeroshotCLIP", "MaPLe", "--config-file", "toy",
             "--benchmark", "toy", "--datasets", "all", "--seeds", "1", "--shots", "16",
             "--root", os.path.join(ROOT, "data"), "--output-root", OUT, *opts])
    except subprocess.CalledProcessError as e:
        return e.returncode
    print(f"Demo finished in {time.time() - start:.0f} s; runs and summary under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
