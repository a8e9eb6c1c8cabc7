"""Package layout of dassl_lite (metadata, including the dependency ranges, lives in
pyproject.toml; requirements.txt is the exact lock that ``make`` installs).

The repository folders ``trainers/``, ``datasets/``, ``configs/`` and ``tools/`` are installed
inside the package as ``dassl_lite.trainers``, ``dassl_lite.datasets``, ``dassl_lite.configs`` and
``dassl_lite.tools`` (never as top-level packages: a top-level ``datasets`` would shadow Hugging
Face ``datasets``). Every file and subfolder in them is found at build time, so a new trainer,
dataset, config or tool needs no edit here. ``dassl_lite/apps.py`` gives the same names in a
checkout and keeps ``trainers.x`` and ``dassl_lite.trainers.x`` one module.
"""

from setuptools import find_namespace_packages, setup

APP_FOLDERS = ("trainers", "datasets", "configs", "tools")
SKIP = ["*__pycache__*", "*.egg-info*"]


def app_packages():
    """``dassl_lite.<folder>[.<sub>...]`` for each application folder and its subfolders."""
    packages, package_dir = [], {}
    for folder in APP_FOLDERS:
        subs = find_namespace_packages(where=folder, exclude=SKIP)
        packages += [f"dassl_lite.{folder}"] + [f"dassl_lite.{folder}.{s}" for s in subs]
        package_dir[f"dassl_lite.{folder}"] = folder
    return packages, package_dir


library = find_namespace_packages(include=["dassl_lite", "dassl_lite.*"], exclude=SKIP)
apps, package_dir = app_packages()
setup(
    packages=library + apps,
    package_dir=package_dir,
    package_data={"": ["*.yaml", "*.yml", "*.txt.gz", "*.json", "*.pt"]},
    include_package_data=False,
)
