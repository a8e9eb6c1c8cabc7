"""The ``tools/train.py`` command line: upstream flags, checked config setup, clean errors.

Every error ends here as one ``error:`` block on stderr (exit 2 for input the user can fix, 1 for
anything else, 130 for Ctrl-C with the command that resumes); ``--debug`` or ``DASSL_DEBUG=1``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import shlex
import sys
from typing import Callable, List, Optional, Sequence

from .config import apply_config_extenders, get_cfg_default, merge_from_file, merge_from_list
from .config.bundled import bundled_configs, find_config
from .config.sections import changed_keys, trainer_sections, unread_section_warnings
from .config.validate import validate_cfg
from .engine import build_trainer
from .engine.distributed import init_distributed
from .engine.interrupt import stop_on_interrupt
from .engine.resume import check_resume, check_resume_models
from .errors import DasslLiteError
from .registry import DATASET_REGISTRY, TRAINER_REGISTRY
from .utils import collect_env_info, set_random_seed, setup_logger
from .utils.distributed import check_launch_env, is_main_process
from .utils.io import atomic_write_text

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
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (also: DASSL_DEBUG=1)")

    p.add_argument("--compile", action="store_true",
                   help="torch.compile the frozen CLIP encoders and the prompt learner "
                        "(MODEL.COMPILE True; docs/speed.md)")
    p.add_argument("--save-maps", action="store_true",
                   help="anomaly detection: write heatmap overlays to OUTPUT_DIR/maps "
                        "(TEST.ANOMALY.SAVE_MAPS True)")
    p.add_argument("--list-trainers", action="store_true", help="list registered trainers and exit")
    p.add_argument("--list-datasets", action="store_true", help="list registered datasets and exit")
    add_list_configs_flag(p)
    p.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
        help="import a module (dotted name or .py path) that registers trainers/datasets; repeatable",
    )
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="modify config options using the command line (KEY VALUE pairs)")
    return p


def add_list_configs_flag(p: argparse.ArgumentParser) -> None:
    """``--list-configs [TRAINER]``: print the bundled config files (one of TRAINER's) and exit."""
    p.add_argument("--list-configs", nargs="?", const="*", default=None, metavar="TRAINER",
                   help="list the config files that ship with dassl_lite (all, or TRAINER's) "
                        "and exit; --config-file/--dataset-config-file accept these paths from "
                        "any folder")


def list_configs(trainer: str) -> None:
    """Print the bundled configs (``trainer`` "*": all of them), one ``configs/...`` per line."""
    print("\n".join(bundled_configs("" if trainer == "*" else trainer)))


def list_configs_requested(argv: Sequence[str]) -> Optional[int]:
    """For tools with required flags (the protocol tools): when ``argv`` holds
    ``--list-configs [TRAINER]``, print the bundled configs and return the exit status (2 and
    an ``error:`` line for a trainer without configs); None when not asked."""
    p = argparse.ArgumentParser(add_help=False)
    add_list_configs_flag(p)
    asked, _ = p.parse_known_args(list(argv))
    if asked.list_configs is None:
        return None
    try:
        list_configs(asked.list_configs)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def resolve_config_files(args) -> List[str]:
    """Point ``--config-file``/``--dataset-config-file`` at the bundled file a missing relative
    path names (see :mod:`dassl_lite.config.bundled`); returns one notice per path replaced."""
    notices = []
    for attr, flag in (("dataset_config_file", "--dataset-config-file"),
                       ("config_file", "--config-file")):
        if getattr(args, attr, ""):
            trainer = getattr(args, "trainer", "") if attr == "config_file" else ""
            path, notice = find_config(getattr(args, attr), flag,
                                       trainer if isinstance(trainer, str) else "")
            setattr(args, attr, path)
            notices += [notice] if notice else []
    return notices


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
    if getattr(args, "compile", False):
        cfg.MODEL.COMPILE = True


def setup_cfg(args, notices: Optional[List[str]] = None):
    """defaults + extenders -> dataset YAML -> method YAML -> CLI flags -> opts; frozen.

    Options set in a trainer section that the chosen trainer does not read are warned about:
    appended to ``notices`` when given (the caller logs them), else logged here."""
    for notice in resolve_config_files(args):
        logger.info(notice)
    cfg = get_cfg_default()
    apply_config_extenders(cfg)
    defaults, sources = cfg.clone(), {}
    for path in (args.dataset_config_file, args.config_file):
        if path:
            _merge_noting(cfg, sources, f"config file {path}", merge_from_file, path)
    reset_cfg(cfg, args)
    _merge_noting(cfg, sources, "command line", merge_from_list, args.opts or [])
    if not cfg.TRAINER.NAME:
        raise DasslLiteError(
            "No trainer given: pass --trainer NAME. Registered: " + ", ".join(TRAINER_REGISTRY.names())
        )
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)  # fail early with the closest name
    cfg.freeze()
    validate_cfg(cfg, training=not getattr(args, "eval_only", False))
    for warning in unread_section_warnings(cfg, defaults, cfg.TRAINER.NAME,
                                           trainer_sections(trainer), sources):
        if notices is None:
            logger.warning(warning)
        else:
            notices.append(warning)
    return cfg


