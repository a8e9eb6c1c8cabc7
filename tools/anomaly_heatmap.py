#!/usr/bin/env python
r"""Run an anomaly trainer on one image or a folder and write heatmap overlays.

    python tools/anomaly_heatmap.py --trainer ZeroshotAD --config-file toy \
        --input photo.png --category bottle --output heatmaps/
    python tools/anomaly_heatmap.py --trainer AFCLIP --config-file vit_l14_336_518 \
        --model-dir output/anomaly/train/mvtec/AFCLIP/vit_l14_336_518/seed1 \
        --input my_images/ --category "metal nut" --output heatmaps/ TEST.ANOMALY.MAP_SIGMA 4

Per image: ``<output>/<stem>.png`` (the image with its anomaly map overlaid, at the trainer's
input size; one colour scale, the joint range of all the maps), with ``--save-maps`` the raw
map as ``<stem>.npy``, and one line ``<score> <image>`` in ``scores.txt`` (and on stdout),
highest score first; with ``--threshold VALUE`` (or the ``results.json`` of an evaluation run
made with ``--threshold f1max``) a third field, ``anomalous`` or ``normal``. ``grid.png`` shows
the first 36, each labelled with its file and score, beside a colour bar of the map values.

The output folder must not be, or contain, the input (an image file, or the folder of images):
the overlays are named after the images and would replace them. A new folder, or one inside the
input folder (its images are listed, not its subfolders), is fine.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets, AnomalyImages among them)
import trainers  # noqa: E402,F401  (registers the trainers)
from dassl_lite.cli import add_list_configs_flag, list_configs_requested  # noqa: E402
from dassl_lite.errors import DasslLiteError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", required=True)
    p.add_argument("--config-file", required=True,
                   help="trainer YAML, or a name under configs/trainers/<TRAINER>/ (toy)")
    p.add_argument("--model-dir", default="", help="run directory with the trained weights")
    p.add_argument("--load-epoch", type=int, default=None)
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--category", default="object", help="object name used by the prompts")
    p.add_argument("--output", required=True, help="folder for the overlays")
    p.add_argument("--threshold", default="", metavar="VALUE|RESULTS_JSON",
                   help="add a decision column (anomalous/normal) to scores.txt: a score "
                        "threshold, or the results.json of an evaluation run made with "
                        "--threshold f1max (its threshold for --category)")
    p.add_argument("--save-maps", action="store_true",
                   help="also write each raw map as <output>/<stem>.npy (float32, the "
                        "trainer's input size, smoothed as overlaid)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config options")
    add_list_configs_flag(p)
    return p


def check_output(input_path: str, output: str) -> None:
    """Refuse an ``--output`` that is, or contains, ``--input`` (an image or a folder of them):
    an overlay is named after its image and would replace it; or that is a run's folder."""
    from dassl_lite.engine.checkpoint import run_folder_evidence

    why = run_folder_evidence(output)
    if why:
        raise DasslLiteError(
            f"--output {output} is a run's folder ({why}): the overlays, grid.png, scores.txt "
            f"and log.txt would replace or mix with the run's files. Nothing written; give a "
            f"new folder, e.g. --output {os.path.join(output, 'heatmaps')}")
    src, out = os.path.realpath(input_path), os.path.realpath(output)
    if os.path.commonpath([src, out]) != out:
        return
    folder = input_path if os.path.isdir(src) else os.path.dirname(input_path)
    where = (f"is the input {'folder' if os.path.isdir(src) else 'image'}" if src == out
             else f"contains the input {input_path}")
    raise DasslLiteError(
        f"--output {output} {where}: the overlays (<image name>.png, grid.png, scores.txt, "
        f"log.txt) would overwrite input images. Nothing written; give a new folder, e.g. "
        f"--output {os.path.join(folder, 'heatmaps')}")


