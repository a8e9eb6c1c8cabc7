"""tools/benchmark.py --only limit: the encoder probe (which encoder calls a step makes, their
bare replay) and the upstream config each trainer's row is built from; tools/gpu_check.py
--compile's dry path (this machine has no GPU)."""
import torch

from dassl_lite.clip import CLIP, CLIPConfig, tokenize
from tests.tool_modules import load_tool

TINY = CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=32,
                  vision_patch_size=16, vision_heads=1, context_length=77, vocab_size=49408,
                  transformer_width=32, transformer_heads=1, transformer_layers=2)


def test_probe_records_and_replays_the_encoder_calls_of_a_step():
    bench = load_tool("benchmark")
    torch.manual_seed(0)
    clip = CLIP(TINY).requires_grad_(False)
    text_method = clip.encode_text_embeddings
    probe = bench.EncoderProbe(clip, torch.device("cpu"))
    tokens = tokenize(["x x a red square.", "x x a blue circle."])
    ctx = torch.zeros(2, 32, requires_grad=True)

    def step():  # a CoOp-like step: frozen image features, prompts with learned context
        with torch.no_grad():
            clip.visual(torch.randn(3, 3, 32, 32))
        emb = clip.token_embedding(tokens)
        prompts = torch.cat([emb[:, :1], ctx.expand(2, -1, -1), emb[:, 3:]], dim=1)
        clip.encode_text_embeddings(prompts, tokens.argmax(-1)).sum().backward()

    probe.record(step)
    assert probe.describe() == {"image": "1 fwd", "text": "1 fwd+bwd"}
    assert probe.forward_s["image"] > 0 and probe.forward_s["text"] > 0
    seconds = probe.replay()
    assert seconds["fwd"] > 0 and seconds["bwd"] > 0  # the text call backpropagates to its input
    kinds = [(kind, grad) for kind, _, _, _, grad in probe.calls]
    assert kinds == [("image", False), ("text", True)]
    probe.close()
    assert clip.encode_text_embeddings == text_method and "forward" not in vars(clip.visual) or \
        vars(clip.visual)["forward"] == probe.originals["image"]


def test_rows_come_from_the_upstream_configs():
    import os

    bench = load_tool("benchmark")
    bench._import_trainers()
    assert os.path.basename(bench.upstream_config("CoOp")) == "vit_b16.yaml"
    assert os.path.basename(bench.upstream_config("MaPLe")) == "vit_b16_c2_ep5_batch4_2ctx.yaml"
    assert os.path.basename(bench.upstream_config("TipAdapter")) == "rn50.yaml"  # no ViT config
    args = bench.build_parser().parse_args(["--only", "limit", "--layers", "2", "--compile"])
    assert (args.layers, args.compile, args.limit_batch) == (2, True, 0)


def test_gpu_check_compile_dry_path(capsys):
    gpu_check = load_tool("gpu_check")
    assert gpu_check.main(["--compile", "--cpu", "--dry-run", "--trainers", "CoOp", "MaPLe"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == ("python tools/benchmark.py --only limit --compile --device cpu --reps 3 "
                   "--limit-trainers CoOp MaPLe --layers 1 --limit-batch 2")
    argv = out.split()[2:]
    args = load_tool("benchmark").build_parser().parse_args(argv)  # the benchmark accepts it
    assert args.device == "cpu" and args.limit_trainers == ["CoOp", "MaPLe"]
    if not torch.cuda.is_available():  # the CUDA table's command, printed without running
        assert gpu_check.main(["--compile", "--dry-run"]) == 0
        assert "--device cuda" in capsys.readouterr().out


def test_train_compile_flag_sets_the_key(make_cfg):
    assert make_cfg("--compile").MODEL.COMPILE is True
    assert make_cfg().MODEL.COMPILE is False  # off by default
