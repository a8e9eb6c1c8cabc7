"""The general text-encoder entry for learned vectors before SOT (AF-CLIP's state prompts)."""
import pytest
import torch

from dassl_lite.clip import CLIP, CLIPConfig, tokenize

CFG = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64,
                 vision_patch_size=16, vision_heads=1, context_length=77, vocab_size=49408,
                 transformer_width=32, transformer_heads=2, transformer_layers=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CLIP(CFG).eval()


def reference_full_77(model, prefix, tokens):
    """Upstream's recipe: cat on the full 77 positions, cut to 77, run all 77, read P + argmax."""
    x = torch.cat([prefix.expand(len(tokens), -1, -1), model.token_embedding(tokens)], dim=1)[:, :77]
    x = model.transformer(x + model.positional_embedding)
    x = model.ln_final(x)[torch.arange(len(tokens)), prefix.shape[1] + tokens.argmax(-1)]
    return x @ model.text_projection


def test_prefix_before_sot_shifts_eot(model):
    tokens = tokenize(["without defect.", "with defect."])
    prefix = torch.randn(1, 12, CFG.transformer_width)
    with torch.no_grad():
        ours = model.encode_text_prefixed(prefix[0], tokens)
        ref = reference_full_77(model, prefix, tokens)
        unshifted = model.encode_text(tokens)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, unshifted, atol=1e-3)
    # With no prefix the entry is plain encode_text.
    with torch.no_grad():
        empty = model.encode_text_prefixed(torch.zeros(0, CFG.transformer_width), tokens)
    torch.testing.assert_close(empty, unshifted, rtol=1e-5, atol=1e-5)


def test_prefix_grad_and_per_row_prefix(model):
    tokens = tokenize(["with defect.", "a photo of a flawless bottle."])
    prefix = torch.randn(2, 3, CFG.transformer_width, requires_grad=True)
    out = model.encode_text_prefixed(prefix, tokens)
    out.sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    with torch.no_grad():
        row1 = model.encode_text_prefixed(prefix[1], tokens[1:])
    torch.testing.assert_close(out[1:].detach(), row1, rtol=1e-5, atol=1e-5)


def test_prefix_too_long_is_a_clear_error(model):
    tokens = tokenize(["with defect."])
    with pytest.raises(ValueError, match="75 prefix vectors .* exceed the context length 77"):
        model.encode_text_prefixed(torch.zeros(75, CFG.transformer_width), tokens)
    with pytest.raises(ValueError, match=r"prefix must have shape \[n_ctx, 32\]"):
        model.encode_text_prefixed(torch.zeros(3, 31), tokens)
