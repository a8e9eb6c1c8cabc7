"""AF-CLIP's modules against independent re-statements of upstream's code."""
import math

import pytest
import torch
import torch.nn.functional as F

from dassl_lite.clip import CLIP, CLIPConfig
from trainers.anomaly.afclip_losses import afclip_loss, focal_loss, grid_masks, patch_alignment_loss
from trainers.anomaly.afclip_model import (Adaptor, AFCLIPLearner, AFCLIPModel, MemoryBank,
                                   aggregate_all, aggregate_neighbors, gaussian_kernel)

CFG = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=4, vision_width=64,
                 vision_patch_size=8, vision_heads=2, context_length=77, vocab_size=49408,
                 transformer_width=32, transformer_heads=2, transformer_layers=2)


@pytest.fixture(scope="module")
def afclip():
    torch.manual_seed(0)
    clip_model = CLIP(CFG).eval().requires_grad_(False)
    learner = AFCLIPLearner(clip_model, prompt_len=4, heads=2, head_dim=16)
    return AFCLIPModel(clip_model, learner, layers=[1, 2, 3, 4], sizes=[1, 3, 5], sigma=4.0,
                       temperature=0.07)


def unfold_reference(x, r, sigma):
    """Upstream's aggerate_neighbor: F.unfold with zero padding, weighted sum over r*r cells."""
    cls, x = x[:, :1], x[:, 1:]
    b, n, c = x.shape
    h = int(math.sqrt(n))
    x = F.unfold(x.reshape(b, h, h, c).permute(0, 3, 1, 2), kernel_size=r, padding=r // 2)
    x = x.permute(0, 2, 1).reshape(-1, c, r * r).permute(0, 2, 1)
    x = (x * gaussian_kernel(r, sigma).reshape(1, r * r, 1)).sum(dim=1).reshape(b, n, c)
    return torch.cat([cls, x], dim=1)


def test_gaussian_kernel():
    k = gaussian_kernel(5, 4.0)
    assert k.shape == (5, 5) and abs(k.sum().item() - 1) < 1e-6
    assert k[2, 2] == k.max() and torch.equal(k, k.t()) and torch.equal(k, k.flip(0))
    assert torch.allclose(gaussian_kernel(3, 4.0)[0, 0] / gaussian_kernel(3, 4.0)[1, 1],
                          torch.tensor(math.exp(-2 / 32)))


@pytest.mark.parametrize("r", [1, 3, 5])
def test_aggregation_matches_unfold(r):
    torch.manual_seed(1)
    x = torch.randn(2, 1 + 36, 8)
    out = aggregate_neighbors(x, r, 4.0)
    torch.testing.assert_close(out, unfold_reference(x, r, 4.0) if r > 1 else x)
    assert torch.equal(out[:, 0], x[:, 0])  # CLS untouched
    assert len(aggregate_all([x, x], [1, 3, 5], 4.0)) == 6


def softmax_adaptor(adaptor, x):
    """Upstream CrossAttention: explicit softmax(q k^T * scale) v, then to_out."""
    blk = adaptor.attention
    h = blk.attn.heads
    y = blk.norm(x)
    q, k, v = (t.view(*t.shape[:2], h, -1).transpose(1, 2)
               for t in (blk.attn.to_q(y), blk.attn.to_k(y), blk.attn.to_v(y)))
    attn = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return blk.attn.to_out((attn @ v).transpose(1, 2).flatten(2))


def test_adaptor_sdpa_equals_softmax_and_has_no_residual():
    torch.manual_seed(2)
    adaptor = Adaptor(64, heads=8, head_dim=64)
    x = torch.randn(2, 17, 64)
    torch.testing.assert_close(adaptor(x), softmax_adaptor(adaptor, x), rtol=1e-5, atol=1e-5)
    keys = set(adaptor.state_dict())
    assert keys == {"attention.attn.to_q.weight", "attention.attn.to_k.weight",
                    "attention.attn.to_v.weight", "attention.attn.to_out.0.weight",
                    "attention.attn.to_out.0.bias", "attention.norm.weight", "attention.norm.bias"}
    big = Adaptor(1024)
    assert sum(p.numel() for p in big.parameters()) == 2_100_224
    with torch.no_grad():  # no residual: zero output projection gives a constant (bias) output
        adaptor.attention.attn.to_out[0].weight.zero_()
    assert torch.allclose(adaptor(x), adaptor.attention.attn.to_out[0].bias.expand_as(x))


def test_forward_shapes_scores_and_distinct_layer_maps(afclip):
    images = torch.randn(2, 3, 48, 48)  # 6x6 grid: interpolated from the stored 4x4
    pos = afclip.clip.visual.positional_embedding.clone()
    out = afclip(images)
    assert torch.equal(afclip.clip.visual.positional_embedding, pos)  # stored model unchanged
    assert out["image_score"].shape == (2,) and out["anomaly_map"].shape == (2, 6, 6)
    assert len(out["tokens"]) == 12 and out["tokens"][0].shape == (2, 37, 16)
    assert ((out["anomaly_map"] > 0) & (out["anomaly_map"] < 1)).all()
    # Per-layer maps differ from each other (guards against aliased layer outputs).
    flat = [t.detach() for t in out["tokens"][::3]]
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            assert not torch.allclose(flat[i], flat[j], atol=1e-4), (i, j)
    # Summed logits over 12 maps / 0.07, softmax; image score at CLS.
    text = afclip.text_features()
    logits = sum(F.normalize(t, dim=-1) @ text.t() for t in out["tokens"]) / 0.07
    prob = logits.softmax(-1)[..., 1]
    torch.testing.assert_close(out["image_score"], prob[:, 0])
    torch.testing.assert_close(out["anomaly_map"], prob[:, 1:].reshape(2, 6, 6))


def test_text_cache(afclip):
    fresh = afclip.text_features()
    afclip.cache_text()
    assert afclip._text_cache is not None and not afclip._text_cache.requires_grad
    torch.testing.assert_close(afclip.text_features(), fresh.detach())
    afclip.clear_text_cache()
    assert afclip.text_features().requires_grad


def brute_force_pal(tokens, grid):
    """Upstream's patch_alignment_loss with the explicit rule for a batch without cross pairs."""
    g = grid.reshape(grid.shape[0], -1).clone()
    g[g == 0] = -1
    mask = g[:, :, None] * g[:, None, :]
    if not (mask == -1).any():
        return torch.tensor(0.0)
    total = 0
    for t in tokens:
        x = F.normalize(t[:, 1:], dim=-1)
        sim = x @ x.transpose(1, 2)
        total = total + torch.clamp(sim[mask == -1].mean() - sim[mask == 1].mean(), min=0)
    return total / len(tokens)


def test_patch_alignment_closed_form_equals_brute_force():
    torch.manual_seed(3)
    grid = torch.zeros(3, 4, 4)
    grid[0, 1:3, 1:3] = 1
    grid[2, 0, :] = 1
    m = torch.randn(8)
    tokens = [m + 2 * torch.randn(3, 17, 8) for _ in range(3)]
    for t in tokens[:2]:  # anomalous patches at the normal mean: cross pairs more similar
        t[:, 1:][grid.reshape(3, 16) > 0] = m
    ours = patch_alignment_loss(tokens, grid)
    assert ours > 0.01  # not clamped away
    torch.testing.assert_close(ours, brute_force_pal(tokens, grid), rtol=1e-5, atol=1e-6)
    tokens = [t.requires_grad_() for t in tokens]
    patch_alignment_loss(tokens, grid).backward()
    assert all(torch.isfinite(t.grad).all() for t in tokens)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_patch_alignment_zero_without_cross_pairs(fill):
    tokens = [torch.randn(2, 17, 8, requires_grad=True)]
    out = patch_alignment_loss(tokens, torch.full((2, 4, 4), fill))
    assert out.item() == 0.0 and torch.isfinite(out)


def test_focal_and_grid_masks():
    p, t = torch.tensor([0.9, 0.2, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    expected = (-torch.log(torch.tensor([0.9, 0.8, 0.5])) * torch.tensor([0.1, 0.2, 0.5]) ** 4).mean()
    torch.testing.assert_close(focal_loss(p, t, 4.0), expected)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :8, :8] = 1
    g = grid_masks(mask, 4)
    assert g.shape == (1, 4, 4) and g.sum() == 1 and g[0, 0, 0] == 1


def test_afclip_loss_terms_finite_and_backprop(afclip):
    images, masks = torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32)
    masks[1, 8:24, 8:24] = 1
    out = afclip(images)
    terms = afclip_loss(out, torch.tensor([0, 1]), masks, 4.0, 1.0, 1.0)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    learner = afclip.learner
    assert learner.prompt.state_prompt_embedding.grad.abs().sum() > 0
    assert learner.adaptor.attention.attn.to_q.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in afclip.clip.parameters())
    learner.zero_grad()


