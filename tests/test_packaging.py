"""The package as a user installs it: ``make venv`` without setuptools warnings, a wheel in a
fresh virtual environment outside the checkout, console commands from an empty directory, and
one module per trainer however it is imported.

Offline: the fresh environment reuses this interpreter's site-packages (a ``.pth`` file) for the
dependencies and pip, and installs with ``--no-index --no-build-isolation``.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LEVEL_SKIP = {".git", ".venv", "output", "data", "build", "dist", ".pytest_cache"}


def skip(directory, names):
    """What the copy of the checkout leaves out: run outputs at the top, caches anywhere."""
    top = os.path.abspath(directory) == REPO
    return [n for n in names if (top and n in TOP_LEVEL_SKIP) or n == "__pycache__"
            or n.endswith(".egg-info")]


OFFLINE = "--no-index --no-build-isolation"


def env_for_pip():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env.update(PIP_ROOT_USER_ACTION="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def warning_lines(log: str):
    return [ln for ln in log.splitlines() if "warn" in ln.lower() or "!!" in ln]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin, make's install log): ``make venv`` on a copy of the checkout,
    then the wheel built from that copy installed over it."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    shutil.copytree(REPO, src, ignore=skip)
    venv = base / "venv"
    site = sysconfig.get_paths()["purelib"]
    make = subprocess.run(
        ["make", "-C", str(src), "venv", f"VENV={venv}", f"PYTHON={sys.executable}",
         "VENV_ARGS=--without-pip", f"EXTRA_SITE={site}", f"PIP_ARGS={OFFLINE}"],
        env=dict(env_for_pip(), PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True,
        timeout=600)
    assert make.returncode == 0, make.stdout + make.stderr
    log = (venv / "install.log").read_text()
    wheel_dir = base / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", *OFFLINE.split(),
         "-w", str(wheel_dir), str(src)], env=env_for_pip(), capture_output=True, text=True,
        timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    assert warning_lines(build.stdout + build.stderr) == []
    wheel = next(wheel_dir.glob("dassl_lite-*.whl"))
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", *OFFLINE.split(),
         str(wheel)], env=env_for_pip(), capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return python, venv / "bin", log, wheel


def run_in(cwd, *cmd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_make_venv_install_log_has_no_setuptools_warning(installed):
    _, _, log, _ = installed
    assert "Successfully installed dassl_lite" in log
    assert warning_lines(log) == []


@pytest.mark.slow
def test_wheel_holds_one_top_level_package(installed):
    _, _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"dassl_lite"}
    for path in ("dassl_lite/trainers/coop.py", "dassl_lite/datasets/toy_world.py",
                 "dassl_lite/configs/trainers/CoOp/toy.yaml", "dassl_lite/tools/train.py",
                 "dassl_lite/clip/assets/ToyCLIP.pt", "dassl_lite/clip/bpe_simple_vocab_16e6.txt.gz"):
        assert path in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in ("dassl-train", "dassl-base2new", "dassl-fewshot", "dassl-crossdataset",
                    "dassl-parse-results", "dassl-plot", "dassl-anomaly", "dassl-predict"):
        assert f"{command} = dassl_lite.commands:" in entry_points


@pytest.mark.slow
def test_console_commands_from_an_empty_directory(installed, small_toy_root, tmp_path):
    python, bin_dir, _, _ = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run_in(empty, python, "-c", "import dassl_lite, importlib.util as u; "
                   "print(dassl_lite.__file__); print(u.find_spec('datasets') is None or "
                   "'dassl_lite' not in u.find_spec('datasets').origin)")
    assert where.returncode == 0, where.stderr
    path, no_top_level_datasets = where.stdout.split()
    assert path.startswith(str(python.parent.parent)) and no_top_level_datasets == "True"
    listed = run_in(empty, bin_dir / "dassl-train", "--list-trainers")
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert names == builtin_trainers() and len(names) == len(set(names))
    assert {"CoOp", "CoCoOp", "MaPLe", "IVLP", "VPT", "ZeroshotCLIP"} <= set(names)
    r = run_in(empty, bin_dir / "dassl-train", "--trainer", "CoOp", "--root", small_toy_root,
               "--output-dir", "out", "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (empty / "out" / "log.txt").read_text()
    assert "No dataset config given: using the toy world" in log
    assert "* accuracy:" in log and (empty / "out" / "results.json").is_file()
    assert (empty / "out" / "prompt_learner" / "model.pth.tar-1").is_file()
    assert sorted(os.listdir(empty)) == ["out"]
    plan = run_in(empty, bin_dir / "dassl-base2new", "--trainer", "MaPLe", "--config-file",
                  "toy", "--datasets", "toy_shapes", "--seeds", "1", "--root", small_toy_root,
                  "--dry-run")  # the installed configs/ are found by name
    assert plan.returncode == 0, plan.stderr
    assert "[1/2] train_base toy_shapes seed1 (MaPLe)" in plan.stdout
    usage = run_in(empty, bin_dir / "dassl-plot", "--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: dassl-plot ")
    missing = run_in(empty, bin_dir / "dassl-parse-results", str(empty / "nothing"))
    assert missing.returncode == 1 and missing.stderr == f"error: No directory {str(empty / 'nothing')!r}\n"


def builtin_trainers():
    """The trainers the checkout's trainers/ registers (not the tests' plug-ins), in the
    registry's listing order (case-insensitive)."""
    import trainers  # noqa: F401
    from dassl_lite.registry import TRAINER_REGISTRY

    return sorted((n for n, cls in TRAINER_REGISTRY.items()
                   if cls.__module__.startswith(("trainers.", "dassl_lite."))),
                  key=lambda n: (n.lower(), n))


