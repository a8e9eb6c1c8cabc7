#!/usr/bin/env python
"""Pretrain the toy world's supervised ViT (``ToyViT``): the stand-in for ImageNet-21k ViT-B/16.

    python tools/pretrain_toy_vit.py --seed 0 --threads 2

The model is a timm ``VisionTransformer`` of ``ARCHS["ToyViT"]`` (64 px, patch 16, width 192,
4 blocks, 3 heads) trained on label sets that differ from the downstream one, as ImageNet-21k
differs from CUB: two linear heads on the class token, the **colour** (8 classes) and the
**shape** (8 classes) of the object, summed cross-entropy, over all three rendering domains. The
toy datasets ask for colour x shape (64 classes): the frozen class token knows both parts, and
the conjunction (which class a colour and a shape make, and the base/new split's classes) has to
be learned on top by prompts or a head. Images come from ``datasets.toy_generator.render`` with
sample indices from ``PRETRAIN_INDEX_START`` up, so no image of a dataset split is ever seen.

A fixed pool of images is rendered once (uint8); batches are drawn from it with a seeded
generator and random horizontal flips. Held-out images (further indices of every domain and
class) give the colour and shape top-1. With a fixed ``--threads`` the weights are reproducible
bit for bit (the load of the machine changes the wall time only). The result is a timm-layout
state dict (float32, no pretraining heads), written atomically to ``--out`` (default: the
shipped ``dassl_lite/backbones/assets/ToyViT.pt``), with a provenance record beside it (same
name, ``.json``): command, versions, git revision, config, wall time, the machine's load, and
the held-out colour and shape top-1 (overall and per domain).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # datasets/ is a repository-root package

from dassl_lite.backbones import ARCHS, ASSETS_DIR, build_timm_vit  # noqa: E402
from dassl_lite.utils.env import git_revision  # noqa: E402
from dassl_lite.utils.io import atomic_torch_save, atomic_write_json  # noqa: E402
from datasets.toy_generator import (CLASSNAMES, COLOURS, DOMAINS,  # noqa: E402
                                    PRETRAIN_INDEX_START, SHAPES, class_parts, render)

logger = logging.getLogger("pretrain_toy_vit")

DEFAULT_OUT = str(ASSETS_DIR / "ToyViT.pt")
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics (dassl_lite's INPUT.PIXEL_MEAN default)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining data and schedule (AdamW, linear warmup, cosine decay)."""

    per_class: int = 192  # training pool images per (domain, colour x shape class)
    held_out: int = 8  # further images per (domain, class), never trained on: the accuracies
    steps: int = 6000
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05  # on matrices only (not on norms, biases, tokens, positions)
    warmup_steps: int = 150
    seed: int = 0


def part_labels(label: int) -> Tuple[int, int]:
    """The pretraining labels of toy class ``label``: (colour index, shape index)."""
    colour, shape = class_parts(label)
    return list(COLOURS).index(colour), SHAPES.index(shape)


def render_pool(cfg: TrainConfig, size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images [N,3,H,W], (colour, shape) labels [N,2], held-out mask [N]).

    Image ``i`` of (domain ``d``, class ``label``) has sample index
    ``PRETRAIN_INDEX_START + (d * 64 + label) * (per_class + held_out) + i``; the first
    ``held_out`` of each are held out."""
    images, labels, held = [], [], []
    n = cfg.per_class + cfg.held_out
    for d, domain in enumerate(DOMAINS):
        for label in range(len(CLASSNAMES)):
            for i in range(n):
                index = PRETRAIN_INDEX_START + (d * len(CLASSNAMES) + label) * n + i
                images.append(np.asarray(render(domain, label, index, seed=cfg.seed, size=size)))
                labels.append(part_labels(label))
                held.append(i < cfg.held_out)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels), torch.tensor(held)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float, ImageNet mean/std (what the toy configs' ``normalize`` does)."""
    x = x.float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


class PartHeads(torch.nn.Module):
    """Two linear heads on the class token: colour (8) and shape (8) logits."""

    def __init__(self, width: int):
        super().__init__()
        self.colour = torch.nn.Linear(width, len(COLOURS))
        self.shape = torch.nn.Linear(width, len(SHAPES))

    def forward(self, feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.colour(feats), self.shape(feats)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))