def test_memory_bank(afclip):
    torch.manual_seed(4)
    normal = torch.randn(2, 3, 32, 32)
    layers = [1, 2, 3, 4]
    bank = MemoryBank(layers, [1, 3, 5], 4.0)
    bank.store("bottle", afclip.block_tokens(normal, layers))
    assert len(bank.banks["bottle"]) == 12 and bank.banks["bottle"][0].shape == (32, 64)
    same = bank.score("bottle", afclip(normal, extra_layers=layers)["blocks"].values())
    assert same["anomaly_map"].shape == (2, 4, 4) and same["anomaly_map"].abs().max() < 1e-5
    other = bank.score("bottle", afclip.block_tokens(torch.randn(1, 3, 32, 32), layers))
    assert other["anomaly_map"].min() > 0
    assert other["image_score"] == other["anomaly_map"].max()
    with pytest.raises(KeyError, match="no memory bank for category 'cable'; stored: \\['bottle'\\]"):
        bank.score("cable", afclip.block_tokens(normal, layers))


# ---------------------------------------------------------------- the published gradient
def upstream_focal(inputs, targets, gamma=4):
    """Upstream main.py focal_loss (alpha -1, mean)."""
    inputs, targets = inputs.float(), targets.float()
    ce_loss = F.binary_cross_entropy(inputs, targets, reduction="none")
    p_t = inputs * targets + (1 - inputs) * (1 - targets)
    return (ce_loss * ((1 - p_t) ** gamma)).mean()


