#!/usr/bin/env python
"""Pretrain the toy world's CLIP (``ToyCLIP``) contrastively on generated image-caption pairs.

    python tools/pretrain_toy_clip.py --seed 0 --threads 2 --eval

The model has OpenAI's architecture (``dassl_lite.clip``: ViT image tower, causal text
transformer, the real BPE tokenizer with a 77-token context and 49408-token vocabulary), trained
with CLIP's symmetric InfoNCE loss and learnable ``logit_scale``. Images come from
``datasets.toy_generator.render`` with sample indices from ``PRETRAIN_INDEX_START`` up, so no
image of any dataset split is ever seen. Captions are web-like and noisy (see ``CaptionConfig``).
The data stream of step ``s`` is a pure function of ``(seed, s)``; with a fixed ``--threads`` the
weights are reproducible bit for bit.

The result is a plain ``torch.save`` dict in OpenAI's state-dict format (fp16, like OpenAI's
checkpoints), written atomically to ``--out`` (default: the shipped
``dassl_lite/clip/assets/ToyCLIP.pt``, which ``load_clip("ToyCLIP")`` reads), plus a provenance
record beside it (same name, ``.json``). ``--eval`` then measures the zero-shot top-1 of the
saved checkpoint on the test split of each toy dataset (generated under ``--root`` if missing).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from collections import deque
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

# On a shared machine, OpenMP threads that spin while waiting slow a 2-thread run down several
# times; passive waiting costs little when the cores are free. Effective only before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # datasets/ is a repository-root package

from dassl_lite.clip import CLIP, CLIPConfig, load_clip, tokenize  # noqa: E402
from dassl_lite.clip.loader import ASSETS_DIR  # noqa: E402
from dassl_lite.clip.model import default_heads  # noqa: E402
from datasets.toy_generator import (CLASSNAMES, DOMAIN_TEMPLATES, DOMAINS,  # noqa: E402
                                    PRETRAIN_INDEX_START, TEMPLATES, class_parts, render)

logger = logging.getLogger("pretrain_toy_clip")

DEFAULT_OUT = str(ASSETS_DIR / "ToyCLIP.pt")
ZERO_SHOT_TEMPLATE = "a photo of a {}."  # CoOp's default prompt; also the toy ZeroshotCLIP's
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NUM_BASE = len(CLASSNAMES) // 2  # labels below this are the base classes (base-to-novel split)
# Web-like wording around a class or part name, and trailing noise words.
COLOUR_PHRASES = ("a {} shape.", "a {} thing.", "something {}.", "a photo of something {}.",
                  "{} colour.")
EXTRA_WORDS = (" on a table", " , clip art", " , free download", " in a box", " , hd",
               " for sale", " , stock image", " icon")

@dataclass(frozen=True)
class ArchConfig:
    """Toy CLIP dimensions (OpenAI's ViT CLIP; heads are width // 64 as ``build_model`` infers)."""

    image_resolution: int = 64  # input side in pixels
    patch_size: int = 16  # ViT patch side (4 x 4 patches: 4x cheaper on CPU than 8)
    vision_width: int = 192  # ViT width
    vision_layers: int = 4  # ViT depth
    text_width: int = 128  # text transformer width (token embedding 49408 x width)
    text_layers: int = 4  # text transformer depth
    embed_dim: int = 128  # joint embedding size
    context_length: int = 77  # text positions (OpenAI's)
    vocab_size: int = 49408  # BPE vocabulary (OpenAI's)

    def clip_config(self) -> CLIPConfig:
        """The ``dassl_lite.clip`` config of this architecture."""
        return CLIPConfig(
            embed_dim=self.embed_dim, image_resolution=self.image_resolution,
            vision_layers=self.vision_layers, vision_width=self.vision_width,
            vision_patch_size=self.patch_size, vision_heads=default_heads(self.vision_width),
            context_length=self.context_length, vocab_size=self.vocab_size,
            transformer_width=self.text_width, transformer_heads=default_heads(self.text_width),
            transformer_layers=self.text_layers)


@dataclass(frozen=True)
class CaptionConfig:
    """How captions are drawn (probabilities of each kind; the rest are full class captions)."""

    colour_only: float = 0.05  # only the colour ("a red thing.")
    shape_only: float = 0.05  # only the shape, in a template ("a photo of a star.")
    wrong: float = 0.02  # the caption of a random class (mismatched alt text)
    # Full captions use a generic template (TEMPLATES, "a photo of a {}." among them) or one of
    # the image's domain. Like web photos of a thing that are mostly drawings of one kind, the
    # generic captions of each class come mostly from its typical domain (``typical_domain``):
    generic_typical: float = 0.8  # P(generic template) for an image in its class's typical domain
    generic_other: float = 0.1  # P(generic template) for an image in another domain
    extra_words: float = 0.1  # append a noise phrase (" , clip art")


@dataclass(frozen=True)
class DataConfig:
    """The pretraining image stream."""

    domain_weights: Tuple[float, ...] = (0.4, 0.3, 0.3)  # sampling weight per DOMAINS entry
    new_class_weight: float = 1.0  # sampling weight of the new classes (labels 32-63) vs base
    captions: CaptionConfig = field(default_factory=CaptionConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (AdamW with linear warmup then cosine decay, as CLIP)."""

    steps: int = 3500
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1  # on matrices only, not on gains, biases, embeddings, logit_scale
    warmup_steps: int = 75
    seed: int = 0


# ---------------------------------------------------------------- data

def typical_domain(label: int) -> str:
    """The domain most generic captions of class ``label`` come from (the classes take turns)."""
    return DOMAINS[label % len(DOMAINS)]


def caption(label: int, domain: str, rng: np.random.Generator, cfg: CaptionConfig) -> str:
    """One web-like caption of an image of class ``label`` in ``domain``."""
    colour, shape = class_parts(label)
    u = rng.uniform()
    if u < cfg.wrong:
        label = int(rng.integers(len(CLASSNAMES)))
        text = TEMPLATES[rng.integers(len(TEMPLATES))].format(CLASSNAMES[label])
    elif u < cfg.wrong + cfg.colour_only:
        text = COLOUR_PHRASES[rng.integers(len(COLOUR_PHRASES))].format(colour)
    elif u < cfg.wrong + cfg.colour_only + cfg.shape_only:
        text = TEMPLATES[rng.integers(len(TEMPLATES))].format(shape)
    else:
        typical = domain == typical_domain(label)
        generic = rng.uniform() < (cfg.generic_typical if typical else cfg.generic_other)
        pool = TEMPLATES if generic else DOMAIN_TEMPLATES[domain]
        text = pool[rng.integers(len(pool))].format(f"{colour} {shape}")
    if rng.uniform() < cfg.extra_words:
        text = text[:-1] + EXTRA_WORDS[rng.integers(len(EXTRA_WORDS))] + "."
    return text


def to_tensor(images: Sequence, resolution: int) -> torch.Tensor:
    """PIL images (or uint8 HxWx3 arrays) -> [B, 3, R, R] float tensor with CLIP's
    preprocessing: bicubic resize to ``resolution`` when needed, then CLIP's mean/std."""
    from PIL import Image

    arrays = []
    for img in images:
        img = Image.fromarray(img) if isinstance(img, np.ndarray) else img.convert("RGB")
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.BICUBIC)
        arrays.append(np.asarray(img))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class PairSampler:
    """Draws the image-caption pairs of one training step; a pure function of ``(seed, step)``.

    Every image is new: sample indices ``PRETRAIN_INDEX_START + step * batch_size + j``.
    """

    data: DataConfig
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if len(self.data.domain_weights) != len(DOMAINS):
            raise ValueError(f"domain_weights needs one weight per domain {DOMAINS}; "
                             f"got {self.data.domain_weights}")

    def __call__(self, step: int) -> Tuple[np.ndarray, List[str]]:
        """Images (uint8 [B, 64, 64, 3]) and captions of training step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        w = np.asarray(self.data.domain_weights, dtype=float)
        domains = rng.choice(len(DOMAINS), size=self.batch_size, p=w / w.sum())
        cw = np.where(np.arange(len(CLASSNAMES)) < NUM_BASE, 1.0, self.data.new_class_weight)
        labels = rng.choice(len(CLASSNAMES), size=self.batch_size, p=cw / cw.sum())
        first = PRETRAIN_INDEX_START + step * self.batch_size
        images, texts = [], []
        for j, (d, label) in enumerate(zip(domains, labels)):
            images.append(np.asarray(render(DOMAINS[d], int(label), first + j, seed=self.seed)))
            texts.append(caption(int(label), DOMAINS[d], rng, self.data.captions))
        return np.stack(images), texts


class PairStream:
    """Training batches (images, caption tokens) from a ``PairSampler``; ``workers`` processes
    render ahead of the training loop (same batches as without them)."""

    def __init__(self, sampler: PairSampler, resolution: int, context_length: int):
        self.sampler, self.resolution, self.context_length = sampler, resolution, context_length

    def tokens(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of ``texts``. Not cached across steps: a cache of small token tensors that
        grows between each step's multi-MB buffers fragmented glibc's heap (the process grew
        by ~2 MB per step, 24 GB by step 3000); tokenizing 128 captions costs ~5 ms."""
        return tokenize(list(texts), self.context_length)

    def batch(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, R, R] and tokens [B, context_length] of training step ``step``."""
        return self._tensors(self.sampler(step))

    def _tensors(self, drawn: Tuple[np.ndarray, List[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        return to_tensor(list(drawn[0]), self.resolution), self.tokens(drawn[1])

    def batches(self, steps: int, workers: int = 0,
                prefetch: int = 4) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches of steps ``0 .. steps - 1``; with ``workers`` > 0 rendered by that many
        processes, at most ``prefetch`` batches ahead."""
        if workers <= 0:
            yield from (self.batch(step) for step in range(steps))
            return
        import multiprocessing

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            pending = deque(pool.apply_async(self.sampler, (s,)) for s in range(min(prefetch, steps)))
            for step in range(steps):
                drawn = pending.popleft().get()
                if step + prefetch < steps:
                    pending.append(pool.apply_async(self.sampler, (step + prefetch,)))
                yield self._tensors(drawn)


# ---------------------------------------------------------------- model and training

def build_toy_clip(arch: ArchConfig, seed: int) -> CLIP:
    """A freshly initialised toy CLIP (OpenAI's initialisation), seeded."""
    torch.manual_seed(seed)
    return CLIP(arch.clip_config())


def make_optimizer(model: CLIP, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW as CLIP: betas (0.9, 0.98), eps 1e-6; weight decay on 2-D+ weights except
    embeddings (token, positional, class)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = "embedding" in name or name == "logit_scale"
        (decay if p.ndim >= 2 and not is_embedding else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def contrastive_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: mean of image->text and text->image cross-entropies."""
    logits_per_image, logits_per_text = model(images, tokens)
    target = torch.arange(images.shape[0])
    return (F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_text, target)) / 2


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def train(model: CLIP, stream: PairStream, cfg: TrainConfig, log_every: int = 25,
          workers: int = 0) -> float:
    """Run ``cfg.steps`` steps (``workers`` render processes); returns the mean steps/s.
    ``logit_scale`` is clamped at ln(100) after each step, as CLIP."""
    model.train()
    optimizer = make_optimizer(model, cfg)
    start, loss_sum = time.time(), 0.0
    for step, (images, tokens) in enumerate(stream.batches(cfg.steps, workers)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = contrastive_loss(model, images, tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_sum += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.time() - start
            rate = (step + 1) / elapsed
            logger.info("step %d/%d  loss %.4f  lr %.2e  logit_scale %.2f  %.2f steps/s  ETA %s  "
                        "peak RSS %.0f MB", step + 1, cfg.steps, loss_sum / ((step % log_every) + 1),
                        lr_at(step, cfg), model.logit_scale.exp().item(), rate,
                        time.strftime("%H:%M:%S", time.gmtime((cfg.steps - step - 1) / rate)),
                        peak_rss_mb())
            loss_sum = 0.0
    model.eval()
    return cfg.steps / (time.time() - start)


def openai_state_dict(model: CLIP, dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
    """The model's state dict as OpenAI's checkpoints hold it: floating tensors in ``dtype``,
    plus the ``input_resolution``, ``context_length`` and ``vocab_size`` entries."""
    sd = {k: v.detach().to(dtype).clone() for k, v in model.state_dict().items()}
    sd["input_resolution"] = torch.tensor(model.visual.input_resolution)
    sd["context_length"] = torch.tensor(model.context_length)
    sd["vocab_size"] = torch.tensor(model.vocab_size)
    return sd


# ---------------------------------------------------------------- zero-shot evaluation

@torch.no_grad()
def class_text_features(model: CLIP, classnames: Sequence[str], template: str,
                        device: str = "cpu") -> torch.Tensor:
    """Normalised text features [C, D] of ``template.format(name)`` for each class name."""
    tokens = tokenize([template.format(n) for n in classnames], model.context_length)
    feats = model.encode_text(tokens.to(device)).float()
    return feats / feats.norm(dim=-1, keepdim=True)


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, root: str, dataset: str, template: str = ZERO_SHOT_TEMPLATE,
                       device: str = "cpu", split: str = "test",
                       batch_size: int = 256) -> Dict[str, float]:
    """Zero-shot top-1 (%) of ``model`` on ``split`` of toy dataset ``dataset`` under ``root``.

    Reads the dataset's split file (``<root>/<dir>/split_zhou_<Name>.json``). Returns ``all``
    (64-way), ``base`` (32-way among the base classes, on their images) and ``new`` (32-way
    among the new classes), the base-to-novel protocol's numbers.
    """
    from dassl_lite.data import read_image
    from dassl_lite.data.splits import read_split
    from datasets.toy_world import TOY_DATASET_DIRS, split_file_name

    if dataset not in TOY_DATASET_DIRS:
        raise ValueError(f"dataset must be one of {', '.join(TOY_DATASET_DIRS)}; got {dataset!r}")
    folder = os.path.join(root, TOY_DATASET_DIRS[dataset])
    items = dict(zip(("train", "val", "test"), read_split(
        os.path.join(folder, split_file_name(dataset)), os.path.join(folder, "images"))))[split]
    model = model.to(device).eval()
    text = class_text_features(model, CLASSNAMES, template, device)
    logits, labels = [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        images = to_tensor([read_image(d.impath) for d in chunk], model.visual.input_resolution)
        feats = model.encode_image(images.to(device, model.dtype)).float()
        logits.append((feats / feats.norm(dim=-1, keepdim=True)) @ text.t())
        labels.append(torch.tensor([d.label for d in chunk]))
    return top1_table(torch.cat(logits).cpu(), torch.cat(labels))


def top1_table(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """Top-1 (%) over all classes, and within the base / new halves (each restricted to its own
    classes and images)."""
    result = {"all": 100.0 * (logits.argmax(1) == labels).float().mean().item()}
    for name, lo, hi in (("base", 0, NUM_BASE), ("new", NUM_BASE, logits.shape[1])):
        keep = (labels >= lo) & (labels < hi)
        pred = logits[keep][:, lo:hi].argmax(1) + lo
        result[name] = 100.0 * (pred == labels[keep]).float().mean().item()
    return result


def evaluate_checkpoint(path: str, root: str, template: str = ZERO_SHOT_TEMPLATE,
                        names: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Zero-shot table of the checkpoint at ``path`` (loaded by ``load_clip``) on each toy
    dataset's test split, generating the datasets under ``root`` if missing."""
    from datasets.toy_world import make_toy_world

    names = list(DOMAINS if names is None else names)
    make_toy_world(root, names, workers=min(2, os.cpu_count() or 1))
    model = load_clip(path)
    return {name: zero_shot_accuracy(model, root, name, template) for name in names}


# ---------------------------------------------------------------- command line

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    a, t = ArchConfig(), TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=t.steps, help=f"training steps ({t.steps})")
    p.add_argument("--batch-size", type=int, default=t.batch_size, help=f"({t.batch_size})")
    p.add_argument("--lr", type=float, default=t.lr, help=f"peak learning rate ({t.lr})")
    p.add_argument("--seed", type=int, default=t.seed, help="seeds torch, numpy and the data")
    p.add_argument("--out", default=DEFAULT_OUT, help="checkpoint path (default: the shipped one)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes rendering images ahead of training (1; 0: in the loop)")
    p.add_argument("--eval", action="store_true", help="zero-shot eval of the saved checkpoint")
    p.add_argument("--root", default=os.path.join(ROOT, "data"),
                   help="toy datasets folder for --eval (generated if missing)")
    for name in ("vision_width", "vision_layers", "text_width", "text_layers", "embed_dim",
                 "patch_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(a, name),
                       help=f"({getattr(a, name)})")
    p.add_argument("--log-every", type=int, default=25, help="steps between progress lines")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict:
    """Pretrain, save checkpoint + provenance (``command`` is recorded), optionally evaluate;
    returns the provenance record."""
    from dassl_lite.utils.env import git_revision
    from dassl_lite.utils.io import atomic_torch_save, atomic_write_json

    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    arch = ArchConfig(vision_width=args.vision_width, vision_layers=args.vision_layers,
                      text_width=args.text_width, text_layers=args.text_layers,
                      embed_dim=args.embed_dim, patch_size=args.patch_size)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      warmup_steps=min(TrainConfig.warmup_steps, max(1, args.steps // 10)))
    data = DataConfig()
    start = time.time()
    model = build_toy_clip(arch, args.seed)
    stream = PairStream(PairSampler(data, cfg.batch_size, cfg.seed), arch.image_resolution,
                        arch.context_length)
    steps_per_s = train(model, stream, cfg, args.log_every, args.workers)
    atomic_torch_save(openai_state_dict(model), args.out)
    record = {
        "command": command,
        "seed": args.seed, "git_revision": git_revision(ROOT), "torch": torch.__version__,
        "threads": args.threads, "workers": args.workers, "wall_time_s": round(time.time() - start, 1),
        "steps_per_s": round(steps_per_s, 3), "file_size_bytes": os.path.getsize(args.out),
        "config": {"arch": asdict(arch), "train": asdict(cfg), "data": asdict(data)},
    }
    logger.info("Saved %s (%.1f MB) after %.0f s", args.out, record["file_size_bytes"] / 1e6,
                record["wall_time_s"])
    if args.eval:
        record["zero_shot"] = {"template": ZERO_SHOT_TEMPLATE, "split": "test",
                               "top1": evaluate_checkpoint(args.out, args.root)}
        for name, acc in record["zero_shot"]["top1"].items():
            logger.info("zero-shot %-12s all %.1f  base %.1f  new %.1f", name, acc["all"],
                        acc["base"], acc["new"])
    atomic_write_json(os.path.splitext(args.out)[0] + ".json", record)
    return record


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else list(argv)
    run(parse_args(argv), shlex.join(["python", "tools/pretrain_toy_clip.py", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
