"""WinCLIP and WinCLIP+ (Jeong et al., CVPR 2023), training-free, as the accurate
re-implementation zqhang/Accurate-WinCLIP-pytorch computes it (``reproduce_WinCLIP.py``,
``few_shot.py``, ``src/open_clip/transformer.py``), whose numbers match the paper's.

Text (compositional prompt ensemble): per category ``c``, the ``NORMAL_STATES`` (7) and
``ANOMALOUS_STATES`` (4) state words, each in all ``TEMPLATES`` (21, one listed twice upstream
and kept): 147 normal and 84 anomalous prompts. Each state's feature is the MEAN OF THE RAW text
features (upstream does not normalise before averaging), normalised when scored.

Image: OpenCLIP ViT-B-16-plus-240 at 240 px (15x15 patches of 16 px). A window of ``s x s``
patches (``TRAINER.WINCLIP.SCALES``, upstream 2 and 3 = 32 and 48 px, stride one patch) is
encoded as the class token plus the window's patch tokens (with their positional embedding)
through the whole ViT; its feature is ``ln_post(CLS) @ proj``. With ``T = 0.07``::

    p(x)      = softmax([cos(x, T_n(c)), cos(x, T_a(c))] / T)[anomalous]
    window    : p(window feature); image: z0 = p(ln_post(CLS) @ proj of the whole image)
    scale map : per patch, the harmonic mean of p over the windows that cover it
    map       = harmonic mean over (each scale map, z0)     (upstream: 3 / (1/l + 1/m + 1/z0))
    score     = z0

WinCLIP+ (``DATASET.NUM_SHOTS`` k > 0): per category the window features of each scale and the
raw last-block patch tokens (before ``ln_post``) of k normal references form memories; a test
window / patch scores ``min (1 - cos) / 2`` against its memory; window distances are aggregated
per patch harmonically as above, and ``few = mean(scale maps..., patch map)``. Then
``map = map + few`` and ``score = (z0 + max(few)) / 2``.

Window encoding is batched: the patch embedding, positional embedding, ``ln_pre`` and the first
block's ``ln_1`` and q/k/v projections are per-token and computed once per image, then gathered
into the windows; the windows of every scale and every image of the batch run through the
encoder in one call, packed into rows of the longest window's length (two 2x2 windows, 5 tokens
each, share a 10-token row with a 3x3 window's length) with a block-diagonal attention mask.
:func:`encode_windows_loop` (one encoder call per window) is the reference it is tested against.

Differences from upstream: upstream's loop over patches in ``harmonic_aggregation`` is a
scatter-add here (same double-precision maths); the k references are drawn by the dataset with
the run's seed. Nothing is trained or saved.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.config import ConfigError, register_config_extender
from dassl_lite.config.validate import check_number
from dassl_lite.engine import TrainingFreeAnomalyTrainer
from dassl_lite.engine.anomaly_core import encode_prompt_ensemble
from dassl_lite.registry import TRAINER_REGISTRY

from ..prompting import load_dense_vit

logger = logging.getLogger(__name__)

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage")
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.",
    "a dark photo of a {}.", "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.",
    "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.")


@register_config_extender("WinCLIP")
def add_winclip_config(cfg) -> None:
    """``TRAINER.WINCLIP``: precision, window scales, temperature, position interpolation."""
    cfg.TRAINER.WINCLIP = CN()
    cfg.TRAINER.WINCLIP.PREC = "fp32"
    cfg.TRAINER.WINCLIP.SCALES = (2, 3)  # window sides in patches (upstream 32 and 48 px)
    cfg.TRAINER.WINCLIP.TEMPERATURE = 0.07
    cfg.TRAINER.WINCLIP.POS_INTERPOLATION = ""  # "" = input must be the backbone's size


def state_prompts(category: str) -> List[List[str]]:
    """[[147 normal prompts], [84 anomalous prompts]] of ``category``, upstream's order (state
    word outer, template inner); the name is used as given (upstream keeps underscores)."""
    return [[t.format(s.format(category)) for s in states for t in TEMPLATES]
            for states in (NORMAL_STATES, ANOMALOUS_STATES)]


def window_index(grid: Tuple[int, int], side: int) -> Tensor:
    """[n_windows, side*side]: the 0-based patch indices of every ``side x side`` window of a
    ``grid`` at stride 1, in ``F.unfold`` order (windows row-major, patches row-major)."""
    h, w = grid
    if not 1 <= side <= min(h, w):
        raise ConfigError(f"TRAINER.WINCLIP.SCALES: a window of {side}x{side} patches does not "
                          f"fit the {h}x{w} patch grid (INPUT.SIZE / patch size)")
    board = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    return F.unfold(board, side, stride=1)[0].T.round().long()


def harmonic_aggregation(scores: Tensor, index: Tensor, num_patches: int) -> Tensor:
    """[B, num_patches] float64: per patch, ``count / sum(1 / s)`` over the windows covering it
    (``scores`` [B, n_windows], ``index`` from :func:`window_index`)."""
    inv = (1.0 / scores.double()).repeat_interleave(index.shape[1], dim=1)
    flat = index.reshape(-1).to(scores.device)
    total = torch.zeros(scores.shape[0], num_patches, dtype=torch.float64, device=scores.device)
    total.index_add_(1, flat, inv)
    count = torch.bincount(flat, minlength=num_patches).double()
    return count / total


def embed_tokens(visual, images: Tensor) -> Tensor:
    """[B, 1 + N, width]: ``ln_pre`` of CLS + patch tokens with their positional embedding."""
    return visual.ln_pre(visual.embed(images))


def _pack_plan(indices: Sequence[Tensor], device: torch.device):
    """Rows of one image holding every window of every scale (``indices`` from
    :func:`window_index`): (gather [R, L] into the image's 1 + N tokens, segment id [R, L] (a
    position attends to its own segment only), per scale the (row, position) of each window's
    CLS). L = the longest window's token count; a row holds ``L // n`` windows of n tokens."""
    length = 1 + max(i.shape[1] for i in indices)
    gather, segment, where, base = [], [], [], 0
    for idx in indices:
        count, n = idx.shape[0], 1 + idx.shape[1]
        per_row = length // n
        rows = -(-count // per_row)
        pad = length - per_row * n
        slots = torch.zeros(rows * per_row, n, dtype=torch.long)  # [CLS, window patches]
        slots[:count, 1:] = idx + 1
        gather.append(torch.cat([slots.view(rows, per_row * n),
                                 torch.zeros(rows, pad, dtype=torch.long)], dim=1))
        seg = torch.cat([torch.arange(per_row).repeat_interleave(n), per_row + torch.arange(pad)])
        segment.append(seg.expand(rows, -1))
        w = torch.arange(count)
        where.append(((base + w // per_row).to(device), ((w % per_row) * n).to(device)))
        base += rows
    return torch.cat(gather).to(device), torch.cat(segment).to(device), where


def _masked_block(block, x: Tensor, mask: Optional[Tensor],
                  qkv: Optional[Tuple[Tensor, Tensor, Tensor]] = None) -> Tensor:
    """``block(x)`` with attention restricted by ``mask`` [R, L, L] (True = may attend);
    ``qkv`` given: the block's q, k, v of ``ln_1(x)``, computed elsewhere."""
    n, length, width = x.shape
    q, k, v = qkv if qkv is not None else block.attn.qkv(block.ln_1(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None])
    x = x + block.attn.project_out(out.transpose(1, 2).reshape(n, length, width))
    return x + block.mlp(block.ln_2(x))


def encode_windows(visual, tokens: Tensor, grid: Tuple[int, int],
                   scales: Sequence[int]) -> List[Tensor]:
    """Per scale, [B, n_windows, output_dim]: ``ln_post(CLS) @ proj`` of every window, all
    windows of all images in one encoder call (module docstring). ``tokens`` from
    :func:`embed_tokens`."""
    b, seq, width = tokens.shape
    gather, segment, where = _pack_plan([window_index(grid, s) for s in scales], tokens.device)
    rows, length = gather.shape
    flat = (gather.unsqueeze(0) + seq * torch.arange(b, device=tokens.device).view(b, 1, 1))
    flat = flat.reshape(-1)  # image-major rows
    mask = (segment.unsqueeze(2) == segment.unsqueeze(1))
    mask = None if bool(mask.all()) else mask.repeat(b, 1, 1)
    blocks = list(visual.transformer.resblocks)
    first = blocks[0]
    q, k, v = first.attn.qkv(first.ln_1(tokens))  # [B, heads, seq, d]: shared by all windows

    def pick(t: Tensor) -> Tensor:
        heads, d = t.shape[1], t.shape[3]
        t = t.transpose(1, 2).reshape(b * seq, heads, d)[flat]
        return t.view(b * rows, length, heads, d).transpose(1, 2)

    x = tokens.reshape(b * seq, width)[flat].view(b * rows, length, width)
    x = _masked_block(first, x, mask, (pick(q), pick(k), pick(v)))
    for block in blocks[1:]:
        x = _masked_block(block, x, mask)
    x = x.view(b, rows, length, width)
    return [visual.project_tokens(x[:, r, p]) for r, p in where]


def encode_windows_loop(visual, tokens: Tensor, grid: Tuple[int, int],
                        scales: Sequence[int]) -> List[Tensor]:
    """:func:`encode_windows` with one plain encoder call per window (the reference)."""
    out = []
    for side in scales:
        feats = []
        for idx in window_index(grid, side):
            sel = torch.cat([torch.zeros(1, dtype=torch.long), idx + 1]).to(tokens.device)
            x = visual.transformer(tokens[:, sel])
            feats.append(visual.project_tokens(x[:, 0]))
        out.append(torch.stack(feats, dim=1))
    return out


def state_probability(feats: Tensor, text: Tensor, temperature: float) -> Tensor:
    """[B, ...]: anomalous probability of ``feats`` [B, ..., E] against ``text`` [B, 2, E]."""
    feats = F.normalize(feats.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    shape = feats.shape
    logits = feats.reshape(shape[0], -1, shape[-1]) @ text.transpose(1, 2) / temperature
    return logits.softmax(dim=-1)[..., 1].view(shape[:-1])


def memory_distance(queries: Tensor, bank: Tensor) -> Tensor:
    """[n]: ``min_j (1 - cos(q_i, bank_j)) / 2`` (``bank`` [M, D] L2-normalised)."""
    return 0.5 * (1.0 - F.normalize(queries.float(), dim=-1) @ bank.T).min(dim=1).values


@TRAINER_REGISTRY.register()
class WinCLIP(TrainingFreeAnomalyTrainer):
    """WinCLIP (zero-shot) and WinCLIP+ (k-shot), training-free (module docstring)."""

    precision_key = "TRAINER.WINCLIP.PREC"
    config_sections = ("WINCLIP",)
    # rows of tools/anomaly.py --table: (label, config file under configs/trainers/<T>/, shots)
    TABLE_ROWS = (("WinCLIP", "toy", (0,)), ("WinCLIP+", "toy", (1, 2, 4)))

    def build_model(self) -> None:
        cfg = self.cfg.TRAINER.WINCLIP
        check_number("TRAINER.WINCLIP.TEMPERATURE", cfg.TEMPERATURE, 1e-6, 100.0)
        self.clip = load_dense_vit(self.cfg, self.precision.model_dtype, self.device, "WinCLIP")
        visual = self.clip.visual
        visual.pos_interpolation = cfg.POS_INTERPOLATION or None  # "": the backbone's size only
        self.scales = [int(s) for s in cfg.SCALES]
        if not self.scales or any(s < 1 for s in self.scales):
            raise ConfigError(f"TRAINER.WINCLIP.SCALES must list window sides in patches "
                              f"(>= 1; upstream (2, 3)); got {tuple(cfg.SCALES)}")
        size, patch = tuple(self.cfg.INPUT.SIZE), visual.patch_size
        for side in self.scales:  # refuse a window larger than the patch grid now
            window_index((size[0] // patch, size[1] // patch), side)
        self.model = self.clip
        with self.precision.autocast():
            self.text = {c: encode_prompt_ensemble(self.clip, state_prompts(c),
                                                   normalize_members=False)
                         for c in self.dm.dataset.categories}
        logger.info("WinCLIP: window scales %s (patches), %d normal and %d anomalous prompts",
                    self.scales, *(len(p) for p in state_prompts("bottle")))
        self.memory: Optional[Dict[str, List[Tensor]]] = None
        if self.cfg.DATASET.NUM_SHOTS > 0:
            self.memory = self.build_memory()

    def features(self, images: Tensor):
        """(image feature [B, E], per scale window features [B, n_w, E], raw last-block patch
        tokens [B, N, width], grid)."""
        visual = self.clip.visual
        tokens = embed_tokens(visual, images)
        grid = visual.input_grid(images)
        x = visual.transformer(tokens)
        image = visual.project_tokens(x[:, 0])
        windows = encode_windows(visual, tokens, grid, self.scales)
        return image, windows, x[:, 1:], grid

    @torch.no_grad()
    def build_memory(self) -> Dict[str, List[Tensor]]:
        """Per category: normalised window features per scale, then raw patch tokens, of its k
        reference images."""
        memory = {}
        for category in self.dm.dataset.categories:
            images = self.reference_images(category)
            with self.precision.autocast():
                _, windows, patches, _ = self.features(images)
            memory[category] = [F.normalize(t.float().flatten(0, 1), dim=-1)
                                for t in (*windows, patches)]
            logger.info("WinCLIP+ memory %r: %d reference images", category, images.shape[0])
        return memory

    @torch.no_grad()
    def model_inference(self, images: Tensor) -> Dict[str, Tensor]:
        categories = self.batch_categories
        temperature = self.cfg.TRAINER.WINCLIP.TEMPERATURE
        image, windows, patches, (h, w) = self.features(images)
        text = torch.stack([self.text[c] for c in categories]).to(image.device)  # [B, 2, E]
        z0 = state_probability(image, text, temperature)  # [B]
        indices = [window_index((h, w), s).to(image.device) for s in self.scales]
        inv = 1.0 / z0.double().unsqueeze(1)
        for feats, idx in zip(windows, indices):
            prob = state_probability(feats, text, temperature)
            inv = inv + 1.0 / harmonic_aggregation(prob, idx, h * w)
        amap = torch.nan_to_num((len(indices) + 1) / inv, nan=0.0, posinf=0.0, neginf=0.0)
        score = z0.double()
        if self.memory is not None:
            few = []
            for i, c in enumerate(categories):
                parts = [harmonic_aggregation(memory_distance(f[i], bank)[None], idx, h * w)[0]
                         for f, idx, bank in zip(windows, indices, self.memory[c])]
                parts.append(memory_distance(patches[i], self.memory[c][-1]).double())
                few.append(sum(parts) / len(parts))
            few = torch.nan_to_num(torch.stack(few), nan=0.0, posinf=0.0, neginf=0.0)
            amap = amap + few
            score = (score + few.max(dim=1).values) / 2
        return {"image_score": score.float(), "anomaly_map": amap.float().view(-1, h, w)}
