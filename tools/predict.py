#!/usr/bin/env python
r"""Classify your own images with a trained run: top-k classes with probabilities.

    python tools/predict.py --model-dir output/toy_shapes/CoOp/toy_16shots/seed1 \
        photos/ cat.jpg --topk 3 --output predictions.csv
    dassl-predict --model-dir RUN photos/ --output predictions.json [--load-epoch N] \
        [--root DATA] [KEY VALUE ...]
    # an upstream CoOp/MaPLe output folder (no config.yaml): its training's flags
    dassl-predict --model-dir output/base2new/.../seed1 --load-epoch 5 --trainer MaPLe \
        --config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml \
        --dataset-config-file configs/datasets/imagenet.yaml --root DATA photos/ \
        --output preds.csv DATASET.SUBSAMPLE_CLASSES base

Inputs are image files or folders (searched recursively for .png .jpg .jpeg .bmp .tif .tiff
.webp). The run is rebuilt from its config (the dataset gives the class names, so its data must
be under the run's DATASET.ROOT or --root); nothing is written into the run's folder.
``--output FILE`` is written atomically as CSV (``image,rank,label,class,probability``, one row
per image and rank) or JSON, chosen by its extension or ``--format``; without it CSV goes to
stdout. An existing file is replaced only with ``--overwrite``, and never when it is an input.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers and their config sections)
from dassl_lite.errors import DasslLiteError  # noqa: E402
from dassl_lite.predict import (FORMATS, check_topk, collect_images,  # noqa: E402
                                format_predictions, load_run, output_format, predict_probabilities,
                                run_classnames, top_k)
from dassl_lite.utils.io import atomic_write_text  # noqa: E402

DEFAULT_TOPK = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders of images (searched recursively)")
    p.add_argument("--model-dir", required=True, help="the run: OUTPUT_DIR of tools/train.py "
                   "or an upstream CoOp/MaPLe output folder")
    p.add_argument("--load-epoch", type=int, default=None,
                   help="checkpoint epoch (default: model-best.pth.tar, else the latest)")
    p.add_argument("--topk", type=int, default=None,
                   help=f"classes per image (default {DEFAULT_TOPK}, or all when fewer)")
    p.add_argument("--output", default="", help="file to write (.csv or .json); default stdout")
    p.add_argument("--format", choices=FORMATS, default="",
                   help="output format (default: from --output's extension)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--root", default="", help="dataset root (default: the run's DATASET.ROOT)")
    up = p.add_argument_group("runs without config.yaml (upstream layout)")
    up.add_argument("--trainer", default="")
    up.add_argument("--config-file", default="")
    up.add_argument("--dataset-config-file", default="")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config options, as trailing KEY VALUE pairs of tools/train.py")
    return p


def check_output(output: str, images, overwrite: bool) -> None:
    """Refuse an output that is one of the inputs, a folder, or (without --overwrite) an
    existing file."""
    if not output or output == "-":
        return
    real = os.path.realpath(output)
    if real in {os.path.realpath(p) for p in images}:
        raise DasslLiteError(f"--output {output} is one of the input images; write the "
                             f"predictions to a new file")
    if os.path.isdir(output):
        raise DasslLiteError(f"--output {output} is a folder; give a file name (.csv or .json)")
    if os.path.exists(output) and not overwrite:
        raise DasslLiteError(f"--output {output} exists; pass --overwrite to replace it or "
                             f"choose a new name")


def main(argv=None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        fmt = output_format(args.output, args.format)
        images = collect_images(args.inputs)
        check_output(args.output, images, args.overwrite)
        trainer = load_run(args.model_dir, load_epoch=args.load_epoch, trainer=args.trainer,
                           config_file=args.config_file,
                           dataset_config_file=args.dataset_config_file, root=args.root,
                           opts=args.opts)
        classnames = run_classnames(trainer, args.model_dir)
        topk = args.topk if args.topk is not None else min(DEFAULT_TOPK, len(classnames))
        check_topk(topk, len(classnames))
        probs = predict_probabilities(trainer, images, args.batch_size)
        predictions = top_k(images, probs, classnames, topk)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = {"model_dir": args.model_dir, "trainer": trainer.cfg.TRAINER.NAME,
           "dataset": trainer.cfg.DATASET.NAME, "epoch": getattr(trainer, "model_epoch", None),
           "num_classes": len(classnames)}
    text = format_predictions(predictions, fmt, run)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
        print(f"Wrote {args.output} ({len(predictions)} images, top {topk}, {fmt})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
