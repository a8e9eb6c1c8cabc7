#!/usr/bin/env python
"""Speed benchmarks for dassl_lite, printed as one table.

Sections are registered in ``BENCHMARKS`` (name -> :class:`Benchmark`); each adds its own flags
and returns table rows. Run all sections or pick some with ``--only NAME[,NAME]``.

Section ``clip``: our CLIP encoders against a straightforward OpenAI-style reference (LND layout,
``nn.MultiheadAttention``, text always run on all 77 positions with an additive causal mask),
built from the same random weights; outputs are asserted allclose before anything is timed.

  (a) text: encode ``--text-prompts`` class prompts ("a photo of a <classname>.") in one batch;
  (b) image: encode ``--image-batch`` images with a ViT;
  (c) coop text step: forward + backward of the class prompts with ``--coop-ctx`` learned
      context vectors after SOT, our encoding (shared prefix computed once, last block at EOT
      only) against every block on whole rows.

Presets (``--clip-preset``):
  cpu      (default) ViT-B/16 shapes (vision 768 wide, 12 layers, 224 px, patch 16; text 512
           wide, 1000 prompts) except 16 images and 2 text layers: about 2 minutes on a 2-core
           CPU (the 77-token reference text encoder costs ~8 s per layer there). Every text
           layer costs the same, so the text speedup carries over to 12 layers.
  vit-b16  the full ViT-B/16 shapes: 12 text layers, 32 images (use on a GPU or be patient).
Any shape flag (--text-layers, --vision-layers, --image-batch, ...) overrides the preset.
The allclose check runs each encoder once before timing, which also serves as warm-up.

Section ``afclip``: one AF-CLIP training step (forward, loss, backward, Adam) and one evaluation
batch on a random CLIP with ViT-L/14@336 widths at 518 px (37x37 patches), our SDPA adaptor
against a plain softmax-attention reference holding the same weights (maps and image scores
asserted allclose first). Memory: peak CUDA allocation on a GPU; on a CPU the bytes saved for
backward (where the reference keeps its [B*8, N, N] attention probabilities per map).
Presets (``--afclip-preset``): cpu (default) 4 of the 24 vision blocks, batch 2;
vit-l14 all 24 blocks, batch 8 (upstream's training batch; use a GPU).

Section ``anomaly_metrics``: every metric of the ``AnomalyDetection`` evaluator (Gaussian
smoothing sigma 4, image AUROC/AP/max-F1, pixel AUROC/AP/max-F1 and AUPRO per category, macro
means) on synthetic maps the size of the VisA test set: 2,162 maps of 518 x 518 in its 12
categories (962 normal, 1,200 anomalous; maps bilinearly upsampled from a 37 x 37 grid, masks
of 1-3 ellipses). Reports wall and CPU seconds of feeding the maps (``process``: resizing,
smoothing, storing) and of ``evaluate``. Budget: all of it within 2 minutes on 2 CPU cores.

Section ``anomalyclip``: one AnomalyCLIP training step (forward, loss, backward, Adam on the
prompts) and one evaluation batch on a random CLIP with ViT-L/14@336 widths at 518 px, with DPAM
(the value-value path from the first map block on) against the plain attention path
(``DPAM_LAYER 1``) with the same prompts; the shared parts (text features, image scores from the
plain path's CLS) are asserted equal first. Memory as in ``afclip``. Presets
(``--anomalyclip-preset``): cpu (default) 2 of the 24 vision blocks, batch 1; vit-l14 all 24
blocks, batch 8.

Examples:
  python tools/benchmark.py --only anomaly_metrics
  python tools/benchmark.py --only clip
  python tools/benchmark.py --only clip --clip-preset vit-b16 --device cuda --reps 10
  python tools/benchmark.py --only clip --reps 1 --text-prompts 200 --image-batch 4

Section ``sweep``: the toy-world base-to-novel sweep (``tools/base2new.py``, in process) of
``--sweep-trainers`` over ``--sweep-seeds`` on the toy datasets, once per mode (``--sweep-modes``,
in order, sharing one cache folder): ``cold`` (no cache), ``filling`` (an empty cache), ``warm``
(test features and the training images' flip outcomes read from the cache; exact), ``warm, eval
only`` (``TRAIN_EXACT False``: training on images, as for augmentations with random crops),
``views filling`` and ``views`` (``TRAIN_VIEWS --sweep-views``: encoding the views, then reading
them). Per trainer and mode: wall time, training time (the sum of training epochs), images
through the image encoder and the averaged Base / New / HM. ``--sweep-rounds N`` repeats the
modes (later rounds reversed, fills only in the first) and keeps the fastest times, for a
machine whose speed drifts.

  python tools/benchmark.py --only sweep
  python tools/benchmark.py --only sweep --sweep-trainers CoOp --sweep-seeds 1
  python tools/benchmark.py --only sweep --sweep-trainers CoOp --sweep-backbone vit-b16-random \
      --sweep-datasets toy_shapes --sweep-seeds 1 --sweep-shots 2 --sweep-test-images 2 \
      --sweep-modes cold "views filling" views --sweep-opts OPTIM.MAX_EPOCH 4
  python tools/benchmark.py --only winclip --winclip-layers 12
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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # the checkout's dassl_lite, not an installed copy
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dassl_lite.clip import CLIP, CLIPConfig, tokenize  # noqa: E402

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


def time_ms(fn: Callable[[], object], reps: int, warmup: int, device: torch.device,
            grad: bool = False) -> float:
    """Median wall time of ``fn()`` in milliseconds under ``torch.inference_mode`` (``grad``:
    with autograd enabled, for steps that call ``backward``)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.enable_grad() if grad else torch.inference_mode():
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
    group.add_argument("--coop-ctx", type=int, default=16,
                       help="learned context vectors of the CoOp text-step case (upstream: 16)")
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
    return rows + [bench_coop_text_step(args, ours, device)]


def bench_coop_text_step(args: argparse.Namespace, model: CLIP, device: torch.device) -> Row:
    """(c) CoOp's text side of one training step (forward + backward to ``--coop-ctx`` learned
    context vectors placed after SOT, shared by every class prompt): our encoder (the shared
    positions computed once, the last block at EOT only) against every block of the same
    transformer on whole rows; features and gradients asserted allclose first."""
    n_ctx = args.coop_ctx
    names = [p[len("a photo of a "):] for p in class_prompts(args.text_prompts)]
    tokens = tokenize([" ".join(["X"] * n_ctx) + f" {name}" for name in names]).to(device)
    eot = tokens.argmax(dim=-1)
    embedded = model.token_embedding(tokens).detach()
    ctx = (0.02 * torch.randn(n_ctx, model.transformer.width, device=device)).requires_grad_()

    rows, length = torch.arange(len(tokens), device=device), int(eot.max()) + 1

    def whole_rows(x):  # every block on every position up to the longest EOT
        h = model.transformer(x[:, :length] + model.positional_embedding[:length])
        return model.ln_final(h[rows, eot]) @ model.text_projection

    def step(ours: bool):
        x = torch.cat([embedded[:, :1], ctx.expand(len(tokens), -1, -1), embedded[:, 1 + n_ctx:]], 1)
        out = model.encode_text_embeddings(x, eot) if ours else whole_rows(x)
        (grad,) = torch.autograd.grad(out.square().sum(), ctx)
        return out, grad

    with torch.enable_grad():
        for a, b in zip(step(True), step(False)):  # fp32 sums in another order
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(b.detach().abs().max()))
    ref_ms = time_ms(lambda: step(False), args.reps, args.warmup, device, grad=True)
    ours_ms = time_ms(lambda: step(True), args.reps, args.warmup, device, grad=True)
    return {"section": "clip", "case": "coop text step",
            "shape": f"{len(tokens)} prompts, {n_ctx} ctx, width {args.text_width}, "
                     f"{args.text_layers} layers, forward + backward; reference: every block on "
                     f"whole rows (cut after the longest EOT)",
            "reference ms": round(ref_ms, 1), "ours ms": round(ours_ms, 1),
            "speedup": f"{ref_ms / ours_ms:.2f}x"}