def upstream_pal(img_tokens, gts, copy_fn):
    """Upstream main.py patch_alignment_loss; ``copy_fn`` is upstream's ``copy.copy`` (or
    ``torch.clone`` for the corrected reference)."""
    gts = gts.reshape(img_tokens[0].size(0), -1)
    new_gts = copy_fn(gts)  # upstream: copy.copy(gts), storage shared with gts
    if (len(new_gts[new_gts == 0])) == 0:
        return 0
    new_gts[new_gts == 0] = -1
    b, l = new_gts.size()
    mask = torch.matmul(new_gts.reshape(b, l, 1), new_gts.reshape(b, 1, l))
    total_sim = 0
    for img_token in img_tokens:
        img_token = F.normalize(img_token[:, 1:, :], dim=-1)
        sim = torch.matmul(img_token, img_token.permute(0, 2, 1))
        sim = sim[mask == -1].mean() - sim[mask == 1].mean()
        total_sim = total_sim + (sim if sim > 0 else 0)
    return total_sim / len(img_tokens)


def upstream_step_loss(out, labels, gts, copy_fn):
    """Upstream main.py's training lines, word for word but for the names of the outputs."""
    predict_labels, predict_masks = out["image_score"], out["anomaly_map"][:, None]
    gts = F.interpolate(gts, size=predict_masks[0].shape[-2:], mode="bilinear")
    gts[gts < 0.5] = 0
    gts[gts > 0.5] = 1
    return (upstream_focal(predict_labels, labels)
            + 1.0 * (upstream_focal(predict_masks, gts) + F.l1_loss(predict_masks, gts))
            + 1.0 * upstream_pal(out["tokens"], gts, copy_fn))


