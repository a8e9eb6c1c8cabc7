"""Apply a trained run to one's own images: top-k classes with probabilities.

A run is the ``--model-dir`` of ``tools/train.py --eval-only``: our ``OUTPUT_DIR`` (its
``config.yaml`` says how to rebuild the trainer) or an upstream CoOp / MaPLe output folder (no
``config.yaml``: give the ``--trainer``, ``--config-file`` and ``--dataset-config-file`` of its
training, as upstream's evaluation does). The trainer is rebuilt through :func:`cli.setup_cfg`,
its weights are loaded by ``load_model`` (which knows both layouts), and each image goes through
the run's test transform and ``model_inference``.

Class names are the rebuilt dataset's, in label order. A run trained by this version records
them in ``OUTPUT_DIR/classnames.json``; when that file exists the two must agree (a dataset that
changed since training would otherwise label every prediction wrongly).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from .cli import build_parser, setup_cfg
from .engine import build_trainer
from .errors import DasslLiteError
from .utils.image import read_image

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "CLASSNAMES_FILE", "collect_images", "load_run",
           "run_classnames", "predict_probabilities", "check_topk", "top_k", "Prediction",
           "format_predictions", "output_format"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CLASSNAMES_FILE = "classnames.json"  # written by a classification run, in label order
FORMATS = ("csv", "json")


def collect_images(inputs: Sequence[str]) -> List[str]:
    """Image files of ``inputs``: files as given, folders searched recursively for
    ``IMAGE_EXTENSIONS`` (any case), sorted per folder; each path once, in input order."""
    found: List[str] = []
    for item in inputs:
        if os.path.isfile(item):
            found.append(item)
        elif os.path.isdir(item):
            images = sorted(os.path.join(d, n) for d, _, names in os.walk(item) for n in names
                            if n.lower().endswith(IMAGE_EXTENSIONS))
            if not images:
                raise DasslLiteError(f"Folder {item} holds no image files (looked for "
                                     f"{', '.join(IMAGE_EXTENSIONS)} in it and its subfolders)")
            found.extend(images)
        else:
            raise DasslLiteError(f"Input {item} does not exist (expected an image file or a "
                                 f"folder of images)")
    return list(dict.fromkeys(found))


def _config_argv(model_dir: str, trainer: str, config_file: str, dataset_config_file: str,
                 root: str, output_dir: str) -> List[str]:
    """``tools/train.py`` arguments rebuilding the run of ``model_dir``."""
    own = os.path.join(model_dir, "config.yaml")
    argv = ["--eval-only", "--model-dir", model_dir, "--output-dir", output_dir]
    if os.path.isfile(own):
        given = [f for f, v in (("--trainer", trainer), ("--config-file", config_file),
                                ("--dataset-config-file", dataset_config_file)) if v]
        if given:
            raise DasslLiteError(
                f"{own} already says how the run was trained; drop {', '.join(given)} (change "
                f"single keys with trailing KEY VALUE options)")
        return argv + ["--config-file", own] + (["--root", root] if root else [])
    if not trainer:
        raise DasslLiteError(
            f"{model_dir} holds no config.yaml (expected the OUTPUT_DIR of tools/train.py). For "
            f"an upstream CoOp/MaPLe run give --trainer, --config-file and --dataset-config-file "
            f"(and the KEY VALUE options) of its training, as for upstream's --eval-only")
    argv += ["--trainer", trainer, "--config-file", config_file,
             "--dataset-config-file", dataset_config_file]
    return argv + (["--root", root] if root else [])


def load_run(model_dir: str, *, load_epoch: Optional[int] = None, trainer: str = "",
             config_file: str = "", dataset_config_file: str = "", root: str = "",
             opts: Sequence[str] = ()):
    """The trainer of the run in ``model_dir`` with its weights loaded (best checkpoint, else
    the latest, or ``load_epoch``). Nothing is written into ``model_dir``: the rebuilt trainer's
    OUTPUT_DIR is a temporary folder, removed before returning."""
    if not os.path.isdir(model_dir):
        raise DasslLiteError(f"--model-dir {model_dir} is not a folder (expected a run's "
                             f"OUTPUT_DIR)")
    with tempfile.TemporaryDirectory(prefix="dassl_lite_predict_") as scratch:
        argv = _config_argv(model_dir, trainer, config_file, dataset_config_file, root, scratch)
        cfg = setup_cfg(build_parser().parse_args([*argv, *opts]))
        try:
            built = build_trainer(cfg)
        except DasslLiteError as e:
            raise DasslLiteError(
                f"Cannot rebuild the run in {model_dir}: its dataset {cfg.DATASET.NAME} (under "
                f"{cfg.DATASET.ROOT or 'DATASET.ROOT'}; --root changes it) gives the class names "
                f"and the model: {e}") from None
        if getattr(built, "task", "classification") != "classification":
            raise DasslLiteError(
                f"{cfg.TRAINER.NAME} is a {built.task} trainer: score images with "
                f"tools/anomaly.py or tools/anomaly_heatmap.py instead")
        if built.get_model_names():
            built.load_model(model_dir, epoch=load_epoch)
        elif load_epoch is not None:
            raise DasslLiteError(f"--load-epoch {load_epoch}: {cfg.TRAINER.NAME} has no "
                                 f"trained weights to pick an epoch of")
    return built


def run_classnames(trainer, model_dir: str) -> List[str]:
    """The class names in label order: the rebuilt dataset's, checked against the run's
    ``classnames.json`` when it has one (older and upstream runs do not)."""
    names = list(trainer.dm.classnames)
    path = os.path.join(model_dir, CLASSNAMES_FILE)
    if not os.path.isfile(path):
        logger.info(f"{model_dir} records no {CLASSNAMES_FILE}: class names from dataset "
                    f"{trainer.cfg.DATASET.NAME} ({len(names)} classes)")
        return names
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError) as e:
        raise DasslLiteError(f"Cannot read {path}: {e}") from None
    if not isinstance(recorded, list) or not all(isinstance(n, str) for n in recorded):
        raise DasslLiteError(f"{path} must be a JSON list of class names; got "
                             f"{type(recorded).__name__}")
    if recorded != names:
        differ = [i for i, (a, b) in enumerate(zip(recorded, names)) if a != b]
        where = (f"label {differ[0]}: {recorded[differ[0]]!r} recorded, {names[differ[0]]!r} now"
                 if differ else f"{len(recorded)} classes recorded, {len(names)} now")
        raise DasslLiteError(
            f"The run was trained on other classes than dataset {trainer.cfg.DATASET.NAME} "
            f"gives now ({where}; {path}); point --root at the data it was trained on")
    return names


@torch.no_grad()
def predict_probabilities(trainer, paths: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Class probabilities [len(paths), n_classes] (softmax of the trainer's logits) of the
    images at ``paths``, each through the run's test transform."""
    transform = trainer.dm.tfm_test
    if isinstance(transform, (list, tuple)):
        raise DasslLiteError("The run uses several test transforms; predicting needs one")
    trainer.set_model_mode("eval")
    trainer.before_test()
    out = []
    try:
        for start in range(0, len(paths), batch_size):
            images = torch.stack([transform(read_image(p))
                                  for p in paths[start:start + batch_size]])
            with trainer.precision.autocast():
                logits = trainer.model_inference(images.to(trainer.device))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        trainer.after_test()
    return torch.cat(out) if out else torch.zeros(0, len(trainer.dm.classnames))


