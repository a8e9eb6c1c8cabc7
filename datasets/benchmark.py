"""What the benchmark datasets share: published split files, their download, annotation reading.

A :class:`BenchmarkDataset` reads the folder layout of CoOp's DATASETS.md (see our DATASETS.md).
Its split file (``split_zhou_<Name>.json``) is read when present. When it is absent, the published
copy is downloaded from Google Drive (with ``gdown``) where one exists; if that fails (offline), the
split is built from the raw annotations with a fixed seed and saved, as upstream builds it, with a
warning that it differs from the published split; and if the raw annotations are missing too, the
error says what to download, from where, and where to put it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import List, Optional, Tuple

from dassl_lite.data import Datum, SplitDataset
from dassl_lite.errors import DasslLiteError

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkDataset", "DownloadError", "SPLIT_SEED", "download_from_gdrive", "gdrive_url"]

SPLIT_SEED = 1  # seed of every split built from raw annotations: the same split on every machine
DOWNLOAD_TIMEOUT_S = 20.0  # seconds gdown waits for the server between bytes


class DownloadError(DasslLiteError, OSError):
    """A file that could not be downloaded; the message says what to fetch by hand and where to put it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def gdrive_url(file_id: str) -> str:
    """The browser link of a Google Drive file."""
    return f"https://drive.google.com/file/d/{file_id}/view"


def download_from_gdrive(file_id: str, dest: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Download Google Drive file ``file_id`` to ``dest`` (atomically) and return ``dest``.

    A ``.json`` file must parse. Any failure raises :class:`DownloadError` naming the file, its
    link and ``dest``, so the user can fetch it by hand.
    """
    name, url = os.path.basename(dest), gdrive_url(file_id)

    def failed(why: str) -> DownloadError:
        return DownloadError(f"could not download {name} from {url} ({why}); download it by hand "
                             f"and put it at {dest}")

    try:
        import gdown
    except ImportError:
        raise failed("gdown is not installed: pip install gdown") from None
    directory = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        os.close(fd)
    except OSError as e:
        raise failed(f"cannot write to {directory}: {e}") from None
    try:
        logger.info("Downloading %s from %s", name, url)
        gdown.download(id=file_id, output=tmp, quiet=True, timeout=timeout)
        if dest.endswith(".json"):
            with open(tmp, "r") as f:
                json.load(f)
        os.replace(tmp, dest)
    except Exception as e:  # network libraries raise many types; all mean "fetch it by hand"
        raise failed(f"{type(e).__name__}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("Saved %s", dest)
    return dest


class BenchmarkDataset(SplitDataset):
    """A SplitDataset whose missing split file is downloaded, else built from raw annotations.

    Subclasses set ``split_file_id`` (Google Drive id of the published split file, "" if none),
    ``raw_annotations`` (paths under the dataset folder that :meth:`build_split` reads) and
    implement :meth:`build_split`, seeding any shuffle with :data:`SPLIT_SEED`.
    """

    split_file_id = ""
    raw_annotations: Tuple[str, ...] = ()

    def load_split(self):
        """(train, val, test) from the split file; downloaded or built first when it is missing."""
        if not self.split_file or os.path.isfile(self.split_path):
            return super().load_split()
        problem = self._download_split_file()
        if problem is None:
            return super().load_split()
        missing = self.missing_raw_annotations()
        if missing:
            raise self.layout_error(
                f"split file not found: {self.split_path}; {problem}; it cannot be built from raw "
                f"annotations either, missing: {', '.join(missing)}"
            )
        if self.split_file_id:
            logger.warning(
                "%s: building %s from raw annotations (seed %d), which differs from the published "
                "split that papers report on, because %s", type(self).__name__, self.split_file,
                SPLIT_SEED, problem)
        return super().load_split()

    def _download_split_file(self) -> Optional[str]:
        """None once the published split file is in place; else why it is not."""
        if not self.split_file_id:
            return f"{type(self).__name__} has no published split file to download"
        try:
            download_from_gdrive(self.split_file_id, self.split_path)
        except DownloadError as e:
            return str(e)
        return None

    def missing_raw_annotations(self) -> List[str]:
        """The paths of ``raw_annotations`` that do not exist."""
        paths = [os.path.join(self.dataset_dir, p) for p in type(self).raw_annotations]
        return [p for p in paths if not os.path.exists(p)]

    # ------------------------------------------------------------------ building splits
    def split_class_folders(self, **kwargs):
        """``image_dir/<class>/*`` split 50/20/30% per class (upstream's DTD helper), seeded."""
        try:
            return self.read_and_split_data(self.image_dir, p_trn=0.5, p_val=0.2,
                                            seed=SPLIT_SEED, **kwargs)
        except ValueError as e:
            raise self.layout_error(str(e)) from None

    def carve_val(self, trainval: List[Datum], p_val: float = 0.2):
        """(train, val): ``round(n * p_val)`` val items of each class of ``trainval``, seeded."""
        try:
            return self.split_trainval(trainval, p_val=p_val, seed=SPLIT_SEED)
        except ValueError as e:
            raise self.layout_error(str(e)) from None

    # ------------------------------------------------------------------ reading annotations
    def annotation_path(self, relpath: str) -> str:
        """``dataset_dir/relpath``; a layout error naming it when it does not exist."""
        path = os.path.join(self.dataset_dir, relpath)
        if not os.path.exists(path):
            raise self.layout_error(f"annotation file not found: {path}")
        return path

    def read_lines(self, relpath: str) -> List[Tuple[int, str]]:
        """The non-empty stripped lines of ``dataset_dir/relpath`` with their 1-based numbers."""
        with open(self.annotation_path(relpath), "r", encoding="utf-8") as f:
            return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]

    def bad_line(self, relpath: str, number: int, line: str, expected: str):
        """A layout error for a malformed annotation line."""
        path = os.path.join(self.dataset_dir, relpath)
        return self.layout_error(f"line {number} of {path} should be {expected}; got {line!r}")

    def read_json_file(self, relpath: str, **json_kwargs):
        """The parsed JSON file ``dataset_dir/relpath`` (a layout error if missing or invalid);
        ``json_kwargs`` go to :func:`json.load`."""
        path = self.annotation_path(relpath)
        try:
            with open(path, "r", encoding="utf-8") as f:
                return json.load(f, **json_kwargs)
        except ValueError as e:
            raise self.layout_error(f"{path} is not valid JSON ({e})") from None

    def load_mat(self, relpath: str, *keys: str):
        """The variables ``keys`` of MATLAB file ``dataset_dir/relpath`` (needs scipy)."""
        path = self.annotation_path(relpath)
        try:
            from scipy.io import loadmat
        except ImportError:
            raise self.layout_error(
                f"building {self.split_file} reads {path}, which needs scipy (pip install scipy); "
                f"or put the published {self.split_file} in {self.dataset_dir}"
            ) from None
        data = loadmat(path, squeeze_me=True)
        missing = [k for k in keys if k not in data]
        if missing:
            raise self.layout_error(f"{path} has no variable {', '.join(missing)}")
        return [data[k] for k in keys]