def build_trainer(args):
    """The trainer on the AnomalyImages dataset of ``args.input``."""
    from dassl_lite.cli import build_parser as train_parser, setup_cfg
    from dassl_lite.engine import build_trainer as build
    from dassl_lite.protocols.resolve import resolve_trainer_config

    config = resolve_trainer_config(args.config_file, args.trainer,
                                    os.path.join(ROOT, "configs", "trainers"))
    argv = ["--trainer", args.trainer, "--config-file", config, "--root", args.input,
            "--output-dir", args.output, "DATASET.NAME", "AnomalyImages",
            "TEST.EVALUATOR", "AnomalyDetection", "DATALOADER.NUM_WORKERS", "0",
            "DATASET.ANOMALY.CATEGORIES", f"('{args.category.replace(' ', '_')}',)",
            *(args.opts or [])]
    trainer = build(setup_cfg(train_parser().parse_args(argv)))
    if trainer.get_model_names():
        if not args.model_dir:
            raise DasslLiteError(f"{args.trainer} has learned weights: pass --model-dir")
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
    return trainer


def image_threshold(value: str, category: str):
    """None (no decisions), a number, or the threshold a results.json recorded for
    ``category``; ``f1max`` needs labelled images, which a folder of images is not."""
    from dassl_lite.evaluation.anomaly_threshold import (F1MAX, parse_threshold,
                                                         recorded_threshold)

    if value and (value.endswith(".json") or os.path.isfile(value)):
        return recorded_threshold(value, category)
    threshold = parse_threshold(value, "--threshold")
    if threshold == F1MAX:
        raise DasslLiteError("--threshold f1max needs labelled images: evaluate a labelled set "
                             "with tools/anomaly.py --threshold f1max and pass its results.json "
                             "here, or give a number")
    return threshold


def score_images(trainer):
    """(impaths, image scores, maps resized to the input size and smoothed)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from dassl_lite.evaluation.anomaly import smooth_maps

    trainer.set_model_mode("eval")
    paths, scores, maps = [], [], []
    # as trainer.test() does: e.g. few-shot memory banks and cached text features are built here
    trainer.before_test()
    try:
        with torch.no_grad():
            for batch in trainer.test_loader:
                images = batch["img"].to(trainer.device)
                trainer.batch_categories = list(batch["category"])
                with trainer.precision.autocast():
                    out = trainer.model_inference(images)
                amap = out["anomaly_map"].float()
                amap = amap[:, None] if amap.dim() == 3 else amap
                amap = F.interpolate(amap, size=images.shape[-2:], mode="bilinear",
                                     align_corners=False)[:, 0].cpu().numpy()
                maps.append(smooth_maps(amap, trainer.cfg.TEST.ANOMALY.MAP_SIGMA))
                scores += out["image_score"].float().cpu().tolist()
                paths += list(batch["impath"])
    finally:
        trainer.after_test()
    return paths, scores, np.concatenate(maps)


def main(argv=None) -> int:
    import numpy as np

    from dassl_lite.data import read_image
    from dassl_lite.evaluation.anomaly_maps import (GRID_MAX_IMAGES, make_grid, overlay,
                                                    save_png, tile_caption)
    from dassl_lite.evaluation.anomaly_threshold import score_lines, write_scores
    from dassl_lite.utils import setup_logger
    from dassl_lite.utils.io import atomic_write

    listed = list_configs_requested(sys.argv[1:] if argv is None else argv)
    if listed is not None:
        return listed
    args = build_parser().parse_args(argv)
    try:
        check_output(args.input, args.output)
        threshold = image_threshold(args.threshold, args.category.replace(" ", "_"))
        setup_logger(args.output)
        trainer = build_trainer(args)
        paths, scores, maps = score_images(trainer)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lo, hi = float(maps.min()), float(maps.max())  # one colour scale for all the images
    tiles, captions = [], []
    for i in sorted(range(len(paths)), key=lambda i: -scores[i]):
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(paths[i]))[0])
        img = overlay(read_image(paths[i]), maps[i], vmin=lo, vmax=hi)
        save_png(img, stem + ".png")
        if args.save_maps:
            atomic_write(stem + ".npy", lambda f, m=maps[i]: np.save(f, m.astype(np.float32)))
        tiles.append(img)
        captions.append(tile_caption(paths[i], scores[i]))  # no ground truth for own images
    grid = make_grid(tiles[:GRID_MAX_IMAGES], captions=captions[:GRID_MAX_IMAGES],
                     value_range=(lo, hi))
    save_png(grid, os.path.join(args.output, "grid.png"))
    lines = score_lines(paths, scores, None if threshold is None else [threshold] * len(paths))
    write_scores(os.path.join(args.output, "scores.txt"), lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