# --------------------------------------------------------------------------- sweep
SWEEP_MODES = OrderedDict([
    ("cold", ["DATALOADER.FEATURE_CACHE.ENABLED", "False"]),  # no cache: images every time
    ("filling", []),  # an empty cache: fills test features and training flip outcomes
    ("warm", []),  # every frozen feature read from the cache (training exact: flips enumerated)
    ("warm, eval only", ["DATALOADER.FEATURE_CACHE.TRAIN_EXACT", "False"]),  # training on images
    ("views filling", ["DATALOADER.FEATURE_CACHE.TRAIN_VIEWS"]),  # + K: encodes K views per image
    ("views", ["DATALOADER.FEATURE_CACHE.TRAIN_VIEWS"]),  # + K: training on warm cached views
])


# the ViT-B/16 shapes of OpenAI's checkpoint (embed 512; vision 768 x 12 at 224 px, patch 16;
# text 512 x 12, 8 heads)
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
               vision_patch_size=16, vision_heads=12, context_length=77, vocab_size=49408,
               transformer_width=512, transformer_heads=8, transformer_layers=12)
SWEEP_BACKBONES = ("ToyCLIP", "vit-b16-random")


def sweep_backbone_opts(name: str, work: str) -> List[str]:
    """Config options selecting the sweep's backbone (none for ToyCLIP, the configs' own)."""
    if name == "ToyCLIP":
        return []
    from dassl_lite.utils.io import atomic_torch_save

    path = os.path.join(work, "backbones", "vit_b16_random.pt")
    if not os.path.isfile(path):
        torch.manual_seed(0)
        model = CLIP(CLIPConfig(**VIT_B16))  # OpenAI's initialisation
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_torch_save(model.state_dict(), path)
    return ["MODEL.BACKBONE.NAME", path, "INPUT.SIZE", "(224, 224)"]


FILL_MODES = ("filling", "views filling")  # their meaning needs the cache state they start from


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sweep", "toy base-to-novel sweep with the feature cache")
    group.add_argument("--sweep-trainers", nargs="+", default=["ZeroshotCLIP", "CoOp", "CoCoOp"])
    group.add_argument("--sweep-seeds", nargs="+", type=int, default=[1, 2, 3])
    group.add_argument("--sweep-datasets", nargs="+", default=["all"], help="toy datasets")
    group.add_argument("--sweep-views", type=int, default=10, help="TRAIN_VIEWS of the views modes")
    group.add_argument("--sweep-modes", nargs="+", default=list(SWEEP_MODES),
                       choices=list(SWEEP_MODES), metavar="MODE",
                       help=f"modes to run, in order (default: all: {', '.join(SWEEP_MODES)})")
    group.add_argument("--sweep-dir", default="", help="workspace (default: a new temp folder)")
    group.add_argument("--sweep-shots", type=int, default=16, help="training shots per class")
    group.add_argument("--sweep-rounds", type=int, default=1,
                       help="run the modes this many times (later rounds in reverse order, "
                            "without the filling modes) and report the fastest of each")
    group.add_argument("--sweep-test-images", type=int, default=0,
                       help="test images per class of the generated toy world (default: the "
                            "toy world's own 20; fewer make big backbones affordable on a CPU)")
    group.add_argument("--sweep-backbone", choices=list(SWEEP_BACKBONES), default="ToyCLIP",
                       help="ToyCLIP (the configs' own), or a random-weight CLIP of ViT-B/16's "
                            "shapes at 224 px (written to the workspace): the speed of a real "
                            "backbone, where image encoding dominates; its accuracies mean nothing")
    group.add_argument("--sweep-opts", nargs="+", default=[], metavar="KEY VALUE",
                       help="extra config options for every job, e.g. OPTIM.MAX_EPOCH 4")


class _EpochTimer:
    """Adds up the wall time of every training epoch (``TrainerX.run_epoch``) while active."""

    def __init__(self):
        from dassl_lite.engine.trainer import TrainerX

        self.owner, self.seconds = TrainerX, 0.0

    def __enter__(self):
        original, timer = self.owner.run_epoch, self

        def timed(trainer):
            start = time.perf_counter()
            try:
                return original(trainer)
            finally:
                timer.seconds += time.perf_counter() - start

        self.original, self.owner.run_epoch = original, timed
        return self

    def __exit__(self, *exc):
        self.owner.run_epoch = self.original


def _sweep_once(args, work: str, data: str, mode: str, trainer: str) -> Row:
    """One in-process tools/base2new.py sweep of ``trainer`` into the mode's output folder."""
    import json
    import shutil

    from dassl_lite.protocols.cli import main as protocol_main
    from trainers.prompting import IMAGES_ENCODED

    opts = list(SWEEP_MODES[mode])
    if opts[-1:] == ["DATALOADER.FEATURE_CACHE.TRAIN_VIEWS"]:
        opts.append(str(args.sweep_views))
    opts += sweep_backbone_opts(args.sweep_backbone, work) + list(args.sweep_opts)
    out = os.path.join(work, "output", mode.replace(" ", "_").replace(",", ""))
    shutil.rmtree(out, ignore_errors=True)  # every mode reruns every job
    before, start = IMAGES_ENCODED.count, time.perf_counter()
    with _EpochTimer() as epochs:
        code = protocol_main("base2new", [
            "--trainer", trainer, "--config-file", "toy", "--benchmark", "toy",
            "--datasets", *args.sweep_datasets, "--seeds", *map(str, args.sweep_seeds),
            "--shots", str(args.sweep_shots),
            "--root", data, "--output-root", out, "--launcher", "inprocess",
            "DATALOADER.FEATURE_CACHE.DIR", os.path.join(work, "cache"), *opts],
            repo_root=REPO_ROOT)
    seconds, encoded = time.perf_counter() - start, IMAGES_ENCODED.count - before
    if code != 0:
        raise RuntimeError(f"sweep {mode!r} of {trainer} failed (exit {code}); see {out}")
    with open(os.path.join(out, "base2new",
                           f"summary_{trainer}_toy_shots{args.sweep_shots}.json")) as f:
        avg = json.load(f)["average"]
    return {"section": "sweep", "case": mode, "trainer": trainer, "wall s": round(seconds, 1),
            "training s": round(epochs.seconds, 1), "images encoded": encoded,
            "base": round(avg["base"], 2), "new": round(avg["new"], 2), "hm": round(avg["hm"], 2)}


@register("sweep", add_sweep_arguments,
          "toy base-to-novel sweep: cold, filling, warm, warm eval only, training views")
