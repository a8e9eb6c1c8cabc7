"""Config paths copied from the docs work from any folder: a relative path that does not exist
there but names a bundled config (``configs/datasets/oxford_pets.yaml``) resolves to it with one
log line; ``--list-configs [TRAINER]`` prints the bundled ones; a path that names nothing is an
error listing the nearest bundled names. Every case runs from an empty working folder."""
import glob
import os

import pytest

from dassl_lite.config.bundled import find_config

from .conftest import REPO, run_main

PETS = os.path.join(REPO, "configs", "datasets", "oxford_pets.yaml")
COOP_VIT = os.path.join(REPO, "configs", "trainers", "CoOp", "vit_b16.yaml")


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working folder outside the checkout."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("given", [
    "configs/datasets/oxford_pets.yaml", "./configs/datasets/oxford_pets.yaml",
    "datasets/oxford_pets.yaml", "../CoOp/configs/datasets/oxford_pets.yaml",
])
def test_a_missing_relative_path_naming_a_bundled_config_resolves_to_it(elsewhere, given):
    path, notice = find_config(given, "--dataset-config-file")
    assert path == PETS
    assert notice == (f"--dataset-config-file {given}: not in {elsewhere}; using the bundled "
                      f"config {PETS}")


def test_a_file_that_exists_is_used_as_given(elsewhere):
    local = elsewhere / "configs" / "datasets" / "oxford_pets.yaml"
    local.parent.mkdir(parents=True)
    local.write_text('DATASET:\n  NAME: "OxfordPets"\n')
    assert find_config("configs/datasets/oxford_pets.yaml") == (
        "configs/datasets/oxford_pets.yaml", None)


def test_a_path_naming_nothing_lists_the_nearest_bundled_configs(elsewhere):
    r = run_main(["--trainer", "CoOp", "--dataset-config-file",
                  "configs/datasets/oxford_pet.yaml", "--output-dir", "out"])
    assert r.code == 2
    assert r.err == (
        f"error: --dataset-config-file configs/datasets/oxford_pet.yaml does not exist "
        f"(relative to {elsewhere}); nearest bundled configs: configs/datasets/oxford_pets.yaml, "
        f"configs/datasets/oxford_flowers.yaml, configs/datasets/vtab1k_oxford_iiit_pet.yaml "
        f"(all of them: --list-configs [TRAINER])\n")
    r = run_main(["--trainer", "CoOp", "--config-file", "/nowhere/vit_b16_ep5.yaml"])
    assert r.code == 2 and r.err.startswith(
        "error: --config-file /nowhere/vit_b16_ep5.yaml does not exist; nearest bundled "
        "configs: configs/trainers/CoOp/vit_b16_ep50.yaml, ")
    assert os.listdir(elsewhere) == []


def test_train_uses_the_bundled_configs_and_logs_each_once(elsewhere):
    r = run_main(["--trainer", "CoOp", "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
                  "--config-file", "configs/trainers/CoOp/vit_b16.yaml",
                  "--root", elsewhere / "data", "--output-dir", "out"])
    assert r.code == 2 and "OxfordPets" in r.err  # got as far as reading the (absent) dataset
    log = (elsewhere / "out" / "log.txt").read_text()
    used = [ln for ln in log.splitlines() if "using the bundled config" in ln]
    assert used == [
        f"--dataset-config-file configs/datasets/oxford_pets.yaml: not in {elsewhere}; using the "
        f"bundled config {PETS}",
        f"--config-file configs/trainers/CoOp/vit_b16.yaml: not in {elsewhere}; using the "
        f"bundled config {COOP_VIT}"]
    config = (elsewhere / "out" / "config.yaml").read_text()
    assert "NAME: OxfordPets" in config and "N_CTX: 16" in config


def bundled(*parts):
    paths = glob.glob(os.path.join(REPO, "configs", *parts), recursive=True)
    return sorted("configs/" + os.path.relpath(p, os.path.join(REPO, "configs")) for p in paths)