def _merge_noting(cfg, sources: dict, source: str, merge: Callable, arg) -> None:
    """``merge(cfg, arg)``, recording ``sources[key] = source`` for each ``TRAINER`` key changed."""
    before = cfg.TRAINER.clone()
    merge(cfg, arg)
    sources.update((key, source) for key in changed_keys(before, cfg.TRAINER, "TRAINER."))


# flag -> the config key it sets; both given with different values is an error
FLAG_KEYS = (("trainer", "--trainer", "TRAINER.NAME"), ("output_dir", "--output-dir", "OUTPUT_DIR"),
             ("root", "--root", "DATASET.ROOT"), ("resume", "--resume", "RESUME"),
             ("seed", "--seed", "SEED"), ("backbone", "--backbone", "MODEL.BACKBONE.NAME"),
             ("head", "--head", "MODEL.HEAD.NAME"))


def check_flags(args) -> None:
    """Refuse flags that would be ignored or that contradict each other or the trailing opts."""
    if args.load_epoch is not None and not args.eval_only:
        raise DasslLiteError(
            f"--load-epoch {args.load_epoch} only applies with --eval-only --model-dir DIR (it "
            f"picks the epoch to evaluate); to continue training use --resume DIR"
        )
    if args.load_epoch is not None and args.load_epoch < 1:
        raise DasslLiteError(f"--load-epoch must be an epoch number >= 1; got {args.load_epoch}")
    if args.model_dir and not args.eval_only:
        raise DasslLiteError(
            f"--model-dir {args.model_dir} only applies with --eval-only (the run to evaluate); "
            f"to continue training use --resume DIR, to start from weights MODEL.INIT_WEIGHTS FILE"
        )
    if args.no_train and not args.eval_only:
        raise DasslLiteError(
            "--no-train without --eval-only would build the trainer and do nothing; add "
            "--eval-only --model-dir DIR to evaluate, or drop --no-train to train"
        )
    if args.eval_only and args.resume:
        raise DasslLiteError(
            f"--resume {args.resume} continues training and --eval-only does not train; to "
            f"evaluate that run use --eval-only --model-dir {args.resume}"
        )
    _check_flags_against_opts(args)


def _check_flags_against_opts(args) -> None:
    opts = list(args.opts or [])
    given = dict(zip(opts[0::2], opts[1::2]))
    for attr, flag, key in FLAG_KEYS:
        value = getattr(args, attr)
        if value in (None, "") or key not in given:
            continue
        if str(value) != str(given[key]).strip("'\""):
            raise DasslLiteError(
                f"{flag} {value} and the option {key} {given[key]} disagree; give only one"
            )


def check_output_dir(cfg) -> None:
    """Refuse an OUTPUT_DIR that is a file, DATASET.ROOT itself, or the dataset's own folder (or
    lies inside it): a run writes log.txt, config.yaml, results.json and model/ there."""
    out = os.path.realpath(os.path.expanduser(cfg.OUTPUT_DIR))
    if os.path.exists(out) and not os.path.isdir(out):
        raise DasslLiteError(f"--output-dir {cfg.OUTPUT_DIR} is a file; a run writes a folder "
                             f"there (nothing was written)")
    root = os.path.realpath(os.path.expanduser(cfg.DATASET.ROOT or "."))
    name = cfg.DATASET.NAME
    sub = getattr(DATASET_REGISTRY.get(name), "dataset_dir", "") if name in DATASET_REGISTRY else ""
    if out == root:
        raise DasslLiteError(f"--output-dir {cfg.OUTPUT_DIR} is the dataset root (--root "
                             f"{cfg.DATASET.ROOT}); a run writes log.txt, config.yaml, "
                             f"results.json and model/ there. Choose a folder of its own "
                             f"(nothing was written)")
    folder = os.path.join(root, sub) if sub else ""
    if folder and (out == folder or out.startswith(folder + os.sep)):
        raise DasslLiteError(f"--output-dir {cfg.OUTPUT_DIR} lies in {name}'s dataset folder "
                             f"{folder}; a run's files would mix with the dataset's. Choose a "
                             f"folder outside it (nothing was written)")