def test_two_import_paths_are_one_module():
    """``trainers.coop`` (checkout habit) and ``dassl_lite.trainers.coop`` (installed name) are
    the same module: CoOp registers once, and either class object is the registered one. Here
    the checkout name comes first; in a fresh interpreter the package name does."""
    import importlib

    import trainers.coop
    from dassl_lite.registry import TRAINER_REGISTRY

    twin = importlib.import_module("dassl_lite.trainers.coop")
    assert twin is trainers.coop and TRAINER_REGISTRY.get("CoOp") is twin.CoOp
    assert importlib.import_module("dassl_lite.trainers") is sys.modules["trainers"]
    code = ("import dassl_lite.trainers.coop as b, dassl_lite.datasets as d, trainers.coop, "
            "datasets, trainers.maple as m, dassl_lite.trainers.maple as m2; "
            "from dassl_lite.registry import TRAINER_REGISTRY as R; "
            "print(trainers.coop is b, m is m2, datasets is d, R.get('CoOp') is b.CoOp)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True"] * 4


@pytest.mark.slow
def test_installed_commands_find_the_bundled_configs(installed, tmp_path):
    """The docs' ``--config-file configs/...`` paths work from an empty folder with only the
    wheel installed (the bundled file is used and named), ``--list-configs`` lists them."""
    python, bin_dir, _, _ = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = run_in(empty, bin_dir / "dassl-train", "--list-configs", "MaPLe")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["configs/trainers/MaPLe/toy.yaml",
                                     "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
                                     "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_"
                                     "datasets.yaml"]
    r = run_in(empty, bin_dir / "dassl-train", "--trainer", "CoOp", "--dataset-config-file",
               "configs/datasets/oxford_pets.yaml", "--config-file",
               "configs/trainers/CoOp/vit_b16.yaml", "--root", empty / "data", "--output-dir",
               "out")
    assert r.returncode == 2 and "OxfordPets" in r.stderr  # the dataset itself is absent
    site = run_in(empty, python, "-c", "import dassl_lite, os; print(os.path.dirname("
                  "dassl_lite.__file__))").stdout.strip()
    log = (empty / "out" / "log.txt").read_text()
    assert (f"--dataset-config-file configs/datasets/oxford_pets.yaml: not in {empty}; using the "
            f"bundled config {site}/configs/datasets/oxford_pets.yaml") in log
    missing = run_in(empty, bin_dir / "dassl-base2new", "--trainer", "MaPLe", "--config-file",
                     "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4.yaml", "--datasets", "dtd",
                     "--root", "data", "--dry-run")
    assert missing.returncode == 2 and missing.stderr.startswith(
        "error: --config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4.yaml does not exist "
        f"(relative to {empty}); nearest bundled configs: "
        "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml, ")