def bench_sweep(args: argparse.Namespace) -> List[Row]:
    import tempfile

    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from datasets.toy_world import SplitCounts, make_toy_world

    if len(args.sweep_opts) % 2:
        raise SystemExit(f"--sweep-opts takes KEY VALUE pairs; got {args.sweep_opts}")
    work = args.sweep_dir or tempfile.mkdtemp(prefix="dassl_sweep_")
    counts, data = SplitCounts(), os.path.join(work, "data")
    if args.sweep_test_images:
        counts = SplitCounts(test=args.sweep_test_images)
        data = os.path.join(work, f"data_test{args.sweep_test_images}")
    make_toy_world(data, counts=counts)  # generated once, outside the timings
    sweep_backbone_opts(args.sweep_backbone, work)  # written once, outside the timings
    runs: Dict[tuple, List[Row]] = {}
    for round_ in range(args.sweep_rounds):
        # later rounds: the modes in reverse order (so a slow spell of the machine does not
        # fall on the same mode each time), without the fills (the cache is full by then)
        modes = (args.sweep_modes if round_ == 0 else
                 [m for m in reversed(args.sweep_modes) if m not in FILL_MODES])
        for mode in modes:
            for trainer in args.sweep_trainers:
                runs.setdefault((mode, trainer), []).append(
                    _sweep_once(args, work, data, mode, trainer))
    rows = []
    for mode in args.sweep_modes:
        mode_rows = [_fastest(runs[mode, trainer]) for trainer in args.sweep_trainers]
        rows += mode_rows
        rows.append({"section": "sweep", "case": mode, "trainer": "all",
                     **{k: round(sum(r[k] for r in mode_rows), 1)
                        for k in ("wall s", "training s", "images encoded")}})
    return rows


def _fastest(runs: List[Row]) -> Row:
    """One row for the rounds of a (mode, trainer): the smallest wall and training seconds; the
    rounds must agree on everything else (images encoded, accuracies)."""
    timing = ("wall s", "training s")
    rest = [{k: v for k, v in r.items() if k not in timing} for r in runs]
    if any(r != rest[0] for r in rest):
        raise RuntimeError(f"the rounds of one sweep disagree beyond timing: {rest}")
    return {**runs[0], **{k: min(r[k] for r in runs) for k in timing},
            **({"rounds": len(runs)} if len(runs) > 1 else {})}

# --------------------------------------------------------------------------- afclip section
AFCLIP_PRESETS = {
    "cpu": dict(afclip_batch=2, afclip_layers=4, afclip_size=518),
    "vit-l14": dict(afclip_batch=8, afclip_layers=24, afclip_size=518),
}


def add_preset_arguments(parser: argparse.ArgumentParser, name: str, title: str,
                         presets: Dict[str, Dict[str, int]], preset_help: str) -> None:
    """``--<name>-preset`` (default cpu) and one integer override flag per preset key."""
    group = parser.add_argument_group(name, title)
    group.add_argument(f"--{name}-preset", choices=sorted(presets), default="cpu", help=preset_help)
    for key in presets["cpu"]:
        values = ", ".join(f"{p}: {v[key]}" for p, v in presets.items())
        group.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                           help=f"overrides the preset ({values})")


def apply_preset(args: argparse.Namespace, presets: Dict[str, Dict[str, int]], chosen: str) -> None:
    """Fill each preset key that no override flag set from preset ``chosen``."""
    for k, v in presets[chosen].items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))


def add_afclip_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser, "afclip", "AF-CLIP: SDPA adaptor vs softmax reference",
                         AFCLIP_PRESETS, "cpu: ViT-L/14 widths at 518 px with 4 vision blocks, "
                                         "batch 2; vit-l14: all 24 blocks, batch 8 (upstream)")


class SoftmaxAdaptor(nn.Module):
    """Upstream's adaptor arithmetic (explicit softmax(q k^T / sqrt(d)) v) on an Adaptor's weights."""

    def __init__(self, adaptor: nn.Module):
        super().__init__()
        self.block = adaptor.attention

    def forward(self, x):
        attn, y = self.block.attn, self.block.norm(x)
        q, k, v = (t.view(*t.shape[:2], attn.heads, -1).transpose(1, 2)
                   for t in (attn.to_q(y), attn.to_k(y), attn.to_v(y)))
        probs = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
        return attn.to_out((probs @ v).transpose(1, 2).flatten(2))