def write_config(cfg) -> str:
    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    if is_main_process():  # under torchrun, rank 0 writes files
        atomic_write_text(path, cfg.dump())
    return path


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at a safe point; carries what the resume message needs."""

    def __init__(self, output_dir: str, checkpoint: Optional[str], where: str) -> None:
        super().__init__(where)
        self.output_dir, self.checkpoint, self.where = output_dir, checkpoint, where


def _train(trainer, cfg) -> None:
    """``trainer.train()`` with Ctrl-C turned into a stop at the next safe point."""
    try:
        with stop_on_interrupt():
            trainer.train()
    except KeyboardInterrupt:
        where = (f"epoch {trainer.epoch + 1}/{trainer.max_epoch}, "
                 f"batch {trainer.batch_idx + 1}/{trainer.num_batches}")
        raise RunInterrupted(cfg.OUTPUT_DIR, trainer.last_checkpoint, where) from None


def run(args, notices: Sequence[str] = (), infos: Sequence[str] = ()) -> None:
    """Set up config, logging and seeds, then train or evaluate as the flags say. ``notices``
    are logged as warnings, ``infos`` as information, once logging (console and ``log.txt``)
    is set up."""
    notices = list(notices)
    cfg = setup_cfg(args, notices)
    check_launch_env()  # stale RANK/WORLD_SIZE: stop before anything is written
    check_output_dir(cfg)
    init_distributed(cfg.USE_CUDA)  # under torchrun: every rank joins before any file is written
    setup_logger(cfg.OUTPUT_DIR)
    for info in infos:
        logger.info(info)
    for notice in notices:
        logger.warning(notice)
    if not args.eval_only:
        check_resume(cfg, explicit=bool(cfg.RESUME))  # before config.yaml is replaced
    if cfg.SEED >= 0:
        logger.info(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    logger.info("** Arguments **\n" + "\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    logger.info("** Config **\n" + cfg.dump())
    logger.info("** System info **\n" + collect_env_info())
    logger.info(f"Config written to {write_config(cfg)}")
    trainer = build_trainer(cfg)
    if not args.eval_only:
        check_resume_models(cfg, trainer.get_model_names())
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
    _train(trainer, cfg)


def debug_enabled(args: Optional[argparse.Namespace] = None) -> bool:
    """``--debug`` or ``DASSL_DEBUG`` set to anything but empty/0: show tracebacks."""
    return bool(getattr(args, "debug", False)) or os.environ.get("DASSL_DEBUG", "") not in ("", "0")


def resume_command(argv: Sequence[str], prog: str, output_dir: Optional[str]) -> str:
    """The command that continues the run: ``--resume OUTPUT_DIR`` (when a checkpoint exists
    and the arguments do not already say ``--resume``) followed by the same arguments."""
    argv = list(argv)
    if output_dir and "--resume" not in argv:
        argv = ["--resume", output_dir, *argv]  # first: trailing KEY VALUE opts end the flags
    return shlex.join([_python_command(), prog, *argv])


def _python_command() -> str:
    """``python`` when that is this interpreter on PATH, else this interpreter's path."""
    import shutil

    found = shutil.which("python")
    if found and os.path.abspath(found) == os.path.abspath(sys.executable):
        return "python"
    return sys.executable


def interrupt_message(e: KeyboardInterrupt, argv: Sequence[str], prog: str) -> str:
    """What Ctrl-C prints: where training stopped, the checkpoint kept, how to resume."""
    if isinstance(e, RunInterrupted) and e.checkpoint:
        return (f"Interrupted (Ctrl-C) at {e.where}. The last checkpoint is kept: "
                f"{e.checkpoint}.\nTo resume, run:\n  "
                + resume_command(argv, prog, e.output_dir))
    stage = f"at {e.where}" if isinstance(e, RunInterrupted) else "before training started"
    return (f"Interrupted (Ctrl-C) {stage}; no checkpoint was written yet (TRAIN.CHECKPOINT_FREQ N "
            f"saves every N epochs). To start again, run:\n  " + resume_command(argv, prog, None))


def _report(e: BaseException, argv: Sequence[str], prog: str) -> int:
    """Print ``e`` as the CLI's one error block; returns the exit status."""
    if isinstance(e, KeyboardInterrupt):
        print(interrupt_message(e, argv, prog), file=sys.stderr)
        return 130
    if isinstance(e, DasslLiteError):
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, OSError) and e.filename:
        print(f"error: cannot use {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"error: {type(e).__name__}: {e}\n(unexpected: rerun with --debug or DASSL_DEBUG=1 "
          f"for the traceback, and report it if the input was valid)", file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None,
         prepare: Optional[Callable[[argparse.Namespace], Optional[List[str]]]] = None) -> int:
    """Entry point; ``prepare(args)`` may adjust args (e.g. fill in embedded defaults) and return
    notices for the run's log.

    Errors print one ``error:`` block (no traceback unless ``--debug``/``DASSL_DEBUG=1``) and
    return 2 (user input), 1 (anything else) or 130 (Ctrl-C, with the resume command).
    """
    raw = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.relpath(sys.argv[0]) if argv is None else "tools/train.py"
    args = build_parser().parse_args(raw)
    try:
        for spec in args.imports:
            import_user_module(spec)
        if args.list_trainers or args.list_datasets or args.list_configs is not None:
            for flag, reg in ((args.list_trainers, TRAINER_REGISTRY),
                              (args.list_datasets, DATASET_REGISTRY)):
                if flag:
                    print("\n".join(reg.names()))
            if args.list_configs is not None:
                list_configs(args.list_configs)
            return 0
        check_flags(args)
        infos = resolve_config_files(args)
        notices = (prepare(args) or []) if prepare is not None else []
        run(args, notices, infos)
    except (Exception, KeyboardInterrupt) as e:
        if debug_enabled(args):
            raise
        return _report(e, raw, prog)
    return 0
