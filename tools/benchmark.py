#!/usr/bin/env python
"""Speed benchmarks for dassl_lite, printed as one table.

Sections are registered in ``BENCHMARKS`` (name -> :class:`Benchmark`); each adds its own flags
and returns table rows. Run all sections or pick some with ``--only NAME[,NAME]``.

Section ``clip``: our CLIP encoders against a straightforward OpenAI-style reference (LND layout,
``nn.MultiheadAttention``, text always run on all 77 positions with an additive causal mask),
built from the same random weights; outputs are asserted allclose before anything is timed.

  (a) text: encode ``--text-prompts`` class prompts ("a photo of a <classname>.") in one batch;
  (b) image: encode ``--image-batch`` images with a ViT.

Presets (``--clip-preset``):
  cpu      (default) ViT-B/16 shapes (vision 768 wide, 12 layers, 224 px, patch 16; text 512
           wide, 1000 prompts) except 16 images and 2 text layers: about 2 minutes on a 2-core
           CPU (the 77-token reference text encoder costs ~8 s per layer there). Every text
           layer costs the same, so the text speedup carries over to 12 layers.
  vit-b16  the full ViT-B/16 shapes: 12 text layers, 32 images (use on a GPU or be patient).
Any shape flag (--text-layers, --vision-layers, --image-batch, ...) overrides the preset.
The allclose check runs each encoder once before timing, which also serves as warm-up.

Examples:
  python tools/benchmark.py --only clip
  python tools/benchmark.py --only clip --clip-preset vit-b16 --device cuda --reps 10
  python tools/benchmark.py --only clip --reps 1 --text-prompts 200 --image-batch 4

Section ``sweep``: the toy-world base-to-novel sweep (``tools/base2new.py``, in process) of
``--sweep-trainers`` over ``--sweep-seeds`` on the toy datasets, four times: without the feature
cache, with an empty cache (filling it), with the warm cache, and with the warm cache plus
``TRAIN_VIEWS`` cached training views. Reports wall time, images through the image encoder and
the averaged Base / New / HM of each trainer.

  python tools/benchmark.py --only sweep
  python tools/benchmark.py --only sweep --sweep-trainers CoOp --sweep-seeds 1
"""
import argparse
import os
import random
import statistics
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from dassl_lite.clip import CLIP, CLIPConfig, tokenize

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Row = Dict[str, object]


@dataclass
class Benchmark:
    """A named benchmark section."""

    run: Callable[[argparse.Namespace], List[Row]]  # returns table rows
    add_arguments: Callable[[argparse.ArgumentParser], None]  # adds the section's flags
    help: str


BENCHMARKS: Dict[str, Benchmark] = {}


def register(name: str, add_arguments: Callable[[argparse.ArgumentParser], None], help: str):
    """Decorator registering ``fn(args) -> rows`` as benchmark section ``name``."""
    def wrap(fn: Callable[[argparse.Namespace], List[Row]]):
        if name in BENCHMARKS:
            raise KeyError(f"benchmark {name!r} is already registered")
        BENCHMARKS[name] = Benchmark(fn, add_arguments, help)
        return fn
    return wrap


