"""Protocol tools: a seed below 0, or a seed or shot count given twice, is refused before any job
is planned, naming the flag and the value (the same run would count twice in mean and std)."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--import", os.path.join(REPO, "tests", "fixtures", "tiny_world.py"), "--trainer",
        "TinyNet", "--config-file", os.path.join(REPO, "tests", "fixtures", "tiny_trainer.yaml"),
        "--datasets", os.path.join(REPO, "tests", "fixtures", "tiny_dataset.yaml")]


@pytest.mark.parametrize("protocol, flags, words", [
    ("fewshot", ["--seeds", "-1"], "--seeds must be integers >= 0"),
    ("fewshot", ["--seeds", "1", "2", "1"], "--seeds lists 1 more than once"),
    ("fewshot", ["--shots", "2", "4", "2"], "--shots lists 2 more than once"),
    ("base2new", ["--seeds", "3", "3"], "--seeds lists 3 more than once"),
])
def test_bad_seed_or_shot_lists_are_named(protocol, flags, words, tmp_path, capsys):
    from dassl_lite.protocols.cli import main

    out = tmp_path / "out"
    code = main(protocol, [*TINY, "--root", str(tmp_path), "--output-root", str(out), *flags],
                repo_root=REPO)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {words}"), err
    assert not out.exists()


def test_anomaly_protocol_names_a_repeated_seed(tmp_path, capsys):
    from dassl_lite.protocols.anomaly import main

    code = main(["--trainer", "ZeroshotAD", "--config-file", "toy", "--root", str(tmp_path),
                 "--output-root", str(tmp_path / "out"), "--seeds", "2", "2"], repo_root=REPO)
    err = capsys.readouterr().err
    assert code == 2 and "error: --seeds lists 2 more than once" in err, err
    assert not (tmp_path / "out").exists()
