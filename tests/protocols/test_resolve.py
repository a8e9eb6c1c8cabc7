"""Dataset configs by stem, registered name or path; benchmarks; trainer configs by name."""
import os

import pytest

from dassl_lite.errors import DasslLiteError
from dassl_lite.protocols.resolve import (
    BENCHMARKS, DatasetConfig, resolve_dataset, resolve_datasets, resolve_trainer_config,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET_DIR = os.path.join(REPO, "configs", "datasets")


def test_stem_and_registered_name_give_the_same_config():
    by_stem = resolve_dataset("toy_shapes", DATASET_DIR)
    assert by_stem == DatasetConfig("toy_shapes", os.path.join(DATASET_DIR, "toy_shapes.yaml"),
                                    "ToyShapes")
    assert resolve_dataset("ToyShapes", DATASET_DIR) == by_stem


def test_yaml_path_is_used_as_given(tmp_path):
    path = tmp_path / "my_pets.yaml"
    path.write_text('DATASET:\n  NAME: "OxfordPets"\n')
    assert resolve_dataset(str(path), DATASET_DIR) == DatasetConfig("my_pets", str(path), "OxfordPets")
    with pytest.raises(DasslLiteError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nope.yaml"), DATASET_DIR)


def test_unknown_dataset_suggests_the_closest(tmp_path):
    for stem, name in (("oxford_pets", "OxfordPets"), ("dtd", "DescribableTextures")):
        (tmp_path / f"{stem}.yaml").write_text(f'DATASET:\n  NAME: "{name}"\n')
    with pytest.raises(DasslLiteError) as e:
        resolve_dataset("OxfordPet", str(tmp_path))
    assert str(e.value) == (
        f"No dataset config for 'OxfordPet' in {tmp_path}: expected a file stem or a DATASET.NAME "
        f"of its *.yaml files, or a path to a YAML file. Did you mean 'OxfordPets'? "
        f"Known: dtd (DescribableTextures), oxford_pets (OxfordPets)")


def test_all_expands_the_benchmark_in_order_without_repeats():
    got = resolve_datasets(["toy_sketch", "all"], "toy", DATASET_DIR)
    assert [d.label for d in got] == ["toy_sketch", "toy_shapes", "toy_textures"]
    assert BENCHMARKS["papers"] == [
        "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
        "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]
    with pytest.raises(DasslLiteError, match="--benchmark must be one of papers, papers_dg, toy, "
                                             "toy_dg; got 'tyo'"):
        resolve_datasets(["all"], "tyo", DATASET_DIR)


def test_trainer_config_by_name_or_path(tmp_path):
    d = tmp_path / "trainers" / "CoOp"
    d.mkdir(parents=True)
    (d / "vit_b16.yaml").write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    root = str(tmp_path / "trainers")
    assert resolve_trainer_config("vit_b16", "CoOp", root) == str(d / "vit_b16.yaml")
    assert resolve_trainer_config(str(d / "vit_b16.yaml"), "CoCoOp", root) == str(d / "vit_b16.yaml")
    with pytest.raises(DasslLiteError, match=r"'vit_b32' is neither a file nor a name in .*CoOp "
                                             r"\(available: vit_b16\)"):
        resolve_trainer_config("vit_b32", "CoOp", root)


def test_a_trainer_subclass_without_configs_uses_its_parents(tmp_path):
    import trainers  # noqa: F401  (ZeroshotCLIP2 subclasses ZeroshotCLIP)

    d = tmp_path / "ZeroshotCLIP"
    d.mkdir()
    (d / "toy.yaml").write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    assert resolve_trainer_config("toy", "ZeroshotCLIP2", str(tmp_path)) == str(d / "toy.yaml")
    (tmp_path / "ZeroshotCLIP2").mkdir()
    (tmp_path / "ZeroshotCLIP2" / "toy.yaml").write_text("OPTIM:\n  MAX_EPOCH: 2\n")
    assert resolve_trainer_config("toy", "ZeroshotCLIP2", str(tmp_path)) == str(
        tmp_path / "ZeroshotCLIP2" / "toy.yaml")  # its own folder first
    with pytest.raises(DasslLiteError, match=r"ZeroshotCLIP2 or .*ZeroshotCLIP \(available: toy\)"):
        resolve_trainer_config("rn50", "ZeroshotCLIP2", str(tmp_path))


def test_trailing_options_start_at_the_first_config_key_or_double_dash():
    from dassl_lite.protocols.cli import split_opts

    assert split_opts(["--datasets", "a", "b", "OPTIM.LR", "0.1", "TRAIN.PRINT_FREQ", "5"]) == (
        ["--datasets", "a", "b"], ["OPTIM.LR", "0.1", "TRAIN.PRINT_FREQ", "5"])
    assert split_opts(["--seeds", "1", "--", "SEED_LIKE", "x"]) == (["--seeds", "1"], ["SEED_LIKE", "x"])
    assert split_opts(["--datasets", "path/TO.yaml"]) == (["--datasets", "path/TO.yaml"], [])