def time_ms(fn: Callable[[], object], reps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in milliseconds under ``torch.inference_mode``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + reps):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# --------------------------------------------------------------------------- clip reference
class _QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _RefBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask=None):  # x: [L, N, D]
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _RefTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([_RefBlock(width, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class _RefViT(nn.Module):
    def __init__(self, c: CLIPConfig):
        super().__init__()
        grid = c.image_resolution // c.vision_patch_size
        self.conv1 = nn.Conv2d(3, c.vision_width, c.vision_patch_size, c.vision_patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(c.vision_width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid ** 2 + 1, c.vision_width))
        self.ln_pre = nn.LayerNorm(c.vision_width)
        self.transformer = _RefTransformer(c.vision_width, c.vision_layers, c.vision_heads)
        self.ln_post = nn.LayerNorm(c.vision_width)
        self.proj = nn.Parameter(torch.zeros(c.vision_width, c.embed_dim))

    def forward(self, images):
        x = self.conv1(images).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class ReferenceCLIP(nn.Module):
    """Straightforward OpenAI-style ViT CLIP with OpenAI's parameter names (loads our state dict)."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        self.visual = _RefViT(c)
        self.transformer = _RefTransformer(c.transformer_width, c.transformer_layers, c.transformer_heads)
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.zeros(c.context_length, c.transformer_width))
        self.ln_final = nn.LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.zeros(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        mask = torch.full((c.context_length, c.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def encode_image(self, images):
        return self.visual(images)

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2), self.attn_mask).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


# --------------------------------------------------------------------------- clip section
CLIP_PRESETS = {
    "cpu": dict(text_prompts=1000, text_width=512, text_layers=2, image_batch=16, image_size=224,
                patch_size=16, vision_width=768, vision_layers=12),
    "vit-b16": dict(text_prompts=1000, text_width=512, text_layers=12, image_batch=32, image_size=224,
                    patch_size=16, vision_width=768, vision_layers=12),
}
_ADJECTIVES = ["red", "golden", "spotted", "wild", "common", "great", "lesser", "northern", "american",
               "european", "giant", "striped", "long-tailed", "white-headed", "dwarf", "mountain",
               "electric", "vintage", "wooden", "folding"]
_NOUNS = ["retriever", "terrier", "warbler", "sparrow", "tabby cat", "mushroom", "sports car",
          "airliner", "grand piano", "lighthouse", "tree frog", "sea anemone", "espresso maker",
          "suspension bridge", "hummingbird", "pickup truck", "jellyfish", "snow leopard",
          "water ouzel", "bell pepper", "trombone", "tarantula", "iceberg lettuce", "goldfinch"]


def class_prompts(n: int, seed: int = 0) -> List[str]:
    """``n`` distinct prompts "a photo of a <classname>." with 1-3 word class names."""
    rng, names = random.Random(seed), set()
    while len(names) < n:
        names.add(" ".join(rng.sample(_ADJECTIVES, rng.randint(0, 2)) + [rng.choice(_NOUNS)]))
    return [f"a photo of a {name}." for name in sorted(names)]


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clip", "CLIP text/image encoders vs the reference")
    group.add_argument("--clip-preset", choices=sorted(CLIP_PRESETS), default="cpu")
    for key in CLIP_PRESETS["cpu"]:
        group.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                           help=f"overrides the preset (cpu: {CLIP_PRESETS['cpu'][key]}, "
                                f"vit-b16: {CLIP_PRESETS['vit-b16'][key]})")


def clip_config(args: argparse.Namespace) -> CLIPConfig:
    shape = {k: getattr(args, k) if getattr(args, k) is not None else v
             for k, v in CLIP_PRESETS[args.clip_preset].items()}
    args.__dict__.update(shape)
    return CLIPConfig(embed_dim=512, image_resolution=shape["image_size"],
                      vision_layers=shape["vision_layers"], vision_width=shape["vision_width"],
                      vision_patch_size=shape["patch_size"], vision_heads=max(1, shape["vision_width"] // 64),
                      context_length=77, vocab_size=49408, transformer_width=shape["text_width"],
                      transformer_heads=max(1, shape["text_width"] // 64),
                      transformer_layers=shape["text_layers"])


@register("clip", add_clip_arguments, "CLIP text (class prompts) and image encoding speed")
def bench_clip(args: argparse.Namespace) -> List[Row]:
    config, device = clip_config(args), torch.device(args.device)
    torch.manual_seed(0)
    ours = CLIP(config).eval().to(device)
    reference = ReferenceCLIP(config).eval()
    reference.load_state_dict(ours.state_dict())
    reference.to(device)
    tokens = tokenize(class_prompts(args.text_prompts)).to(device)
    images = torch.randn(args.image_batch, 3, args.image_size, args.image_size, device=device)
    cases = [("text", f"{args.text_prompts} prompts, width {args.text_width}, {args.text_layers} layers, "
                      f"longest {int(tokens.argmax(-1).max()) + 1}/77 tokens", "encode_text", tokens),
             ("image", f"{args.image_batch}x3x{args.image_size}x{args.image_size}, patch {args.patch_size}, "
                       f"width {args.vision_width}, {args.vision_layers} layers", "encode_image", images)]
    rows = []
    for name, shape, method, inputs in cases:
        ours_fn, ref_fn = getattr(ours, method), getattr(reference, method)
        with torch.inference_mode():
            torch.testing.assert_close(ours_fn(inputs), ref_fn(inputs), rtol=1e-4, atol=1e-4)
        ref_ms = time_ms(lambda: ref_fn(inputs), args.reps, args.warmup, device)
        ours_ms = time_ms(lambda: ours_fn(inputs), args.reps, args.warmup, device)
        rows.append({"section": "clip", "case": name, "shape": shape, "reference ms": round(ref_ms, 1),
                     "ours ms": round(ours_ms, 1), "speedup": f"{ref_ms / ours_ms:.2f}x"})
    return rows


# --------------------------------------------------------------------------- sweep
def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sweep", "toy base-to-novel sweep with the feature cache")
    group.add_argument("--sweep-trainers", nargs="+", default=["ZeroshotCLIP", "CoOp", "CoCoOp"])
    group.add_argument("--sweep-seeds", nargs="+", type=int, default=[1, 2, 3])
    group.add_argument("--sweep-datasets", nargs="+", default=["all"], help="toy datasets")
    group.add_argument("--sweep-views", type=int, default=10, help="TRAIN_VIEWS of the last mode")
    group.add_argument("--sweep-dir", default="", help="workspace (default: a new temp folder)")


def _sweep_once(args, work: str, label: str, opts: List[str]) -> List[Row]:
    """One in-process tools/base2new.py sweep into its own output folder; rows per trainer."""
    import json
    import shutil

    from dassl_lite.protocols.cli import main as protocol_main
    from trainers.prompting import IMAGES_ENCODED

    out = os.path.join(work, "output")
    shutil.rmtree(out, ignore_errors=True)  # every mode reruns every job
    before, start = IMAGES_ENCODED.count, time.perf_counter()
    code = protocol_main("base2new", [
        "--trainer", *args.sweep_trainers, "--config-file", "toy", "--benchmark", "toy",
        "--datasets", *args.sweep_datasets, "--seeds", *map(str, args.sweep_seeds),
        "--root", os.path.join(work, "data"), "--output-root", out, "--launcher", "inprocess",
        *opts], repo_root=REPO_ROOT)
    seconds, encoded = time.perf_counter() - start, IMAGES_ENCODED.count - before
    if code != 0:
        raise RuntimeError(f"sweep {label!r} failed (exit {code}); see {out}")
    rows = []
    for trainer in args.sweep_trainers:
        path = os.path.join(out, "base2new", f"summary_{trainer}_toy_shots16.json")
        with open(path) as f:
            avg = json.load(f)["average"]
        rows.append({"section": "sweep", "case": label, "trainer": trainer,
                     "base": round(avg["base"], 2), "new": round(avg["new"], 2),
                     "hm": round(avg["hm"], 2)})
    rows[0].update({"sweep wall s": round(seconds, 1), "images encoded": encoded})
    return rows


@register("sweep", add_sweep_arguments,
          "toy base-to-novel sweep: no cache, filling, warm cache, warm + training views")
def bench_sweep(args: argparse.Namespace) -> List[Row]:
    import tempfile

    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from datasets.toy_world import make_toy_world

    work = args.sweep_dir or tempfile.mkdtemp(prefix="dassl_sweep_")
    make_toy_world(os.path.join(work, "data"))  # generated once, outside the timings
    cache = ["DATALOADER.FEATURE_CACHE.DIR", os.path.join(work, "cache")]
    modes = [("no cache", ["DATALOADER.FEATURE_CACHE.ENABLED", "False"]),
             ("cache filling", cache), ("warm cache", cache),
             (f"warm + TRAIN_VIEWS {args.sweep_views}",
              cache + ["DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", str(args.sweep_views)])]
    return [row for label, opts in modes for row in _sweep_once(args, work, label, opts)]


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated sections to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=0, help="extra untimed repetitions first")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    for bench in BENCHMARKS.values():
        bench.add_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tabulate import tabulate

    parser = build_parser()
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names or args.reps < 1:
        parser.error(f"--only takes names among {', '.join(BENCHMARKS)} and --reps >= 1; "
                     f"got --only {args.only!r} --reps {args.reps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} (after {args.warmup} warmup)")
    rows = [row for name in names for row in BENCHMARKS[name].run(args)]
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