@dataclass
class Prediction:
    """One image's top classes, best first: ``(label, class name, probability)``."""

    image: str
    top: List[tuple]


def check_topk(k: int, num_classes: int) -> None:
    """``--topk`` must lie in 1 .. the run's class count."""
    if not 1 <= k <= num_classes:
        raise DasslLiteError(f"--topk must be between 1 and the run's {num_classes} classes; "
                             f"got {k}")


def top_k(paths: Sequence[str], probs: torch.Tensor, classnames: Sequence[str],
          k: int) -> List[Prediction]:
    """The ``k`` most probable classes of each image."""
    check_topk(k, len(classnames))
    values, labels = probs.topk(k, dim=1)
    return [Prediction(p, [(int(lab), classnames[int(lab)], float(v))
                           for v, lab in zip(vals, labs)])
            for p, vals, labs in zip(paths, values, labels)]


def format_predictions(predictions: Sequence[Prediction], fmt: str,
                       run: Optional[Dict] = None) -> str:
    """CSV (one row per image and rank: ``image,rank,label,class,probability``) or JSON
    (``{"run": {...}, "predictions": [{"image", "top": [{rank, label, class, probability}]}]}``)."""
    if fmt == "json":
        items = [{"image": p.image,
                  "top": [{"rank": r, "label": lab, "class": name, "probability": prob}
                          for r, (lab, name, prob) in enumerate(p.top, 1)]}
                 for p in predictions]
        return json.dumps({"run": run or {}, "predictions": items}, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "rank", "label", "class", "probability"])
    for p in predictions:
        for r, (lab, name, prob) in enumerate(p.top, 1):
            writer.writerow([p.image, r, lab, name, f"{prob:.6f}"])
    return buffer.getvalue()


def output_format(output: str, fmt: str) -> str:
    """``fmt`` if given, else the format named by ``output``'s extension (CSV on stdout)."""
    if fmt:
        return fmt
    if not output or output == "-":
        return "csv"
    ext = os.path.splitext(output)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise DasslLiteError(f"Cannot tell the format of --output {output} from its extension "
                             f"{'.' + ext if ext else '(none)'}: use .csv or .json, or pass "
                             f"--format csv|json")
    return ext
