#!/usr/bin/env python
r"""Write a run's checkpoint in the upstream key layout, so upstream CoOp / MaPLe code loads it.

    python tools/export_checkpoint.py output/oxford_pets/CoOp/vit_b16_16shots/seed1 \
        --out exported/seed1 [--root $DATA] [--epoch N]

The run is rebuilt from its ``config.yaml`` (dataset for the class names, backbone for the
frozen weights), its checkpoint is loaded, and ``OUT/<folder>/model.pth.tar-<epoch>`` is written
with a ``checkpoint`` pointer, as Dassl saves it (``state_dict``, ``epoch``, ``optimizer``,
``scheduler``, ``val_result``):

- CoOp, CoCoOp (``prompt_learner/``): upstream registers the prompt learner, whose state holds
  ``ctx`` (and CoCoOp's ``meta_net.linear1/linear2``) plus the buffers ``token_prefix`` and
  ``token_suffix`` (the SOS and class-name token embeddings, rebuilt here from the class names).
- MaPLe (``MultiModalPromptLearner/``): upstream registers the whole ``CustomCLIP``:
  ``prompt_learner.{ctx, proj, compound_prompts_text.<i>, compound_prompt_projections.<i>,
  token_prefix, token_suffix}``, ``image_encoder.*``, ``text_encoder.{transformer,
  positional_embedding, ln_final, text_projection}`` and ``logit_scale``; our stacked
  ``compound_prompts_text`` becomes upstream's list.

Every key of the upstream module is present, so ``load_state_dict(..., strict=True)`` accepts it.

``--out`` must not be a run's folder: the run itself, or any folder holding a ``config.yaml`` or
training checkpoints (a ``<model>/checkpoint`` pointer to a file with optimizer state, or
``model.pth.tar-N`` files without a pointer) is refused before anything is written, since the
export would replace the run's own ``model.pth.tar-N`` and it could no longer resume. Exporting
again into an earlier export's folder is fine.
"""
import argparse
import os
import sys
import tempfile
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Dict, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the datasets)
import trainers  # noqa: E402,F401  (registers the trainers and their config sections)
from dassl_lite.errors import DasslLiteError  # noqa: E402

if TYPE_CHECKING:  # for the annotations; the functions import torch where they use it
    import torch

State = Dict[str, "torch.Tensor"]


def token_buffers(trainer) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """Upstream's ``token_prefix`` [n_cls, 1, D] and ``token_suffix`` [n_cls, 77 - 1 - n_ctx, D].

    Our prompt learner keeps the prompts only up to the longest EOT (the rest cannot change any
    EOT feature); the positions after it hold the padding token (id 0), whose embedding is
    appended here to give upstream's full context length."""
    import torch

    learner, clip = trainer.model.prompt_learner, trainer.model.clip
    suffix = learner.token_suffix
    missing = clip.context_length - 1 - learner.n_ctx - suffix.shape[1]
    pad = clip.token_embedding.weight[0].to(suffix.dtype).expand(suffix.shape[0], missing, -1)
    return learner.token_prefix, torch.cat([suffix, pad], dim=1)


def _prompt_learner_state(trainer) -> State:
    """Upstream CoOp/CoCoOp ``prompt_learner``: learned tensors plus the token buffers."""
    state = OrderedDict(trainer.model.prompt_learner.state_dict())
    state["token_prefix"], state["token_suffix"] = token_buffers(trainer)
    return state


def _frozen_clip_state(clip) -> State:
    """Upstream ``CustomCLIP``'s frozen parts: ``image_encoder``, ``text_encoder``,
    ``logit_scale``."""
    state = OrderedDict((f"image_encoder.{k}", v) for k, v in clip.visual.state_dict().items())
    state.update((f"text_encoder.transformer.{k}", v)
                 for k, v in clip.transformer.state_dict().items())
    state["text_encoder.positional_embedding"] = clip.positional_embedding
    state.update((f"text_encoder.ln_final.{k}", v) for k, v in clip.ln_final.state_dict().items())
    state["text_encoder.text_projection"] = clip.text_projection
    state["logit_scale"] = clip.logit_scale
    return state


