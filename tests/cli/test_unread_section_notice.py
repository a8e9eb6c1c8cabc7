"""A train run with an option in a section its trainer does not read says so on the console and
in log.txt, and still trains."""
from .conftest import run_main, tiny_argv


def test_the_warning_reaches_the_console_and_log_txt(tmp_path, tiny_root):
    out = tmp_path / "out"
    result = run_main(tiny_argv(tiny_root, out, "OPTIM.MAX_EPOCH", "1",
                                "TRAINER.COOP.N_CTX", "8"))
    assert result.code == 0, result.err
    expected = ("TRAINER.COOP.N_CTX = 8 (command line) is not read by trainer TinyNet, which "
                "reads TRAINER.TINYNET (no N_CTX there)")
    assert expected in (out / "log.txt").read_text()
    assert expected in result.out + result.err
    assert (out / "results.json").is_file()
