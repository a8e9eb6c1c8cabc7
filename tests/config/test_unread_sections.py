"""Options in a trainer section that the chosen trainer never reads are warned about, naming the
section it does read; the bundled configs merge with their own trainer without a warning."""
import glob
import os

import pytest

import trainers  # noqa: F401  (registers the trainers and their config sections)
from dassl_lite.cli import build_parser, setup_cfg
from dassl_lite.config import apply_config_extenders, get_cfg_default
from dassl_lite.config.sections import trainer_sections
from dassl_lite.registry import TRAINER_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml")))


def warnings_of(*argv):
    notices = []
    setup_cfg(build_parser().parse_args([str(a) for a in argv]), notices)
    return notices


def test_kgcoop_with_coops_n_ctx_names_the_section_it_reads():
    assert warnings_of("--trainer", "KgCoOp", "TRAINER.COOP.N_CTX", "8") == [
        "TRAINER.COOP.N_CTX = 8 (command line) is not read by trainer KgCoOp, which reads "
        "TRAINER.KGCOOP; set TRAINER.KGCOOP.N_CTX instead (now 16)"]


def test_a_yaml_option_names_its_file_and_a_key_without_counterpart(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("TRAINER:\n  COOP:\n    N_CTX: 4\n  KGCOOP:\n    W: 8.0\n")
    assert warnings_of("--trainer", "CoOp", "--config-file", path) == [
        f"TRAINER.KGCOOP.W = 8.0 (config file {path}) is not read by trainer CoOp, which reads "
        f"TRAINER.COOP (no W there)"]


def test_defaults_and_own_sections_draw_no_warning(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("TRAINER:\n  COOP:\n    N_CTX: 8\n")
    # a foreign key at its default value, and one set in a file and put back on the command line
    assert warnings_of("--trainer", "KgCoOp", "TRAINER.COOP.PREC", "fp16") == []
    assert warnings_of("--trainer", "KgCoOp", "--config-file", path,
                       "TRAINER.COOP.N_CTX", "16") == []
    assert warnings_of("--trainer", "KgCoOp", "TRAINER.KGCOOP.N_CTX", "8") == []
    # zero-shot CLIP runs with CoOp's files upstream and reads TRAINER.COOP.PREC
    assert warnings_of("--trainer", "ZeroshotCLIP", "TRAINER.COOP.PREC", "fp32") == []


def test_every_registered_trainer_names_sections_that_exist():
    cfg = apply_config_extenders(get_cfg_default())
    for name in TRAINER_REGISTRY.names():
        cls = TRAINER_REGISTRY.get(name)
        sections = trainer_sections(cls)
        assert sections, f"{name} names no TRAINER section (config_sections or precision_key)"
        assert all(s in cfg.TRAINER for s in sections), (name, sections)
        if hasattr(cls, "section_key"):  # ClipPromptTrainer: the section its code reads
            assert cls.precision_key.split(".")[1] in sections, name


def test_config_sections_overrides_the_precision_keys_section():
    class Reader:
        precision_key = "TRAINER.COOP.PREC"
        config_sections = ("COOP", "IVLP")

    assert trainer_sections(Reader) == ("COOP", "IVLP")
    assert trainer_sections(type("Plain", (), {})) is None  # says nothing: not checked


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_bundled_trainer_configs_merge_with_their_trainer_without_warning(path):
    trainer = os.path.basename(os.path.dirname(path))
    assert trainer in TRAINER_REGISTRY, f"{path}: folder is not a trainer's name"
    assert warnings_of("--trainer", trainer, "--config-file", path) == []