def learner_grad(afclip, loss_fn):
    afclip.learner.zero_grad()
    loss = loss_fn(afclip(GRAD_IMAGES))
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1).clone() for p in afclip.learner.parameters()])
    afclip.learner.zero_grad()
    return loss.detach(), grad


torch.manual_seed(5)
GRAD_IMAGES = torch.randn(2, 3, 32, 32)
GRAD_MASKS = torch.zeros(2, 1, 32, 32)
GRAD_MASKS[1, :, 5:21, 9:27] = 1  # cells fully in, partly in (one at exactly 0.5) and out
GRAD_MASKS[1, :, 29:, :] = 0.5
GRAD_LABELS = torch.tensor([0, 1])


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_upstream_gradient_is_the_published_one_and_corrected_differs(afclip):
    """SEG_GRADIENT "upstream" equals upstream's three lines with copy.copy (1e-5 relative);
    "corrected" equals them with a real copy; the loss value is the same in all four.
    Temperature 0.5: at 0.07 this random model's probabilities saturate (loss ~127, logs
    clamped at -100) and the two gradients differ by only 0.4 %; at 0.5 they differ by 27 %
    and ours equal upstream's to about 3e-9 relative."""
    import copy

    afclip = AFCLIPModel(afclip.clip, afclip.learner, layers=[1, 2, 3, 4], sizes=[1, 3, 5],
                         sigma=4.0, temperature=0.5)

    def ours(setting):
        return lambda out: afclip_loss(out, GRAD_LABELS, GRAD_MASKS.clone(), 4.0, 1.0, 1.0,
                                       setting)["loss"]

    def theirs(copy_fn):
        return lambda out: upstream_step_loss(out, GRAD_LABELS, GRAD_MASKS.clone(), copy_fn)

    loss_up, g_up = learner_grad(afclip, theirs(copy.copy))
    loss_fix, g_fix = learner_grad(afclip, theirs(torch.clone))
    loss_ours_up, g_ours_up = learner_grad(afclip, ours("upstream"))
    loss_ours_fix, g_ours_fix = learner_grad(afclip, ours("corrected"))
    for loss in (loss_fix, loss_ours_up, loss_ours_fix):
        torch.testing.assert_close(loss, loss_up, rtol=1e-6, atol=0)
    assert relative(g_ours_up, g_up) < 1e-5
    assert relative(g_ours_fix, g_fix) < 1e-5
    assert relative(g_fix, g_up) > 0.2  # copy.copy really aliases: the two gradients differ


def test_grid_keeps_exact_half_and_pal_skips_it():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :3] = 1  # bilinear 8 -> 4 samples columns 0.5, 2.5, ...: column 1 is 0.5
    g = grid_masks(mask, 4)
    assert g[0, :, 0].tolist() == [1.0] * 4 and g[0, :, 1].tolist() == [0.5] * 4
    assert g[0, :, 2:].sum() == 0
    torch.manual_seed(6)
    tokens = [torch.randn(1, 17, 8)]
    torch.testing.assert_close(patch_alignment_loss(tokens, g),
                               brute_force_pal_upstream(tokens, g), rtol=1e-5, atol=1e-6)


def brute_force_pal_upstream(tokens, grid):
    import copy
    return torch.as_tensor(upstream_pal(tokens, grid.clone(), copy.copy), dtype=torch.float32)


def test_seg_gradient_is_checked():
    out = {"anomaly_map": torch.full((1, 2, 2), 0.5), "image_score": torch.full((1,), 0.5),
           "tokens": [torch.randn(1, 5, 4)]}
    with pytest.raises(ValueError, match="seg_gradient must be one of upstream, corrected; got 'fixed'"):
        afclip_loss(out, torch.tensor([0]), torch.zeros(1, 4, 4), 4.0, 1.0, 1.0, "fixed")
