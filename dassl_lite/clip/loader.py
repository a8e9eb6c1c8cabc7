"""Find, download (SHA-256 checked, atomic) and load CLIP checkpoints by name or path."""
import difflib
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor

from ..utils.safe_load import safe_torch_load
from .errors import CLIPChecksumError, CLIPWeightsNotFoundError
from .model import CLIP, build_model, convert_weights
from .open_clip_loader import is_open_clip_name, load_open_clip

__all__ = ["CLIPWeightsNotFoundError", "CLIPChecksumError", "available_models", "load_clip",
           "resolve_checkpoint", "read_state_dict", "is_torchscript_archive", "cache_dir_for",
           "PRECISIONS", "CACHE_ENV"]

logger = logging.getLogger(__name__)

CACHE_ENV = "DASSL_LITE_CLIP_CACHE"
PRECISIONS: Dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16,
                                      "bf16": torch.bfloat16}
_URL = "https://openaipublic.azureedge.net/clip/models/{}/{}"
# OpenAI's published checkpoints; the SHA-256 of each file is the URL's second-to-last part.
_MODELS: Dict[str, str] = {
    "RN50": _URL.format("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
    "RN101": _URL.format("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
    "RN50x4": _URL.format("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt"),
    "RN50x16": _URL.format("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt"),
    "RN50x64": _URL.format("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt"),
    "ViT-B/32": _URL.format("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    "ViT-B/16": _URL.format("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
    "ViT-L/14": _URL.format("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
    "ViT-L/14@336px": _URL.format("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
                                  "ViT-L-14-336px.pt"),
}
ASSETS_DIR = Path(__file__).with_name("assets")
# Models shipped with the package: name -> (file in assets/, how the file is produced).
_LOCAL_MODELS: Dict[str, tuple] = {
    "ToyCLIP": ("ToyCLIP.pt", "python tools/pretrain_toy_clip.py"),
}


def available_models() -> List[str]:
    """Names ``load_clip`` knows: OpenAI's published models, then locally shipped ones."""
    return [*_MODELS, *_LOCAL_MODELS]


def cache_dir_for(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The weights cache: ``cache_dir`` if given, else ``$DASSL_LITE_CLIP_CACHE``, else
    ``~/.cache/clip`` (OpenAI's default)."""
    chosen = cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/clip"
    return Path(chosen).expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, sha256: str) -> None:
    """Download ``url`` to ``target`` through a temporary file in the same folder; the file
    appears only when complete and matching ``sha256``."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as source:
            total = int(source.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise CLIPChecksumError(f"downloaded {url} but its SHA-256 is {digest.hexdigest()}, "
                                    f"expected {sha256}; nothing was written to {target}")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _not_found_message(name: str, target: Path, url: str, reason: str) -> str:
    return (f"CLIP weights for {name!r} are not at {target} and could not be downloaded from "
            f"{url} ({reason}). Download the file by hand on a machine with internet access "
            f"(e.g. `curl -L -o {target.name} {url}`) and place it at {target}, or put it in "
            f"another folder and point ${CACHE_ENV} (or cache_dir / MODEL.BACKBONE.CACHE_DIR) "
            f"there. Its SHA-256 must be {url.split('/')[-2]}.")


def _published_checkpoint(name: str, cache_dir: Path) -> Path:
    url = _MODELS[name]
    sha256, target = url.split("/")[-2], cache_dir / os.path.basename(url)
    if target.exists() and not target.is_file():
        raise CLIPWeightsNotFoundError(f"{target} exists but is not a regular file")
    if target.is_file():
        if _sha256(target) == sha256:
            return target
        logger.warning("%s exists but its SHA-256 does not match %s; downloading it again",
                       target, sha256)
    logger.info("Downloading CLIP %s from %s to %s", name, url, target)
    try:
        _download(url, target, sha256)
    except (urllib.error.URLError, OSError) as err:
        raise CLIPWeightsNotFoundError(_not_found_message(name, target, url, str(err))) from err
    return target


def _local_checkpoint(name: str) -> Path:
    filename, producer = _LOCAL_MODELS[name]
    path = ASSETS_DIR / filename
    if not path.is_file():
        raise CLIPWeightsNotFoundError(
            f"CLIP weights for {name!r} are not at {path}; this file is produced by "
            f"`{producer}` (run it from the repository root), which writes it there.")
    return path


def resolve_checkpoint(name_or_path: Union[str, Path],
                       cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Path of the checkpoint for a known model name (downloading it if needed) or a file path."""
    name = str(name_or_path)
    if name in _MODELS:
        return _published_checkpoint(name, cache_dir_for(cache_dir))
    if name in _LOCAL_MODELS:
        return _local_checkpoint(name)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    closest = difflib.get_close_matches(name, available_models(), n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    raise CLIPWeightsNotFoundError(
        f"{name!r} is neither a known CLIP model nor an existing checkpoint file (looked for "
        f"{path.resolve()}).{hint} Known models: {', '.join(available_models())}.")


def is_torchscript_archive(path: Union[str, Path]) -> bool:
    """True if ``path`` is a TorchScript zip archive (it holds ``constants.pkl`` and ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in archive.namelist())


def read_state_dict(path: Union[str, Path]) -> Mapping[str, Tensor]:
    """OpenAI-format state dict from a TorchScript archive (as OpenAI publishes) or a
    ``torch.save``-d state dict (optionally under a ``"state_dict"`` key), loaded on CPU."""
    if is_torchscript_archive(path):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated",
                                    category=FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    obj = safe_torch_load(str(path), "CLIP checkpoint")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}; expected a TorchScript CLIP "
                         f"archive or a state dict (a dict of tensors, optionally under 'state_dict')")
    return obj


def load_clip(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu",
              precision: str = "fp32", cache_dir: Optional[Union[str, Path]] = None) -> CLIP:
    """Load a CLIP model by name (see ``available_models()``), checkpoint path, or
    ``open_clip:MODEL:PRETRAINED`` (open_clip weights; see ``open_clip_loader``).

    ``precision`` (fp32, fp16, bf16) casts the weights OpenAI casts (see ``convert_weights``).
    Returns the model on ``device`` in eval mode; ``requires_grad`` is left to the caller.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if is_open_clip_name(name_or_path):  # open_clip:MODEL:PRETRAINED (see open_clip_loader)
        model, path = load_open_clip(str(name_or_path), cache_dir_for(cache_dir))
    else:
        path = resolve_checkpoint(name_or_path, cache_dir)
        state_dict = read_state_dict(path)
        try:
            model = build_model(state_dict)
        except (KeyError, IndexError, RuntimeError, AttributeError) as e:
            raise ValueError(f"{path} does not hold OpenAI-format CLIP weights "
                             f"({type(e).__name__}: {e}); a prompt checkpoint goes to "
                             f"--model-dir or MODEL.INIT_WEIGHTS, not MODEL.BACKBONE.NAME") from None
    if precision != "fp32":
        convert_weights(model, PRECISIONS[precision])
    logger.info("Loaded CLIP %s from %s (%s)", name_or_path, path, precision)
    return model.to(device).eval()
