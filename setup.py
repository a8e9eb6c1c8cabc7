"""Installs the dassl_lite library. ``trainers/`` and ``datasets/`` stay application packages
loaded from the repository root by ``tools/`` (installing a top-level ``datasets`` package would
shadow Hugging Face ``datasets``)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str):
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip() and not ln.startswith("-r")]


setup(
    name="dassl_lite",
    version="0.1.0",
    description="A small, fast, tested Dassl-style framework for prompt learning on CLIP",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dassl_lite", "dassl_lite.*"]),
    package_data={"dassl_lite.clip": ["*.txt.gz", "assets/*"], "dassl_lite.backbones": ["assets/*"]},
    include_package_data=True,
    python_requires=">=3.10,<3.13",
    install_requires=read_requirements("requirements.txt"),
    extras_require={"test": ["pytest", "open_clip_torch"]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "License :: OSI Approved :: MIT License",
    ],
)