def _maple_state(trainer) -> State:
    """Upstream MaPLe ``CustomCLIP``: prompt learner (deep text prompts as a list) + frozen CLIP."""
    learner = trainer.model.prompt_learner
    state = OrderedDict()
    for key, value in learner.state_dict().items():
        if key == "compound_prompts_text":
            state.update((f"prompt_learner.compound_prompts_text.{i}", t)
                         for i, t in enumerate(value))
        else:
            state[f"prompt_learner.{key}"] = value
    prefix, suffix = token_buffers(trainer)
    state["prompt_learner.token_prefix"], state["prompt_learner.token_suffix"] = prefix, suffix
    state.update(_frozen_clip_state(trainer.model.clip))
    return state


# trainer name -> (upstream checkpoint folder, state in upstream keys)
EXPORTERS: Dict[str, Tuple[str, Callable[[object], State]]] = {
    "CoOp": ("prompt_learner", _prompt_learner_state),
    "CoCoOp": ("prompt_learner", _prompt_learner_state),
    "MaPLe": ("MultiModalPromptLearner", _maple_state),
}


def rebuild(run_dir: str, root: str = "", epoch=None, work_dir: str = ""):
    """The trainer of ``run_dir/config.yaml`` with the run's weights loaded; ``work_dir`` is its
    OUTPUT_DIR (a new temporary folder when empty: the caller removes it)."""
    from dassl_lite.config import apply_config_extenders, get_cfg_default, merge_from_file
    from dassl_lite.engine import build_trainer

    config = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config):
        raise DasslLiteError(f"{run_dir} holds no config.yaml: expected the OUTPUT_DIR of a run "
                             f"made by tools/train.py")
    cfg = get_cfg_default()
    apply_config_extenders(cfg)
    merge_from_file(cfg, config)
    if cfg.TRAINER.NAME not in EXPORTERS:
        raise DasslLiteError(f"No upstream layout for trainer {cfg.TRAINER.NAME!r}; exportable: "
                             f"{', '.join(EXPORTERS)}")
    if root:
        cfg.DATASET.ROOT = root
    cfg.OUTPUT_DIR = work_dir or tempfile.mkdtemp(prefix="dassl_lite_export_")
    cfg.freeze()
    trainer = build_trainer(cfg)
    trainer.load_model(run_dir, epoch=epoch)
    return trainer


def export(trainer) -> Tuple[str, State]:
    """(upstream folder, upstream-key state on the CPU) of a built trainer."""
    folder, state_of = EXPORTERS[trainer.cfg.TRAINER.NAME]
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in state_of(trainer).items())
    return folder, state


def check_out_dir(out_dir: str, run_dir: str) -> None:
    """Refuse an ``--out`` that is a run's folder (see the module docstring); names the file that
    shows it."""
    from dassl_lite.engine.checkpoint import run_folder_evidence

    out, run = os.path.realpath(out_dir), os.path.realpath(run_dir)
    why = "it is the run being exported" if out == run else run_folder_evidence(out_dir)
    if why:
        raise DasslLiteError(
            f"--out {out_dir} is a run's folder ({why}): exporting there would replace the run's "
            f"own model.pth.tar-N and the run could no longer resume. Give a new folder, e.g. "
            f"--out {os.path.join(out_dir, 'upstream')}")


def write_upstream_checkpoint(out_dir: str, folder: str, state: State, epoch: int) -> str:
    """``out_dir/folder/model.pth.tar-<epoch>`` and its ``checkpoint`` pointer, as Dassl writes
    them; returns the checkpoint path."""
    from dassl_lite.utils.io import atomic_torch_save, atomic_write_text

    name = f"model.pth.tar-{epoch}"
    path = os.path.join(out_dir, folder, name)
    atomic_torch_save({"state_dict": state, "epoch": epoch, "optimizer": None,
                       "scheduler": None, "val_result": None}, path)
    atomic_write_text(os.path.join(out_dir, folder, "checkpoint"), name + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="OUTPUT_DIR of a tools/train.py run (holds config.yaml)")
    p.add_argument("--out", required=True,
                   help="folder receiving <upstream folder>/model.pth.tar-N")
    p.add_argument("--root", default="", help="dataset root (default: the run's DATASET.ROOT)")
    p.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default: latest)")
    args = p.parse_args(argv)
    try:
        check_out_dir(args.out, args.run_dir)
        with tempfile.TemporaryDirectory(prefix="dassl_lite_export_") as work:
            trainer = rebuild(args.run_dir, args.root, args.epoch, work_dir=work)
            folder, state = export(trainer)
            path = write_upstream_checkpoint(args.out, folder, state, trainer.model_epoch)
    except DasslLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {path} ({len(state)} tensors, upstream {trainer.cfg.TRAINER.NAME} layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
