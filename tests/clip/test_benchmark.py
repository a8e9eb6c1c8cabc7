"""tools/benchmark.py: the clip section runs at tiny shapes and its reference agrees with ours."""
import pytest
import torch

from dassl_lite.clip import tokenize

TINY_ARGS = ["--text-prompts", "30", "--text-width", "64", "--text-layers", "2", "--image-batch", "2",
             "--image-size", "32", "--patch-size", "8", "--vision-width", "128", "--vision-layers", "2"]


def test_clip_section_prints_table(benchmark, capsys):
    assert "clip" in benchmark.BENCHMARKS
    assert benchmark.main(["--only", "clip", "--reps", "1", *TINY_ARGS]) == 0
    out = " ".join(capsys.readouterr().out.split())  # columns padded to the widest cell
    assert "| section" in out and "speedup" in out and "reference ms" in out
    assert "| clip | text | 30 prompts, width 64, 2 layers, longest" in out
    assert "| clip | image | 2x3x32x32, patch 8, width 128, 2 layers" in out
    assert "| clip | coop text step | 30 prompts, 16 ctx, width 64, 2 layers, forward + backward" in out


def test_unknown_section_is_an_error(benchmark, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--only", "nope"])
    assert "--only takes names among clip" in capsys.readouterr().err


def test_reference_matches_ours(benchmark, vit_model, make_images):
    reference = benchmark.ReferenceCLIP(vit_model.config).eval()
    reference.load_state_dict(vit_model.state_dict())
    prompts = benchmark.class_prompts(50)
    assert len(set(prompts)) == 50 and all(p.startswith("a photo of a ") for p in prompts)
    tokens = tokenize(prompts)
    images = make_images(vit_model)
    with torch.no_grad():
        torch.testing.assert_close(reference.encode_text(tokens), vit_model.encode_text(tokens),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(reference.encode_image(images), vit_model.encode_image(images),
                                   rtol=0, atol=1e-5)