# ------------------------------------------------- licence, dependency ranges, lowest versions

def wheel_metadata(wheel):
    z = zipfile.ZipFile(wheel)
    return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()


def requires(metadata):
    """``{name: specifier}`` of the wheel's run-time requirements (no extras)."""
    from packaging.requirements import Requirement

    reqs = [Requirement(ln.split(":", 1)[1].strip()) for ln in metadata.splitlines()
            if ln.startswith("Requires-Dist:")]
    return {r.name.lower().replace("_", "-"): r.specifier for r in reqs if r.marker is None}


def locked():
    """``{name: version}`` of requirements.txt, which pins every line exactly."""
    pins = {}
    with open(os.path.join(REPO, "requirements.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, sep, version = line.partition("==")
                assert sep, f"requirements.txt: '{line}' is not an exact pin (NAME==VERSION)"
                pins[name.lower().replace("_", "-")] = version
    return pins


def lower_bound(specifier):
    (spec,) = list(specifier)
    assert spec.operator == ">=", f"expected only a lower bound '>=', got '{specifier}'"
    return spec.version


@pytest.mark.slow
def test_wheel_carries_the_licence_named_in_pyproject(installed):
    import tomllib

    _, _, _, wheel = installed
    z = zipfile.ZipFile(wheel)
    licence = next(n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    with open(os.path.join(REPO, "LICENSE"), "rb") as f:
        assert z.read(licence) == f.read()
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        expression = tomllib.load(f)["project"]["license"]
    assert f"License-Expression: {expression}" in wheel_metadata(wheel).splitlines()
    assert expression == "MIT" and z.read(licence).decode().startswith("MIT License")


@pytest.mark.slow
def test_metadata_states_ranges_and_requirements_txt_is_the_lock(installed):
    _, _, _, wheel = installed
    ranges, pins = requires(wheel_metadata(wheel)), locked()
    assert set(ranges) == set(pins), "pyproject.toml's dependencies and requirements.txt name other packages"
    for name, specifier in ranges.items():
        low = lower_bound(specifier)
        assert specifier.contains(pins[name]), f"the lock {name}=={pins[name]} is outside {specifier}"
        if name != "timm":  # timm is tested below at a lower version than the lock
            assert low == pins[name], f"{name}: lower bound {low} is not the tested lock {pins[name]}"
    assert lower_bound(ranges["timm"]) == "1.0.29"


LOWEST = ("torch", "torchvision", "timm", "open-clip-torch")


@pytest.mark.slow
def test_lowest_allowed_versions_train_the_toy_coop_run(installed, small_toy_root, tmp_path):
    """A fresh environment with the wheel and torch / torchvision / timm / open_clip_torch at the
    lowest versions its metadata allows (resolved by pip from its configured indexes), every other
    package from this environment: the toy CoOp run trains and a timm ViT is built."""
    _, _, _, wheel = installed
    metadata = wheel_metadata(wheel)
    bounds = dict(requires(metadata))
    extra = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist: open_clip_torch")
             and 'extra == "open-clip"' in ln]
    assert extra and ">=" in extra[0]
    bounds["open-clip-torch"] = extra[0].split(">=")[1].split(";")[0].strip()
    low = {name: (bounds[name] if isinstance(bounds[name], str) else lower_bound(bounds[name]))
           for name in LOWEST}
    venv = tmp_path / "lowest"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "extra_site.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(python), "-m", "pip", "install", "--only-binary", ":all:"]
    r = subprocess.run([*pip, "--no-deps", "--force-reinstall", "--no-index", str(wheel)],
                       env=env_for_pip(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # pip resolves the pins against the wheel's ranges; packages this environment already has
    # at another version are installed into the new venv, never removed from this one
    r = subprocess.run([*pip, *(f"{n}=={v}" for n, v in low.items())], env=env_for_pip(),
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    check = subprocess.run([str(python), "-m", "pip", "check"], env=env_for_pip(),
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code = f"import importlib.metadata as m; print(*[m.version(n) for n in {list(LOWEST)!r}])"
    versions = run_in(empty, python, "-c", code)
    assert versions.returncode == 0, versions.stderr
    assert [v.split("+")[0] for v in versions.stdout.split()] == list(low.values())
    r = run_in(empty, venv / "bin" / "dassl-train", "--trainer", "CoOp", "--root", small_toy_root,
               "--output-dir", "out", "OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "* accuracy:" in (empty / "out" / "log.txt").read_text()
    assert (empty / "out" / "prompt_learner" / "model.pth.tar-2").is_file()
    # timm builds the supervised ViT (ToyViT) of VPTSupervised
    r = run_in(empty, venv / "bin" / "dassl-train", "--trainer", "VPTSupervised", "--root",
               small_toy_root, "--output-dir", "vpt", "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "* accuracy:" in (empty / "vpt" / "log.txt").read_text()


# ------------------------------------------------------------ the README's front page, as written

def front_page_commands():
    """The ``dassl-*`` commands of README.md's shell blocks, continuation lines joined."""
    import re
    import shlex

    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("#")[0].strip()
            if command.startswith("dassl-"):
                commands.append(shlex.split(command))
    return commands


def test_front_page_commands_are_found():
    commands = front_page_commands()
    assert [c[:2] for c in commands] == [["dassl-train", "--list-trainers"],
                                         ["dassl-train", "--trainer"],
                                         ["dassl-base2new", "--trainer"],
                                         ["dassl-train", "--trainer"]]


def readme_table_row(trainer):
    import re

    with open(os.path.join(REPO, "README.md")) as f:
        m = re.search(rf"^\| {trainer} +\| toy +\| ([\d.]+) +\| ([\d.]+) +\| ([\d.]+) ", f.read(), re.M)
    assert m, f"README.md: no row for {trainer} in the protocol table"
    return [float(x) for x in m.groups()]


@pytest.mark.slow
def test_front_page_commands_run_as_written_from_an_empty_folder(installed, tmp_path):
    """Every ``dassl-*`` command of README.md, in order, in one empty folder, with only the
    installed wheel's commands on PATH; the printed protocol table matches the README's."""
    _, bin_dir, _, _ = installed
    empty = tmp_path / "front_page"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="2", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    outputs = []
    for command in front_page_commands():
        r = subprocess.run(command, cwd=empty, env=env, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f"{' '.join(command)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        outputs.append(r.stdout)
    assert outputs[0].split() == builtin_trainers()
    coop = empty / "output" / "coop_toy"
    assert "* accuracy:" in (coop / "log.txt").read_text() and (coop / "results.json").is_file()
    table = outputs[2][outputs[2].index("Average over datasets"):]
    for trainer, tolerance in (("ZeroshotCLIP", 0.0), ("CoOp", 1.0)):
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| {trainer} "))
        printed = [float(x) for x in row.split("|")[3:6]]
        assert all(abs(p - r) <= tolerance for p, r in zip(printed, readme_table_row(trainer))), row
    zsad = empty / "output" / "zsad"
    assert "pixel_aupro" in (zsad / "results.json").read_text()
    assert any(name.endswith(".png") for _, _, files in os.walk(zsad / "maps") for name in files)
    assert sorted(os.listdir(empty)) == ["data", "output"]
