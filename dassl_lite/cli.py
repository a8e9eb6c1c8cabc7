"""The ``tools/train.py`` command line: upstream flags, checked config setup, clean errors."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence

from .config import apply_config_extenders, get_cfg_default, merge_from_file, merge_from_list
from .errors import DasslLiteError
from .registry import DATASET_REGISTRY, TRAINER_REGISTRY

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Upstream CoOp/MaPLe ``train.py`` flags plus ``--list-*`` and ``--import``."""
    p = argparse.ArgumentParser(description="Train or evaluate a prompt-learning trainer.")
    p.add_argument("--root", type=str, default="", help="path to the dataset root")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="directory to resume training from")
    p.add_argument("--seed", type=int, default=None, help="fixed seed (>= 0); negative: random")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="path to the method config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset config")
    p.add_argument("--trainer", type=str, default="", help="name of the trainer")
    p.add_argument("--backbone", type=str, default="", help="name of the CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of the head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load the model from this directory")
    p.add_argument("--load-epoch", type=int, help="load the weights of this epoch")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("--save-maps", action="store_true",
                   help="anomaly detection: write heatmap overlays to OUTPUT_DIR/maps "
                        "(TEST.ANOMALY.SAVE_MAPS True)")
    p.add_argument("--list-trainers", action="store_true", help="list registered trainers and exit")
    p.add_argument("--list-datasets", action="store_true", help="list registered datasets and exit")
    p.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
        help="import a module (dotted name or .py path) that registers trainers/datasets; repeatable",
    )
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="modify config options using the command line (KEY VALUE pairs)")
    return p


def import_user_module(spec: str) -> None:
    """Import ``spec``: a dotted module name or a path to a ``.py`` file."""
    if spec.endswith(".py") or os.path.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise DasslLiteError(f"--import {spec!r}: no such file ({path})")
        name = "dassl_lite_user_" + os.path.splitext(os.path.basename(path))[0]
        loaded = sys.modules.get(name)
        if loaded is not None and os.path.abspath(getattr(loaded, "__file__", "")) == path:
            return  # already imported (its registrations stand)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        raise DasslLiteError(
            f"--import {spec!r}: module not found ({e}); give a dotted module on PYTHONPATH "
            f"or a path to a .py file"
        ) from None


def reset_cfg(cfg, args) -> None:
    """Apply the CLI flags to ``cfg`` (after the YAML files, before the trailing opts)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if getattr(args, "save_maps", False):
        cfg.TEST.ANOMALY.SAVE_MAPS = True


def setup_cfg(args):
    """defaults + extenders -> dataset YAML -> method YAML -> CLI flags -> opts; frozen."""
    cfg = get_cfg_default()
    apply_config_extenders(cfg)
    if args.dataset_config_file:
        merge_from_file(cfg, args.dataset_config_file)
    if args.config_file:
        merge_from_file(cfg, args.config_file)
    reset_cfg(cfg, args)
    merge_from_list(cfg, args.opts or [])
    if not cfg.TRAINER.NAME:
        raise DasslLiteError(
            "No trainer given: pass --trainer NAME. Registered: " + ", ".join(TRAINER_REGISTRY.names())
        )
    TRAINER_REGISTRY.get(cfg.TRAINER.NAME)  # fail early with the closest name
    cfg.freeze()
    return cfg


def write_config(cfg) -> str:
    from .utils.io import atomic_write_text

    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    atomic_write_text(path, cfg.dump())
    return path


def run(args, notices: Sequence[str] = ()) -> None:
    """Set up config, logging and seeds, then train or evaluate as the flags say. ``notices``
    are logged as warnings once logging (console and ``log.txt``) is set up."""
    from .engine import build_trainer
    from .utils import collect_env_info, set_random_seed, setup_logger

    cfg = setup_cfg(args)
    setup_logger(cfg.OUTPUT_DIR)
    for notice in notices:
        logger.warning(notice)
    if cfg.SEED >= 0:
        logger.info(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    logger.info("** Arguments **\n" + "\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    logger.info("** Config **\n" + cfg.dump())
    logger.info("** System info **\n" + collect_env_info())
    logger.info(f"Config written to {write_config(cfg)}")
    trainer = build_trainer(cfg)
    if args.eval_only:
        if args.model_dir:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
        elif trainer.get_model_names():
            raise DasslLiteError(
                f"--eval-only with {cfg.TRAINER.NAME} needs --model-dir DIR (the run directory "
                f"to evaluate); without it the untrained prompts would be evaluated"
            )
        else:
            logger.info(f"{cfg.TRAINER.NAME} has no trainable weights: nothing to load")
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


def main(argv: Optional[Sequence[str]] = None,
         prepare: Optional[Callable[[argparse.Namespace], Optional[List[str]]]] = None) -> int:
    """Entry point; ``prepare(args)`` may adjust args (e.g. fill in embedded defaults) and return
    notices for the run's log.

    User errors print one ``error:`` line (no traceback) and return 2.
    """
    args = build_parser().parse_args(argv)
    try:
        for spec in args.imports:
            import_user_module(spec)
        if args.list_trainers or args.list_datasets:
            for flag, reg in ((args.list_trainers, TRAINER_REGISTRY),
                              (args.list_datasets, DATASET_REGISTRY)):
                if flag:
                    print("\n".join(reg.names()))
            return 0
        notices = (prepare(args) or []) if prepare is not None else []
        run(args, notices)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


