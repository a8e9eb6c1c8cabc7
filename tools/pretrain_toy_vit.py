#!/usr/bin/env python
"""Pretrain the toy world's supervised ViT (``ToyViT``): the stand-in for ImageNet-21k ViT-B/16.

    python tools/pretrain_toy_vit.py --seed 0 --threads 2

The model is a timm ``VisionTransformer`` of ``ARCHS["ToyViT"]`` (64 px, patch 16, width 128,
4 blocks, 2 heads) trained with cross-entropy on a label set that differs from the downstream
one, as ImageNet-21k differs from CUB: the **shape** of the object (8 classes), over all three
rendering domains. The toy datasets ask for colour x shape (64 classes), so a frozen class token
knows shapes well and colours only as far as they survive shape training; that gap is what
prompts (or a linear head) have to bridge. Images come from ``datasets.toy_generator.render`` with
sample indices from ``PRETRAIN_INDEX_START`` up, so no image of a dataset split is ever seen.

A fixed pool of images is rendered once; batches are drawn from it with a seeded generator and
random horizontal flips. With a fixed ``--threads`` the weights are reproducible bit for bit.
The result is a timm-layout state dict (float32, no classifier head), written atomically to
``--out`` (default: the shipped ``dassl_lite/backbones/assets/ToyViT.pt``), with a provenance
record beside it (same name, ``.json``): command, versions, config, wall time and the shape
accuracy on held-out images.
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
from dassl_lite.utils.io import atomic_torch_save, atomic_write_json  # noqa: E402
from datasets.toy_generator import (CLASSNAMES, DOMAINS, PRETRAIN_INDEX_START, SHAPES,  # noqa: E402
                                    class_parts, render)

logger = logging.getLogger("pretrain_toy_vit")

DEFAULT_OUT = str(ASSETS_DIR / "ToyViT.pt")
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics (dassl_lite's INPUT.PIXEL_MEAN default)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining schedule (AdamW, linear warmup, cosine decay)."""

    per_class: int = 24  # pool images per (domain, colour x shape class)
    held_out: int = 4  # of those, per (domain, class), kept for the shape accuracy
    steps: int = 1500
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 30
    seed: int = 0


def shape_label(label: int) -> int:
    """The pretraining label of toy class ``label``: its shape index."""
    return SHAPES.index(class_parts(label)[1])


def render_pool(cfg: TrainConfig, size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised images [N,3,H,W], shape labels [N], held-out mask [N])."""
    images, labels, held = [], [], []
    for d, domain in enumerate(DOMAINS):
        for label in range(len(CLASSNAMES)):
            for i in range(cfg.per_class):
                index = PRETRAIN_INDEX_START + (d * len(CLASSNAMES) + label) * cfg.per_class + i
                images.append(np.asarray(render(domain, label, index, seed=cfg.seed, size=size)))
                labels.append(shape_label(label))
                held.append(i < cfg.held_out)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, torch.tensor(labels), torch.tensor(held)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))


def train(model: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor,
          cfg: TrainConfig) -> None:
    """``cfg.steps`` AdamW steps of cross-entropy on seeded batches of (x, y), random flips."""
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), x[idx].flip(-1), x[idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = F.cross_entropy(head(model(batch)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            logger.info("step %d/%d loss %.4f lr %.2e", step + 1, cfg.steps, loss.item(),
                        lr_at(step, cfg))


@torch.no_grad()
def accuracy(model, head, x, y) -> float:
    model.eval()
    pred = torch.cat([head(model(x[i:i + 512])).argmax(1) for i in range(0, len(x), 512)])
    return (pred == y).float().mean().item() * 100


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--out", default=DEFAULT_OUT)
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> Dict:
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size)
    arch = ARCHS["ToyViT"]
    start = time.time()
    x, y, held = render_pool(cfg, arch.image_size)
    torch.manual_seed(cfg.seed)
    model = build_timm_vit(arch, arch.image_size)
    head = torch.nn.Linear(arch.width, len(SHAPES))
    train(model, head, x[~held], y[~held], cfg)
    acc = accuracy(model, head, x[held], y[held])
    atomic_torch_save(model.state_dict(), args.out)
    import timm

    record = {"command": command, "seed": cfg.seed, "threads": args.threads,
              "torch": torch.__version__, "timm": timm.__version__, "arch": asdict(arch),
              "train": asdict(cfg), "pretraining_labels": f"shape ({len(SHAPES)} classes)",
              "held_out_shape_top1": round(acc, 2), "wall_time_s": round(time.time() - start, 1),
              "file_size_bytes": os.path.getsize(args.out)}
    atomic_write_json(os.path.splitext(args.out)[0] + ".json", record)
    logger.info("held-out shape accuracy %.2f%%; wrote %s", acc, args.out)
    return record


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), "python tools/pretrain_toy_vit.py " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
