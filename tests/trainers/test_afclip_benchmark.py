"""tools/benchmark.py, section afclip: runs at tiny shapes; the softmax reference agrees with ours."""
import torch

TINY = ["--afclip-layers", "1", "--afclip-size", "42", "--afclip-batch", "2"]


def test_afclip_section_prints_table(benchmark, capsys):
    assert benchmark.main(["--only", "afclip", "--reps", "1", *TINY]) == 0
    out = capsys.readouterr().out
    assert "| afclip    | train step | 2x3x42x42, 1 blocks of ViT-L/14 (maps from [1]), 3 maps " \
           "of 10 tokens" in out
    assert "saved-for-backward MB" in out and "| afclip    | eval batch |" in out


def test_softmax_reference_equals_sdpa_adaptor(benchmark):
    from trainers.anomaly.afclip_model import Adaptor

    torch.manual_seed(0)
    adaptor = Adaptor(96, heads=8, head_dim=64)
    x = torch.randn(3, 50, 96)
    torch.testing.assert_close(benchmark.SoftmaxAdaptor(adaptor)(x), adaptor(x),
                               rtol=1e-5, atol=1e-5)