def make_optimizer(params: List[Tuple[str, torch.nn.Parameter]],
                   cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (timm's rule: 1-D parameters, the class
    token and the positional embedding are not decayed)."""
    decay, no_decay = [], []
    for name, p in params:
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def train(model: torch.nn.Module, heads: PartHeads, x: torch.Tensor, y: torch.Tensor,
          cfg: TrainConfig, held_out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
          eval_every: int = 0) -> None:
    """``cfg.steps`` AdamW steps of colour CE + shape CE on seeded batches of (x, y), random
    horizontal flips (a flipped image keeps its colour and shape). With ``eval_every`` > 0 the
    held-out accuracies are logged every that many steps (the weights do not change)."""
    params = list(model.named_parameters()) + list(heads.named_parameters())
    opt = make_optimizer(params, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        batch = normalise(x[idx])
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        colour_logits, shape_logits = heads(model(batch))
        loss = F.cross_entropy(colour_logits, y[idx, 0]) + F.cross_entropy(shape_logits, y[idx, 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            logger.info("step %d/%d loss %.4f lr %.2e", step + 1, cfg.steps, loss.item(),
                        lr_at(step, cfg))
        if eval_every > 0 and held_out is not None and (step + 1) % eval_every == 0:
            acc = accuracies(model, heads, *held_out)
            model.train()
            logger.info("step %d held-out top-1: colour %.2f%%, shape %.2f%%", step + 1,
                        acc["colour"], acc["shape"])


@torch.no_grad()
def accuracies(model, heads, x, y) -> Dict[str, float]:
    """Top-1 (%) of the colour head, the shape head, and both right at once."""
    model.eval()
    preds = [torch.stack([logits.argmax(1) for logits in heads(model(normalise(x[i:i + 512])))], 1)
             for i in range(0, len(x), 512)]
    right = torch.cat(preds) == y
    return {"colour": right[:, 0].float().mean().item() * 100,
            "shape": right[:, 1].float().mean().item() * 100,
            "both": right.all(1).float().mean().item() * 100}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--per-class", type=int, default=TrainConfig.per_class,
                   help="training pool images per (domain, class)")
    p.add_argument("--held-out", type=int, default=TrainConfig.held_out,
                   help="held-out images per (domain, class), for the accuracies")
    p.add_argument("--eval-every", type=int, default=0,
                   help="log the held-out accuracies every N steps (0: only at the end)")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    for name in ("threads", "steps", "batch_size", "per_class", "held_out"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    if not args.lr > 0:
        p.error(f"--lr must be positive; got {args.lr}")
    return args


def run(args: argparse.Namespace, command: str) -> Dict:
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      per_class=args.per_class, held_out=args.held_out,
                      warmup_steps=min(TrainConfig.warmup_steps, args.steps // 10))
    arch = ARCHS["ToyViT"]
    start, load_start = time.time(), _loadavg()
    x, y, held = render_pool(cfg, arch.image_size)
    torch.manual_seed(cfg.seed)
    model = build_timm_vit(arch, arch.image_size)
    heads = PartHeads(arch.width)
    train(model, heads, x[~held], y[~held], cfg, (x[held], y[held]), args.eval_every)
    n_domain = len(x) // len(DOMAINS)  # the pool is ordered by domain
    per_domain = {}
    for d, domain in enumerate(DOMAINS):
        part = slice(d * n_domain, (d + 1) * n_domain)
        mask = held[part]
        per_domain[domain] = {k: round(v, 2) for k, v in
                              accuracies(model, heads, x[part][mask], y[part][mask]).items()}
    acc = accuracies(model, heads, x[held], y[held])
    atomic_torch_save(model.state_dict(), args.out)
    import timm

    record = {"command": command, "seed": cfg.seed, "threads": args.threads,
              "git_revision": git_revision(ROOT), "torch": torch.__version__,
              "timm": timm.__version__, "arch": asdict(arch), "train": asdict(cfg),
              "pretraining_labels": f"colour ({len(COLOURS)} classes) and shape ({len(SHAPES)} "
                                    "classes), two linear heads, summed cross-entropy",
              "held_out_images": int(held.sum()),
              "held_out_colour_top1": round(acc["colour"], 2),
              "held_out_shape_top1": round(acc["shape"], 2),
              "held_out_both_top1": round(acc["both"], 2),
              "held_out_top1_per_domain": per_domain,
              "wall_time_s": round(time.time() - start, 1),
              "load_average_1min_start_end": [load_start, _loadavg()],
              "file_size_bytes": os.path.getsize(args.out)}
    atomic_write_json(os.path.splitext(args.out)[0] + ".json", record)
    logger.info("held-out top-1: colour %.2f%%, shape %.2f%%, both %.2f%%; wrote %s",
                acc["colour"], acc["shape"], acc["both"], args.out)
    return record


def _loadavg() -> Optional[float]:
    """The 1-minute load average (None where the platform has none): the machine's load."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), "python tools/pretrain_toy_vit.py " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