def _import_trainers() -> None:
    """Make the repository's ``trainers`` package importable (it is not installed)."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


def random_vit_l14_336(vision_layers: int, text_layers: int, device: torch.device):
    """(frozen random CLIP of ViT-L/14@336 widths with ``vision_layers`` / ``text_layers`` blocks,
    seed 0; the four feature blocks upstream's anomaly methods read, 6 12 18 24 at 24 blocks)."""
    n = vision_layers
    config = CLIPConfig(embed_dim=768, image_resolution=336, vision_layers=n, vision_width=1024,
                        vision_patch_size=14, vision_heads=16, context_length=77, vocab_size=49408,
                        transformer_width=768, transformer_heads=12, transformer_layers=text_layers)
    torch.manual_seed(0)
    clip_model = CLIP(config).eval().requires_grad_(False).to(device)
    return clip_model, sorted({max(1, n * i // 4) for i in (1, 2, 3, 4)})


def afclip_models(args: argparse.Namespace, device: torch.device):
    """(ours, reference): AF-CLIP on a random CLIP of ViT-L/14@336 widths, same weights."""
    _import_trainers()
    from trainers.anomaly.afclip_model import AFCLIPLearner, AFCLIPModel

    n = args.afclip_layers
    clip_model, layers = random_vit_l14_336(n, 12, device)
    learner = AFCLIPLearner(clip_model, prompt_len=12).to(device)
    make = lambda lrn: AFCLIPModel(clip_model, lrn, layers, (1, 3, 5), 4.0, 0.07)  # noqa: E731
    reference = nn.Module()
    reference.prompt, reference.adaptor = learner.prompt, SoftmaxAdaptor(learner.adaptor)
    return make(learner), make(reference), layers


def measure(fn: Callable[[], object], reps: int, device: torch.device, frozen: nn.Module):
    """(median ms, MB): peak CUDA allocation, or on a CPU the distinct storages saved for
    backward (``frozen``'s weights excluded: they are not new memory; None without autograd)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    weights = {p.untyped_storage().data_ptr() for p in frozen.parameters()}
    saved: Dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    times = []
    for _ in range(reps):
        saved.clear()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    if device.type == "cuda":
        return statistics.median(times), round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    return statistics.median(times), round(sum(saved.values()) / 2 ** 20) if saved else None


@register("afclip", add_afclip_arguments, "AF-CLIP train step / eval batch, SDPA vs softmax")
def bench_afclip(args: argparse.Namespace) -> List[Row]:
    _import_trainers()
    from trainers.anomaly.afclip_losses import afclip_loss

    apply_preset(args, AFCLIP_PRESETS, args.afclip_preset)
    device = torch.device(args.device)
    ours, reference, layers = afclip_models(args, device)
    b, size = args.afclip_batch, args.afclip_size
    images = torch.randn(b, 3, size, size, device=device)
    masks = (torch.rand(b, 1, size, size, device=device) > 0.9).float()
    labels = torch.arange(b, device=device) % 2
    with torch.no_grad():
        a, r = ours(images), reference(images)
    torch.testing.assert_close(a["anomaly_map"], r["anomaly_map"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a["image_score"], r["image_score"], rtol=1e-4, atol=1e-4)
    shape = (f"{b}x3x{size}x{size}, {args.afclip_layers} blocks of ViT-L/14 (maps from {layers}), "
             f"{len(layers) * 3} maps of {1 + (size // 14) ** 2} tokens")
    return train_eval_rows("afclip", shape, (("reference", reference), ("ours", ours)),
                           lambda out: afclip_loss(out, labels, masks, 4.0, 1.0, 1.0)["loss"],
                           images, 1e-4, args.reps, device,
                           ("speedup", lambda ref_ms, ours_ms: f"{ref_ms / ours_ms:.2f}x"))


def train_eval_rows(section: str, shape: str, models, loss_of: Callable, images: torch.Tensor,
                    lr: float, reps: int, device: torch.device, ratio) -> List[Row]:
    """Rows "train step" (forward, ``loss_of(output)``, backward, Adam betas (0.5, 0.999) on the
    learner's trainable tensors) and "eval batch" (no grad) of two ``(label, model)``s, each
    model with ``.learner`` and a frozen ``.clip``: times and memory (:func:`measure`), and
    ``ratio = (column, fn(first ms, second ms))``."""
    rows = []
    for case in ("train step", "eval batch"):
        result = {}
        for name, model in models:
            params = [p for p in model.learner.parameters() if p.requires_grad]
            optim = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))

            def step(model=model, optim=optim):
                if case == "eval batch":
                    with torch.no_grad():
                        return model(images)
                loss = loss_of(model(images))
                optim.zero_grad()
                loss.backward()
                optim.step()

            result[name] = measure(step, reps, device, model.clip)
        (a, (a_ms, a_mb)), (b, (b_ms, b_mb)) = result.items()
        rows.append({"section": section, "case": case, "shape": shape,
                     f"{a} ms": round(a_ms, 1), f"{b} ms": round(b_ms, 1),
                     ratio[0]: ratio[1](a_ms, b_ms),
                     "memory": "peak CUDA MB" if device.type == "cuda" else "saved-for-backward MB",
                     f"{a} MB": a_mb if a_mb is not None else "-",
                     f"{b} MB": b_mb if b_mb is not None else "-"})
    return rows


# --------------------------------------------------------------------------- anomaly metrics
# VisA's 1cls test split: (normal, anomalous) images per object (12 objects, 2,162 images).
VISA_TEST = [(100, 100)] * 5 + [(101, 100)] * 2 + [(60, 100)] + [(50, 100)] * 4


def add_anomaly_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("anomaly_metrics", "AnomalyDetection evaluator speed")
    group.add_argument("--anomaly-size", type=int, default=518, help="map side (default 518)")
    group.add_argument("--anomaly-scale", type=float, default=1.0,
                       help="fraction of VisA's test images per category (default 1.0: 2,162)")
    group.add_argument("--anomaly-aupro", default="exact", choices=["exact", "legacy200"])


def synthetic_batches(normal: int, anomalous: int, size: int, seed: int, batch: int = 8):
    """Batches (output, gt) of one category: maps from a 37 x 37 grid, masks of ellipses."""
    import numpy as np
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(normal, int), np.ones(anomalous, int)]
    yy, xx = np.mgrid[0:size, 0:size]
    for start in range(0, labels.size, batch):
        lab = labels[start:start + batch]
        masks = np.zeros((lab.size, size, size), bool)
        for i in np.flatnonzero(lab):
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0.1, 0.9, 2) * size
                ry, rx = rng.uniform(0.01, 0.08, 2) * size
                masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        small = F.adaptive_avg_pool2d(torch.from_numpy(masks).float()[:, None], 37)
        grid = torch.from_numpy(rng.normal(size=(lab.size, 1, 37, 37))).float() + 3 * small
        maps = F.interpolate(grid.sigmoid(), size=(size, size), mode="bilinear",
                             align_corners=False)[:, 0]
        out = {"image_score": maps.flatten(1).amax(1), "anomaly_map": maps}
        gt = {"mask": torch.from_numpy(masks)[:, None].float(), "label": torch.from_numpy(lab),
              "category": [f"object{seed}"] * lab.size, "impath": [""] * lab.size}
        yield out, gt


@register("anomaly_metrics", add_anomaly_arguments,
          "AnomalyDetection evaluator on VisA-sized synthetic maps")
def bench_anomaly_metrics(args: argparse.Namespace) -> List[Row]:
    from dassl_lite.config import get_cfg_default
    from dassl_lite.evaluation import AnomalyDetection

    cfg = get_cfg_default()
    cfg.TEST.ANOMALY.AUPRO = args.anomaly_aupro
    evaluator = AnomalyDetection(cfg)
    counts = [(round(n * args.anomaly_scale), round(a * args.anomaly_scale)) for n, a in VISA_TEST]
    feed_wall = feed_cpu = 0.0
    for seed, (normal, anomalous) in enumerate(counts):
        for out, gt in synthetic_batches(normal, anomalous, args.anomaly_size, seed):
            wall, cpu = time.perf_counter(), time.process_time()
            evaluator.process(out, gt)
            feed_wall += time.perf_counter() - wall
            feed_cpu += time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    results = evaluator.evaluate()
    eval_wall, eval_cpu = time.perf_counter() - wall, time.process_time() - cpu
    shape = (f"{results['num_images']} maps of {args.anomaly_size}x{args.anomaly_size}, "
             f"{len(counts)} categories, AUPRO {results['aupro_mode']}")
    return [{"section": "anomaly_metrics", "case": case, "shape": shape,
             "wall s": round(w, 1), "cpu s": round(c, 1)}
            for case, w, c in (("process (resize, smooth, store)", feed_wall, feed_cpu),
                               ("evaluate (all metrics)", eval_wall, eval_cpu),
                               ("total", feed_wall + eval_wall, feed_cpu + eval_cpu))]


# --------------------------------------------------------------------------- anomalyclip section
ANOMALYCLIP_PRESETS = {
    "cpu": dict(anomalyclip_batch=1, anomalyclip_layers=2, anomalyclip_size=518),
    "vit-l14": dict(anomalyclip_batch=8, anomalyclip_layers=24, anomalyclip_size=518),
}


def add_anomalyclip_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser, "anomalyclip", "AnomalyCLIP: DPAM vs the plain path",
                         ANOMALYCLIP_PRESETS, "cpu: ViT-L/14 widths at 518 px with 2 vision "
                         "blocks, batch 1; vit-l14: all 24 blocks, batch 8 (upstream)")


def anomalyclip_models(args: argparse.Namespace, device: torch.device):
    """(DPAM, plain, blocks, DPAM_LAYER): AnomalyCLIP on a random CLIP of ViT-L/14@336 widths
    (text: 12 layers, deep prompts depth 9), the same prompts in both; DPAM from the first map
    block on (upstream's DPAM_layer 20 at 24 blocks), the plain model with DPAM_LAYER 1."""
    import copy

    _import_trainers()
    from trainers.anomaly.anomalyclip_model import AnomalyCLIPModel, AnomalyCLIPPromptLearner

    n = args.anomalyclip_layers
    clip_model, layers = random_vit_l14_336(n, 12, device)
    clip_model.visual.pos_interpolation = "bilinear"
    learner = AnomalyCLIPPromptLearner(clip_model, n_ctx=12, depth=9, t_n_ctx=4).to(device)
    dpam_layer = n - layers[0] + 2
    make = lambda d: AnomalyCLIPModel(clip_model, copy.deepcopy(learner), layers, 0, d,  # noqa: E731
                                      0.07, True, True)
    return make(dpam_layer), make(1), layers, dpam_layer


@register("anomalyclip", add_anomalyclip_arguments,
          "AnomalyCLIP train step / eval batch, DPAM vs plain path")
def bench_anomalyclip(args: argparse.Namespace) -> List[Row]:
    _import_trainers()
    from trainers.anomaly.anomalyclip_model import anomalyclip_loss

    apply_preset(args, ANOMALYCLIP_PRESETS, args.anomalyclip_preset)
    device = torch.device(args.device)
    dpam, plain, layers, dpam_layer = anomalyclip_models(args, device)
    b, size = args.anomalyclip_batch, args.anomalyclip_size
    images = torch.randn(b, 3, size, size, device=device)
    masks = (torch.rand(b, 1, size, size, device=device) > 0.9).float()
    labels = torch.arange(b, device=device) % 2
    with torch.no_grad():  # the shared parts: prompts -> text features, plain path -> CLS score
        a, r = dpam(images), plain(images)
        torch.testing.assert_close(dpam.text_features(), plain.text_features(), rtol=0, atol=0)
    torch.testing.assert_close(a["image_logits"], r["image_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a["image_score"], r["image_score"], rtol=1e-5, atol=1e-5)
    n = args.anomalyclip_layers
    shape = (f"{b}x3x{size}x{size}, {n} blocks of ViT-L/14 (maps from {layers}, DPAM in blocks "
             f"{n - dpam_layer + 2}..{n}), {1 + (size // 14) ** 2} tokens")
    return train_eval_rows("anomalyclip", shape, (("plain", plain), ("DPAM", dpam)),
                           lambda out: anomalyclip_loss(out, labels, masks, 1.0)["loss"],
                           images, 1e-3, args.reps, device,
                           ("DPAM / plain", lambda plain_ms, dpam_ms: f"{dpam_ms / plain_ms:.2f}x"))


# --------------------------------------------------------------------------- limit
LIMIT_OUT_OF_SCOPE = ("anomaly trainers (AFCLIP, ZeroshotAD, APRILGAN, ...) run at 518 px on "
                      "ViT-L/14 with dense maps; their steps are timed by --only afclip and anomalyclip")


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "limit", "each trainer's step and eval batch against its frozen encoders' own work")
    group.add_argument("--limit-trainers", nargs="+", default=None,
                       help="default: every registered classification trainer")
    group.add_argument("--layers", type=int, default=12,
                       help="vision and text layers of the random ViT-B/16 (default 12, the real "
                            "depth; fewer on a CPU). Prompt depths above it are cut to it")
    group.add_argument("--limit-batch", type=int, default=0,
                       help="cap on the training batch (default: each trainer's upstream batch)")
    group.add_argument("--limit-dir", default="", help="workspace (default: a new temp folder)")
    group.add_argument("--compile", action="store_true",
                       help="also time each step with MODEL.COMPILE True (compile time apart)")


# what a trainer needs beyond its upstream config (its row notes it): DePT trains on the base
# classes only (the toy dataset's 32 of 64), as upstream's base-to-novel protocol; ProGrad
# borrows CoOp's ViT-B/16 config and needs its own loss (upstream's rn50 configs set it)
# One view per cache key: Tip-Adapter's cache build (once, before the first step) is not part
# of the step, and its size (shots x classes keys) does not depend on the views averaged.
_ONE_VIEW = ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "1"]
LIMIT_OPTS = {"DePT": ["DATASET.SUBSAMPLE_CLASSES", "base"],
              "ProGrad": ["LOSS.NAME", "prograd", "LOSS.T", "1.0"],
              "TipAdapter": _ONE_VIEW, "TipAdapterF": _ONE_VIEW}
# block numbers beyond the --layers cut, clipped to the last block (1-based: layers - 0) or
# the last block but one (TCP's 0-based input of a text block: layers - 1)
LIMIT_CUT_KEYS = {"ADAPTER_START": 0, "ADAPTER_END": 0, "CLASS_PROMPT_LAYER": 1}
LIMIT_TRAIN_PER_CLASS = 8  # training images per toy class: two batches of up to 256


def upstream_config(trainer: str) -> str:
    """The trainer's upstream ViT-B/16 config (shortest name), else its shortest non-toy one,
    else its toy config: where the upstream batch size and prompt shapes come from."""
    import glob

    from dassl_lite.config.bundled import trainer_config_folders

    for pattern in ("vit_b16*.yaml", "*.yaml"):
        for folder in trainer_config_folders(trainer, os.path.join(REPO_ROOT, "configs", "trainers")):
            names = [p for p in glob.glob(os.path.join(folder, pattern))
                     if os.path.basename(p) != "toy.yaml"]
            if names:
                return min(names, key=lambda p: (len(p), p))
    from dassl_lite.protocols.resolve import resolve_trainer_config

    return resolve_trainer_config("toy", trainer, os.path.join(REPO_ROOT, "configs", "trainers"))


def _tensors_of(value, out: List[torch.Tensor]) -> List[torch.Tensor]:
    """Every tensor in ``value`` (tensors, lists, tuples, dicts, dataclass-like objects)."""
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors_of(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors_of(v, out)
    elif hasattr(value, "__dict__") and not isinstance(value, nn.Module):
        for v in vars(value).values():
            _tensors_of(v, out)
    return out


def _detached(value):
    """``value`` with every tensor detached; the tensors that required grad become fresh leaves
    that require grad (the inputs an encoder backpropagates to)."""
    if isinstance(value, torch.Tensor):
        return value.detach().requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


class EncoderProbe:
    """Wraps a frozen CLIP's image encoder (``visual``) and text encoder
    (``encode_text_embeddings``) to time their forwards and record their calls, which
    :meth:`replay` runs again bare: each call on the same inputs, with a backward to its inputs
    where the recorded output required grad. That replay is the limit of the step."""

    KINDS = ("image", "text")

    def __init__(self, clip_model: nn.Module, device: torch.device):
        self.clip, self.device = clip_model, device
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.calls: List[tuple] = []
        self.recording = False
        self.forward_s = dict.fromkeys(self.KINDS, 0.0)
        self.originals = {"image": clip_model.visual.forward,
                          "text": clip_model.encode_text_embeddings}
        clip_model.visual.forward = self._wrap("image", self.originals["image"])
        clip_model.encode_text_embeddings = self._wrap("text", self.originals["text"])

    def _wrap(self, kind: str, original: Callable):
        def run(*a, **kw):
            self.sync()
            start = time.perf_counter()
            out = original(*a, **kw)
            self.sync()
            self.forward_s[kind] += time.perf_counter() - start
            if self.recording:
                grad = any(t.requires_grad for t in _tensors_of(out, []))
                self.calls.append((kind, original, _detached(a), _detached(kw), grad))
            return out
        return run

    def close(self) -> None:
        self.clip.visual.forward = self.originals["image"]
        self.clip.encode_text_embeddings = self.originals["text"]

    def reset(self) -> None:
        self.forward_s = dict.fromkeys(self.KINDS, 0.0)

    def record(self, fn: Callable[[], object]) -> None:
        self.calls, self.recording = [], True
        try:
            fn()
        finally:
            self.recording = False

    def describe(self) -> Dict[str, str]:
        """Per kind: how often it ran and whether it needs a backward ("2 fwd+bwd")."""
        out = {}
        for kind in self.KINDS:
            grads = [c[4] for c in self.calls if c[0] == kind]
            parts = [f"{n} {what}" for n, what in ((sum(grads), "fwd+bwd"),
                                                   (len(grads) - sum(grads), "fwd")) if n]
            out[kind] = ", ".join(parts) or "-"
        return out

    def replay(self) -> Dict[str, float]:
        """Seconds of the recorded calls run bare: forward, and backward (to the inputs that
        required grad) where the recorded output required grad."""
        fwd = bwd = 0.0
        for kind, fn, a, kw, grad in self.calls:
            a, kw = _detached(a), _detached(kw)
            self.sync()
            start = time.perf_counter()
            with torch.enable_grad() if grad else torch.no_grad():
                out = fn(*a, **kw)
            self.sync()
            mid = time.perf_counter()
            if grad:
                outs = [t for t in _tensors_of(out, []) if t.requires_grad]
                torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
                self.sync()
            fwd, bwd = fwd + mid - start, bwd + time.perf_counter() - mid
        return {"fwd": fwd, "bwd": bwd}


class StepProfile:
    """Splits a trainer's ``forward_backward`` into data (batch to device), model forward (less
    the encoders' forwards inside it: prompt building), loss and other work, backward and
    optimizer, by wrapping the trainer's own methods."""

    PARTS = ("data", "forward", "backward", "optimizer")

    def __init__(self, trainer, device: torch.device):
        self.trainer = trainer
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        for part, name in (("data", "parse_batch_train"), ("backward", "model_backward"),
                           ("optimizer", "model_update"), ("optimizer", "model_zero_grad")):
            setattr(trainer, name, self._wrap(part, getattr(trainer, name)))
        self.forward_start = None
        model = trainer.model
        self.hooks = [model.register_forward_pre_hook(self._enter),
                      model.register_forward_hook(self._leave)]
        self.encoders_in_forward = 0.0

    def _wrap(self, part: str, original: Callable):
        def run(*a, **kw):
            self.sync()
            start = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.sync()
                self.seconds[part] += time.perf_counter() - start
        return run

    def _enter(self, module, inputs):
        self.sync()
        self.forward_start = time.perf_counter()

    def _leave(self, module, inputs, output):
        if self.forward_start is not None:
            self.sync()
            self.seconds["forward"] += time.perf_counter() - self.forward_start
            self.forward_start = None

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.PARTS, 0.0)


def _limit_trainer(args, name: str, work: str, data: str, backbone: str, compile_: bool):
    """A built trainer of ``name`` on the toy world with the random ViT-B/16, its upstream
    config (batch size, prompts) and fp32 on a CPU; (trainer, notes)."""
    import yaml

    from dassl_lite.cli import build_parser as train_parser, setup_cfg
    from dassl_lite.config import ConfigError
    from dassl_lite.engine import build_trainer
    from dassl_lite.registry import TRAINER_REGISTRY

    cfg_file = upstream_config(name)
    with open(cfg_file) as f:
        upstream = yaml.safe_load(f) or {}
    batch = int(((upstream.get("DATALOADER") or {}).get("TRAIN_X") or {}).get("BATCH_SIZE", 32))
    batch = min(batch, args.limit_batch) if args.limit_batch else batch
    # enough shots of the 64 toy classes for two full batches (upstream batches go up to 256)
    shots = min(LIMIT_TRAIN_PER_CLASS, max(1, -(-2 * batch // 64)))
    prec_key = getattr(TRAINER_REGISTRY.get(name), "precision_key", None)
    cuda = args.device.startswith("cuda")
    out = os.path.join(work, "output", name + ("_compiled" if compile_ else ""))
    argv = ["--trainer", name, "--root", data, "--seed", "1", "--output-dir", out,
            "--dataset-config-file", os.path.join(REPO_ROOT, "configs", "datasets", "toy_shapes.yaml"),
            "--config-file", cfg_file, "MODEL.BACKBONE.NAME", backbone, "INPUT.SIZE", "(224, 224)",
            "DATASET.NUM_SHOTS", str(shots), "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch), "DATALOADER.TEST.BATCH_SIZE", str(batch),
            "DATALOADER.FEATURE_CACHE.ENABLED", "False", "USE_CUDA", str(cuda),
            "MODEL.COMPILE", str(compile_)]
    if prec_key and not cuda:
        argv += [prec_key, "fp32"]
    notes = [os.path.basename(cfg_file)]
    if name in LIMIT_OPTS:
        argv += LIMIT_OPTS[name]
        notes.append(" ".join(LIMIT_OPTS[name]))
    cfg = setup_cfg(train_parser().parse_args(argv))
    cfg.defrost()
    section = cfg.TRAINER.get(prec_key.split(".")[1]) if prec_key else None
    for key, value in (section or {}).items():  # prompt depths and blocks within the cut encoders
        top = args.layers - LIMIT_CUT_KEYS.get(key, 0)
        if key in LIMIT_CUT_KEYS and top < 1 <= LIMIT_CUT_KEYS[key]:
            raise ConfigError(f"{name}'s {key} ({value}) needs a block above it: run with "
                              f"--layers {LIMIT_CUT_KEYS[key] + 1} or more")
        if ("DEPTH" in key or key in LIMIT_CUT_KEYS) and isinstance(value, int) and value > top:
            section[key] = top
            notes.append(f"{key} {value}->{top}")
    cfg.freeze()
    return build_trainer(cfg), batch, notes


def _median_ms(values: List[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


@register("limit", add_limit_arguments,
          "each trainer's training step and eval batch against its frozen encoders' own work")
def bench_limit(args: argparse.Namespace) -> List[Row]:
    import logging
    import tempfile

    _import_trainers()
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from datasets.toy_world import SplitCounts, make_toy_world
    from dassl_lite.registry import TRAINER_REGISTRY
    from dassl_lite.utils.io import atomic_torch_save

    logging.getLogger().setLevel(logging.WARNING)
    names = args.limit_trainers or TRAINER_REGISTRY.names()
    work = args.limit_dir or tempfile.mkdtemp(prefix="dassl_limit_")
    data = os.path.join(work, "data")
    make_toy_world(data, names=["ToyShapes"], counts=SplitCounts(train=LIMIT_TRAIN_PER_CLASS, val=1, test=1))
    backbone = os.path.join(work, "backbones", f"vit_b16_random_{args.layers}layers.pt")
    if not os.path.isfile(backbone):
        torch.manual_seed(0)
        model = CLIP(CLIPConfig(**{**VIT_B16, "vision_layers": args.layers,
                                   "transformer_layers": args.layers}))
        os.makedirs(os.path.dirname(backbone), exist_ok=True)
        atomic_torch_save(model.state_dict(), backbone)
    print(f"limit: random ViT-B/16 with {args.layers} of 12 vision and text layers "
          f"(--layers), 224 px; upstream batch sizes; toy_shapes classes; eval batch = training "
          f"batch; step = forward_backward on a loaded batch (loading it is the 'loader' column)")
    rows = []
    for name in names:
        cls = TRAINER_REGISTRY.get(name)
        if getattr(cls, "task", "classification") != "classification":
            rows.append({"section": "limit", "trainer": name, "note": "out of scope: " + LIMIT_OUT_OF_SCOPE})
            continue
        try:
            rows.append(_limit_row(args, name, work, data, backbone))
        except Exception as e:  # a trainer the probe cannot drive gets a row that says why
            rows.append({"section": "limit", "trainer": name,
                         "note": f"not measured: {type(e).__name__}: {e}".splitlines()[0][:200]})
        print(rows[-1], flush=True)
    return rows


def _limit_row(args, name: str, work: str, data: str, backbone: str) -> Row:
    from dassl_lite.utils import set_random_seed

    device = torch.device(args.device)
    set_random_seed(1)
    trainer, batch_size, notes = _limit_trainer(args, name, work, data, backbone, False)
    model = trainer.unwrapped_model
    clip_model = getattr(model, "clip", None)
    if clip_model is None or not hasattr(clip_model, "encode_text_embeddings"):
        raise TypeError(f"{type(model).__name__} holds no CLIP as .clip (the encoders the limit "
                        f"replays)")
    loader = iter(trainer.train_loader_x)
    loader_s, batches = [], []
    for _ in range(2):
        start = time.perf_counter()
        batches.append(next(loader))
        loader_s.append(time.perf_counter() - start)
    batch = batches[0]
    trainer.epoch, trainer.batch_idx = 0, 0
    trainer.num_batches = len(trainer.train_loader_x)
    trains = bool(getattr(trainer, "trains_on_images", True)) and any(
        p.requires_grad for m in trainer._models.values() for p in m.parameters())
    probe = EncoderProbe(clip_model, device)
    profile = StepProfile(trainer, device) if trains else None
    images = batch["img"].to(device)
    if len(images) != batch_size:  # a row must time the batch it names
        raise ValueError(f"the loader gave a batch of {len(images)} images, not the configured "
                         f"{batch_size} (too few training images for it)")

    def step():
        trainer.set_model_mode("train")
        trainer.forward_backward(batch)

    def evaluate():
        with torch.no_grad():
            trainer.model_inference(images)

    row: Row = {"section": "limit", "trainer": name, "batch": batch_size,
                "classes": trainer.dm.num_classes}
    cases = ([("step", step)] if trains else []) + [("eval", evaluate)]
    timed: Dict[str, Dict[str, List[float]]] = {}
    try:
        for case, fn in cases:
            if case == "eval":
                trainer.set_model_mode("eval")
                trainer.before_test()
            fn()  # warm-up (and whatever a trainer builds at its first step: Tip-Adapter-F's cache)
            probe.record(fn)
            use = probe.describe()
            row.update({f"{case} image": use["image"], f"{case} text": use["text"]})
            t = timed[case] = {k: [] for k in ("run", "limit", "ratio", "image", "text", "lfwd",
                                               "lbwd", *StepProfile.PARTS)}
            for _ in range(args.warmup + args.reps):
                probe.reset()
                if profile:
                    profile.reset()
                sync = probe.sync
                sync()
                start = time.perf_counter()
                fn()
                sync()
                run = time.perf_counter() - start
                seen = dict(probe.forward_s)
                lim = probe.replay()
                for k, v in (("run", run), ("limit", lim["fwd"] + lim["bwd"]),
                             ("lfwd", lim["fwd"]), ("lbwd", lim["bwd"]),
                             ("ratio", run / max(lim["fwd"] + lim["bwd"], 1e-9)), *seen.items(),
                             *((profile.seconds.items()) if profile and case == "step" else ())):
                    t[k].append(v)
            for k in t:
                t[k] = t[k][args.warmup:]
            if case == "eval":
                trainer.after_test()
    finally:
        probe.close()
    for case in timed:
        t = timed[case]
        row[f"{case} ms"] = _median_ms(t["run"])
        row[f"{case} limit ms"] = _median_ms(t["limit"])
        row[f"{case} ratio"] = round(statistics.median(t["ratio"]), 2)
    if "step" in timed:
        t = timed["step"]  # the split of the median step (its parts add up to it)
        mid = sorted(range(len(t["run"])), key=t["run"].__getitem__)[len(t["run"]) // 2]
        med = {k: v[mid] for k, v in t.items() if v}
        enc = med["image"] + med["text"]
        row.update({
            "loader ms": _median_ms(loader_s),
            "data ms": round(med["data"] * 1000, 1),
            "prompts ms": round(max(0.0, med["forward"] - enc) * 1000, 1),
            "text fwd ms": round(med["text"] * 1000, 1),
            "image fwd ms": round(med["image"] * 1000, 1),
            "loss+other ms": round((med["run"] - med["data"] - max(med["forward"], enc)
                                    - med["backward"] - med["optimizer"]) * 1000, 1),
            "backward ms": round(med["backward"] * 1000, 1),
            "limit bwd ms": round(med["lbwd"] * 1000, 1),
            "optimizer ms": round(med["optimizer"] * 1000, 1)})
    if args.compile:
        row.update(_compile_speedup(args, name, work, data, backbone, batch, trains))
    row["note"] = "; ".join(notes)
    return row


def _compile_speedup(args, name: str, work: str, data: str, backbone: str, batch, trains: bool) -> Row:
    """The same step (or eval batch) eager and with MODEL.COMPILE True, interleaved; the first
    compiled call (compilation) timed apart."""
    from dassl_lite.utils import set_random_seed

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    built = {}
    for compiled in (False, True):
        set_random_seed(1)
        trainer = _limit_trainer(args, name, work, data, backbone, compiled)[0]
        trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 1
        built[compiled] = trainer
    images = batch["img"].to(device)

    def make(trainer):
        if trains:
            def step():
                trainer.set_model_mode("train")
                trainer.forward_backward(batch)
        else:
            trainer.set_model_mode("eval")
            trainer.before_test()

            def step():
                with torch.no_grad():
                    trainer.model_inference(images)
        return step

    fns = {k: make(v) for k, v in built.items()}
    sync()
    start = time.perf_counter()
    fns[True]()
    sync()
    compile_s = time.perf_counter() - start
    fns[False]()
    times: Dict[bool, List[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for compiled in (False, True):
            sync()
            start = time.perf_counter()
            fns[compiled]()
            sync()
            times[compiled].append(time.perf_counter() - start)
    eager, comp = statistics.median(times[False]), statistics.median(times[True])
    return {"compiled case": "step" if trains else "eval", "eager ms": round(eager * 1000, 1),
            "compiled ms": round(comp * 1000, 1), "compile speedup": f"{eager / comp:.2f}x",
            "first compiled call s": round(compile_s, 1)}


# --------------------------------------------------------------------------- adaclip
def add_adaclip_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("adaclip", "AdaCLIP: train step and eval batch")
    group.add_argument("--adaclip-size", type=int, default=518, help="input side (upstream 518)")
    group.add_argument("--adaclip-layers", type=int, default=4,
                       help="vision and text blocks of the random ViT-L/14-wide CLIP (upstream 24 "
                            "/ 12)")
    group.add_argument("--adaclip-batch", type=int, default=1, help="images (upstream trains at 1)")


@register("adaclip", add_adaclip_arguments, "AdaCLIP train step / eval batch (time, memory)")
def bench_adaclip(args: argparse.Namespace) -> List[Row]:
    import resource

    _import_trainers()
    from trainers.anomaly.adaclip_model import AdaCLIPLearner, AdaCLIPModel, adaclip_loss

    device, n, size, b = torch.device(args.device), args.adaclip_layers, args.adaclip_size, \
        args.adaclip_batch
    clip_model, layers = random_vit_l14_336(n, n, device)
    clip_model.visual.pos_interpolation = "bicubic"
    learner = AdaCLIPLearner(1024, 768, 768, len(layers), 5, min(4, n), "VL", "SD").to(device)
    model = AdaCLIPModel(clip_model, learner, layers, True, 20)
    optim = torch.optim.AdamW(learner.parameters(), lr=0.01, betas=(0.5, 0.999))
    images = torch.randn(b, 3, size, size, device=device)
    masks = (torch.rand(b, 1, size, size, device=device) > 0.9).float()
    labels = torch.arange(b, device=device) % 2
    categories = ["bottle"] * b
    shape = (f"{b}x3x{size}x{size}, {n} vision + {n} text blocks of ViT-L/14@336 widths (maps "
             f"from {layers}), {(size // 14) ** 2} patches, 2 x 48 prompted sentences, HSF K=20")

    def train_step():
        maps, score = model(images, categories, aggregation=False)
        loss = adaclip_loss(maps, score, masks, labels)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()

    def eval_batch():
        with torch.no_grad():
            return model(images, categories, aggregation=True)

    rows = []
    for case, fn in (("train step", train_step), ("eval batch", eval_batch)):
        cpu = time.process_time()
        ms, mb = measure(fn, args.reps, device, clip_model)
        cpu_ms = (time.process_time() - cpu) * 1000 / args.reps
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        rows.append({"section": "adaclip", "case": case, "shape": shape, "ours ms": round(ms, 1),
                     "ours CPU ms": round(cpu_ms, 1), "memory": "peak CUDA MB" if device.type == "cuda" else
                     "saved-for-backward MB", "ours MB": mb if mb is not None else "-",
                     "process peak RSS MB": rss})
    return rows


# --------------------------------------------------------------------------- aprilgan section
APRILGAN_PRESETS = {
    "cpu": dict(aprilgan_batch=2, aprilgan_layers=4, aprilgan_size=518),
    "vit-l14": dict(aprilgan_batch=8, aprilgan_layers=24, aprilgan_size=518),
}


def add_aprilgan_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("aprilgan", "APRIL-GAN: train step and evaluation batch")
    group.add_argument("--aprilgan-preset", choices=sorted(APRILGAN_PRESETS), default="cpu",
                       help="cpu: ViT-L/14 widths at 518 px with 4 vision blocks, batch 2; "
                            "vit-l14: all 24 blocks, batch 8 (upstream)")
    for key in APRILGAN_PRESETS["cpu"]:
        group.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                           help=f"overrides the preset (cpu: {APRILGAN_PRESETS['cpu'][key]}, "
                                f"vit-l14: {APRILGAN_PRESETS['vit-l14'][key]})")


@register("aprilgan", add_aprilgan_arguments,
          "APRIL-GAN train step / zero- and few-shot eval batch at 518 px")
def bench_aprilgan(args: argparse.Namespace) -> List[Row]:
    """APRIL-GAN on a random CLIP of ViT-L/14@336 widths (exact GELU, open_clip's position
    resizing, as upstream at 518 px): a training step (frozen encoder, 4 linear layers, focal +
    Dice, Adam) and an evaluation batch, zero-shot and 1-shot (memory bank of one image). The
    method has no attention path of its own, so there is no reference to race."""
    _import_trainers()
    from dassl_lite.clip import use_exact_gelu
    from trainers.anomaly.aprilgan import APRILGANModel, LinearLayer, aprilgan_loss, memory_map

    for k, v in APRILGAN_PRESETS[args.aprilgan_preset].items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    device = torch.device(args.device)
    n, b, size = args.aprilgan_layers, args.aprilgan_batch, args.aprilgan_size
    clip_model, layers = random_vit_l14_336(n, 1, device)
    use_exact_gelu(clip_model)
    clip_model.visual.pos_interpolation = "bicubic_antialias"
    learner = LinearLayer(1024, 768, len(layers)).to(device)
    model = APRILGANModel(clip_model, learner, layers)
    text = torch.nn.functional.normalize(torch.randn(b, 768, 2, device=device), dim=1)
    images = torch.randn(b, 3, size, size, device=device)
    masks = (torch.rand(b, 1, size, size, device=device) > 0.9).float()
    with torch.no_grad():
        refs = clip_model.visual.forward_features(images[:1], layers).tokens
    banks = [torch.nn.functional.normalize(t[0, 1:], dim=-1) for t in refs]
    optim = torch.optim.Adam(learner.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def train_step():
        loss = aprilgan_loss(model(images, text)["maps"], masks)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()

    def eval_zero_shot():
        with torch.no_grad():
            return model(images, text)["anomaly_map"]

    def eval_one_shot():
        with torch.no_grad():
            out = model(images, text, layers)
            return out["anomaly_map"] + memory_map(out["blocks"], banks, (size, size))

    shape = (f"{b}x3x{size}x{size}, {n} blocks of ViT-L/14 (maps from {layers}), "
             f"{1 + (size // 14) ** 2} tokens")
    memory = "peak CUDA MB" if device.type == "cuda" else "saved-for-backward MB"
    rows = []
    for case, fn in (("train step", train_step), ("eval batch, zero-shot", eval_zero_shot),
                     ("eval batch, 1-shot", eval_one_shot)):
        ms, mb = measure(fn, args.reps, device, clip_model)
        rows.append({"section": "aprilgan", "case": case, "shape": shape, "ours ms": round(ms, 1),
                     "memory": memory, "ours MB": mb if mb is not None else "-"})
    return rows


# --------------------------------------------------------------------------- winclip
def add_winclip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--winclip-layers", type=int, default=12,
                        help="winclip: ViT blocks of the random ViT-B-16-plus-240-shaped encoder")
    parser.add_argument("--winclip-scales", type=int, nargs="+", default=[2, 3],
                        help="winclip: window sides in patches (upstream 2 3)")


@register("winclip", add_winclip_arguments,
          "WinCLIP evaluation of one 240 px image: windows batched vs one encoder call each")
def bench_winclip(args: argparse.Namespace) -> List[Row]:
    import resource

    import torch.nn.functional as F

    from dassl_lite.clip.vit import VisionTransformer
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from trainers.anomaly import winclip as W

    device = torch.device(args.device)
    torch.manual_seed(0)
    visual = VisionTransformer(240, 16, 896, args.winclip_layers, 14, 640).to(device).eval()
    image = torch.randn(1, 3, 240, 240, device=device)
    text = F.normalize(torch.randn(1, 2, 640, device=device), dim=-1)
    grid, scales = (15, 15), args.winclip_scales
    indices = [W.window_index(grid, s).to(device) for s in scales]

    def evaluate(encode):
        tokens = W.embed_tokens(visual, image)
        x = visual.transformer(tokens)
        z0 = W.state_probability(visual.project_tokens(x[:, 0]), text, 0.07)
        inv = 1.0 / z0.double().unsqueeze(1)
        for feats, idx in zip(encode(visual, tokens, grid, scales), indices):
            inv = inv + 1.0 / W.harmonic_aggregation(W.state_probability(feats, text, 0.07), idx, 225)
        return (len(scales) + 1) / inv

    with torch.inference_mode():
        ref, out = evaluate(W.encode_windows_loop), evaluate(W.encode_windows)
    diff = (ref - out).abs().max().item()
    if diff > 1e-5:
        raise AssertionError(f"winclip: batched and per-window maps differ by {diff:.3g}")
    rows, n_windows = [], sum(i.shape[0] for i in indices)
    for case, encode in (("one encoder call per window", W.encode_windows_loop),
                         ("all windows in one call (packed)", W.encode_windows)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ms = time_ms(lambda: evaluate(encode), args.reps, args.warmup, device)
        peak = (round(torch.cuda.max_memory_allocated(device) / 2 ** 20) if device.type == "cuda"
                else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        rows.append({"section": "winclip", "case": case,
                     "shape": f"1x240px, {n_windows} windows {scales}, {args.winclip_layers} blocks",
                     "ms": round(ms, 1), "peak MB" + (" (CUDA)" if device.type == "cuda"
                                                      else " (process RSS so far)"): peak,
                     "max |map diff|": f"{diff:.1e}"})
    return rows


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