def test_list_configs_prints_all_or_one_trainers(elsewhere):
    r = run_main(["--list-configs", "CoOp"])
    assert r.code == 0 and r.out.splitlines() == bundled("trainers", "CoOp", "*.yaml")
    assert "configs/trainers/CoOp/vit_b16.yaml" in r.out.splitlines()
    everything = run_main(["--list-configs"]).out.splitlines()
    assert everything == bundled("**", "*.yaml") and len(everything) > 80
    assert "configs/datasets/oxford_pets.yaml" in everything
    # a subclass without its own folder lists its parent's (ZeroshotCLIP2 -> ZeroshotCLIP)
    assert run_main(["--list-configs", "ZeroshotCLIP2"]).out.splitlines() == bundled(
        "trainers", "ZeroshotCLIP", "*.yaml")
    r = run_main(["--list-configs", "CoOP"])
    folders = sorted(os.listdir(os.path.join(REPO, "configs", "trainers")))
    assert "CoOp" in folders and "CoOP" not in folders
    assert r.code == 2 and r.err.rstrip("\n") == (
        "error: No bundled configs for trainer 'CoOP'. Did you mean 'CoOp'? Trainers with "
        "bundled configs: " + ", ".join(folders))


def test_protocol_tools_resolve_and_list_bundled_configs(elsewhere, capsys):
    from dassl_lite.protocols.anomaly import main as anomaly_main
    from dassl_lite.protocols.cli import main as protocol_main

    code = protocol_main("base2new", [
        "--trainer", "MaPLe", "--config-file", "configs/trainers/MaPLe/toy.yaml",
        "--datasets", "configs/datasets/toy_shapes.yaml", "--seeds", "1",
        "--root", str(elsewhere / "data"), "--dry-run"], repo_root=REPO)
    out = capsys.readouterr().out
    assert code == 0 and "[1/2] train_base toy_shapes seed1 (MaPLe)" in out
    assert (f"--config-file configs/trainers/MaPLe/toy.yaml: not in {elsewhere}; using the "
            f"bundled config {os.path.join(REPO, 'configs', 'trainers', 'MaPLe', 'toy.yaml')}"
            in out.splitlines())
    assert (f"Dataset config configs/datasets/toy_shapes.yaml: not in {elsewhere}; using the "
            f"bundled config {os.path.join(REPO, 'configs', 'datasets', 'toy_shapes.yaml')}"
            in out.splitlines())
    code = protocol_main("fewshot", ["--trainer", "CoOp", "--config-file",
                                     "configs/trainers/CoOp/vit_b16_x.yaml", "--datasets",
                                     "toy_shapes", "--root", "data", "--dry-run"], repo_root=REPO)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        "error: --config-file configs/trainers/CoOp/vit_b16_x.yaml does not exist (relative to "
        f"{elsewhere}); nearest bundled configs: configs/trainers/CoOp/vit_b16.yaml, ")
    assert protocol_main("crossdataset", ["--list-configs", "MaPLe"], repo_root=REPO) == 0
    assert capsys.readouterr().out.splitlines() == bundled("trainers", "MaPLe", "*.yaml")
    assert anomaly_main(["--list-configs", "ZeroshotAD"], repo_root=REPO) == 0
    assert capsys.readouterr().out.splitlines() == bundled("trainers", "ZeroshotAD", "*.yaml")
    code = anomaly_main(["--trainer", "ZeroshotAD", "--config-file",
                         "configs/trainers/ZeroshotAD/toy.yaml", "--train-dataset",
                         "configs/datasets/toy_mvtec.yaml", "--seeds", "1", "--root", "data",
                         "--dry-run"], repo_root=REPO)
    out = capsys.readouterr().out
    assert code == 0 and "[1/4] train (test split) toy_mvtec seed1 (ZeroshotAD)" in out
    assert sum("using the bundled config" in ln for ln in out.splitlines()) == 2
