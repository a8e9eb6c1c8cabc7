"""Convert VTAB tasks from tensorflow_datasets' on-disk shards to the prepared VTAB-1k layout.

    python tools/convert_vtab.py --tfds-dir ~/tensorflow_datasets --out $DATA/vtab-1k \
        [--tasks cifar dtd ...] [--jpeg] [--force]

Reads the TFRecord shards that ``tfds`` wrote (KMnP/vpt's ``DATA.DATAPATH``:
``<tfds-dir>/<builder>[/<config>]/<version>/<builder>-<split>.tfrecord-NNNNN-of-MMMMM``) without
TensorFlow: the TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C of
the data; both CRCs are verified) and the ``tf.train.Example`` protobuf are parsed here. Each task
gets ``<out>/<task>/{train800,val200,train800val200,test}.txt`` and its images at
``images/<list>/<i:06d>.<ext>``, the layout NOAH's ``get_vtab1k.py`` writes (so
``train800val200``'s images are copies). Encoded images are copied byte for byte (their own
format); ``--jpeg`` re-encodes them as JPEG with PIL's defaults as NOAH's script does; the
single-channel dSprites and smallNORB images are expanded to RGB (dSprites' 0/1 pixels times 255)
as VTAB's preprocessing does, and written as PNG (or JPEG with ``--jpeg``).

The split definitions (which records make ``train800``, ``val200`` and ``test``) and the labels
are VTAB's, as ``google-research/task_adaptation``'s data loaders define them (copied by
KMnP/vpt in ``src/data/vtab_datasets/*.py``): ``train800`` is ``train[:800]`` of the tfds train
split; ``val200`` is the first 200 records of the task's validation split, which is tfds'
``validation`` split where one exists and otherwise ``train[k:k+200]`` with ``k`` the task's
train size (90% of tfds train for caltech101/cifar/svhn, 80% for pets, 60% for
eurosat/resisc45, 80% for dsprites, 90% for clevr); smallNORB's is ``test[:200]``. ``test`` is
tfds ``test``, except clevr (``validation``), eurosat and resisc45 (``train[80%:]``), dsprites
(``train[90%:]``) and smallNORB (``test[50%:]``). Records are counted in shard order, as tfds
reads them with ``shuffle_files=False``. The tfds version is VTAB's (``<builder>:<major>.*.*``,
the highest present; ``dmlab:2.0.1`` and ``kitti:3.2.0`` exactly). A task whose output folder already has its four list
files is skipped unless ``--force`` (another folder there is an error unless ``--force``); a
task is written in a temporary sibling folder and renamed
into place.
"""
from __future__ import annotations

import argparse
import glob
import io
import logging
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # datasets/ is a repo-root package

from dassl_lite.errors import DasslLiteError  # noqa: E402
from datasets.vtab_tasks import LIST_FILES, VTAB_TASKS  # noqa: E402

logger = logging.getLogger("convert_vtab")


class ConvertError(DasslLiteError):
    """A shard, record or task that cannot be converted; the message names it."""


# ---------------------------------------------------------------- TFRecord framing

def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()
try:
    from google_crc32c import value as _fast_crc32c
except ImportError:
    _fast_crc32c = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses (pure Python, a few MB/s; the google-crc32c
    package is used when it is installed)."""
    if _fast_crc32c is not None:
        return _fast_crc32c(data)
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecord(path: str, keep: Callable[[int], bool] = lambda i: True
                  ) -> Iterator[Optional[bytes]]:
    """The records of one TFRecord file, their data CRCs verified; a record index for which
    ``keep`` is False yields None, its data skipped unread (only its length CRC is checked). A
    truncated record or a bad CRC raises ConvertError naming the file and the record index."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ConvertError(f"{path}: record {index} is truncated (header of "
                                   f"{len(header)} bytes)")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != length_crc:
                raise ConvertError(f"{path}: record {index} has a bad length CRC (corrupt "
                                   f"shard, or not a TFRecord file)")
            if f.tell() + length + 4 > size:
                raise ConvertError(f"{path}: record {index} is truncated ({size - f.tell()} of "
                                   f"{length + 4} bytes left)")
            if not keep(index):
                f.seek(length + 4, os.SEEK_CUR)
                yield None
            else:
                data, footer = f.read(length), f.read(4)
                if masked_crc(data) != struct.unpack("<I", footer)[0]:
                    raise ConvertError(f"{path}: record {index} has a bad data CRC (corrupt "
                                       f"shard)")
                yield data
            index += 1


# ---------------------------------------------------------------- tf.train.Example

def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for
    length-delimited fields, raw 4/8-byte strings for fixed fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
            if len(value) < n:
                raise ValueError("truncated field")
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _feature(buf: bytes):
    """One tf.train.Feature: a list of bytes, floats or ints."""
    for number, _, value in _fields(buf):
        inner = list(_fields(value))
        if number == 1:  # BytesList: repeated bytes value = 1
            return [v for n, _, v in inner if n == 1]
        if number == 2:  # FloatList: repeated float value = 1 (packed or not)
            out = []
            for n, wire, v in inner:
                out += struct.unpack(f"<{len(v) // 4}f", v) if wire == 2 else struct.unpack("<f", v)
            return list(out)
        if number == 3:  # Int64List: repeated int64 value = 1 (packed or not)
            out = []
            for n, wire, v in inner:
                if wire == 2:
                    pos = 0
                    while pos < len(v):
                        x, pos = _varint(v, pos)
                        out.append(x - (1 << 64) if x >= 1 << 63 else x)
                else:
                    out.append(v - (1 << 64) if v >= 1 << 63 else v)
            return out
    return []


def parse_example(record: bytes) -> Dict[str, list]:
    """A serialized tf.train.Example as ``{feature name: list of values}``."""
    features: Dict[str, list] = {}
    for number, _, value in _fields(record):
        if number != 1:  # Example.features
            continue
        for n, _, entry in _fields(value):  # Features.feature: map<string, Feature>
            if n != 1:
                continue
            key, feat = "", b""
            for en, _, ev in _fields(entry):
                if en == 1:
                    key = ev.decode("utf-8")
                elif en == 2:
                    feat = ev
            features[key] = _feature(feat)
    return features


# ---------------------------------------------------------------- VTAB's tasks

Labeller = Callable[[Dict[str, list]], int]


def _feature_label(name: str, factor: float = 1.0) -> Labeller:
    return lambda ex: int(math.floor(ex[name][0] / factor)) if factor != 1.0 else int(ex[name][0])


def _threshold_label(values: List[float], thresholds: Sequence[float]) -> int:
    """VTAB's binning: the last i with thresholds[i] < value (value = min of ``values``)."""
    value = min(values)
    return max(i for i, t in enumerate(thresholds) if t < value)


def _clevr_distance(ex) -> int:
    z = ex["objects/pixel_coords"][2::3]
    return _threshold_label(z, [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def _kitti_vehicle_distance(ex) -> int:
    z = [loc for t, loc in zip(ex["objects/type"], ex["objects/location"][2::3]) if t < 3]
    return _threshold_label(z + [1000.0], [-100.0, 8.0, 20.0, 999.0])


class Part(NamedTuple):
    """Records [start, stop) of tfds split ``split``; ``start``/``stop`` may be functions of the
    split's record count; ``length`` (when set) gives ``stop = start + length``."""

    split: str
    start: object = 0
    stop: object = None
    length: Optional[int] = None

    def bounds(self, n: int) -> Tuple[int, int]:
        start = self.start(n) if callable(self.start) else self.start
        if self.length is not None:
            return start, start + self.length
        stop = self.stop(n) if callable(self.stop) else self.stop
        return start, n if stop is None else stop


def _pct(p: int) -> Callable[[int], int]:
    return lambda n: p * n // 100


def _pct_round(p: int) -> Callable[[int], int]:  # tfds "split[p%:]" rounds to the closest
    return lambda n: int(round(p * n / 100))


class TfdsTask(NamedTuple):
    builder: str  # folder under the tfds dir, with its config ("eurosat/rgb")
    version: str  # VTAB's version: a major number ("3" for "3.*.*") or an exact "2.0.1"
    train800: Part
    val200: Part
    test: Part
    label: Labeller = _feature_label("label")
    channels: int = 3  # 1: expand to RGB (dSprites, smallNORB)
    scale: int = 1  # pixel factor before saving (dSprites: 255)


def _train_then(p: int) -> Part:
    """``train[k:k+200]`` with k = p% of tfds train (VTAB's val200 where tfds has no val)."""
    return Part("train", _pct(p), length=200)


_T800 = Part("train", 0, length=800)
_VAL200 = Part("validation", 0, length=200)
_TEST = Part("test")
TFDS_TASKS: Dict[str, TfdsTask] = {
    "cifar": TfdsTask("cifar100", "3", _T800, _train_then(90), _TEST),
    "caltech101": TfdsTask("caltech101", "3", _T800, _train_then(90), _TEST),
    "dtd": TfdsTask("dtd", "3", _T800, _VAL200, _TEST),
    "oxford_flowers102": TfdsTask("oxford_flowers102", "2", _T800, _VAL200, _TEST),
    "oxford_iiit_pet": TfdsTask("oxford_iiit_pet", "3", _T800, _train_then(80), _TEST),
    "svhn": TfdsTask("svhn_cropped", "3", _T800, _train_then(90), _TEST),
    "sun397": TfdsTask("sun397/tfds", "4", _T800, _VAL200, _TEST),
    "patch_camelyon": TfdsTask("patch_camelyon", "2", _T800, _VAL200, _TEST),
    "eurosat": TfdsTask("eurosat/rgb", "2", _T800, _train_then(60), Part("train", _pct(80))),
    "resisc45": TfdsTask("resisc45", "3", _T800, _train_then(60), Part("train", _pct(80))),
    "diabetic_retinopathy": TfdsTask("diabetic_retinopathy_detection/btgraham-300", "3", _T800,
                                     _VAL200, _TEST),
    "clevr_count": TfdsTask("clevr", "3", _T800, _train_then(90), Part("validation"),
                            label=lambda ex: len(ex["objects/size"]) - 3),
    "clevr_dist": TfdsTask("clevr", "3", _T800, _train_then(90), Part("validation"),
                           label=_clevr_distance),
    "dmlab": TfdsTask("dmlab", "2.0.1", _T800, _VAL200, _TEST),
    "kitti": TfdsTask("kitti", "3.2.0", _T800, _VAL200, _TEST, label=_kitti_vehicle_distance),
    "dsprites_loc": TfdsTask("dsprites", "2", _T800, _train_then(80), Part("train", _pct(90)),
                             label=_feature_label("label_x_position", 32 / 16), channels=1,
                             scale=255),
    "dsprites_ori": TfdsTask("dsprites", "2", _T800, _train_then(80), Part("train", _pct(90)),
                             label=_feature_label("label_orientation", 40 / 16), channels=1,
                             scale=255),
    "smallnorb_azi": TfdsTask("smallnorb", "2", _T800, Part("test", 0, length=200),
                              Part("test", _pct_round(50)), label=_feature_label("label_azimuth"),
                              channels=1),
    "smallnorb_ele": TfdsTask("smallnorb", "2", _T800, Part("test", 0, length=200),
                              Part("test", _pct_round(50)),
                              label=_feature_label("label_elevation"), channels=1),
}
assert set(TFDS_TASKS) == set(VTAB_TASKS), "every VTAB task needs its tfds definition"


# ---------------------------------------------------------------- the tfds folder

def _version_key(name: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in name.split("."))


def find_version_dir(tfds_dir: str, task: str) -> str:
    """``<tfds_dir>/<builder>/<version>`` of the task: VTAB's exact version, or the highest of
    VTAB's major version."""
    spec = TFDS_TASKS[task]
    base = os.path.join(tfds_dir, spec.builder)
    wanted = spec.version if "." in spec.version else f"{spec.version}.*.*"
    versions = [v for v in (os.listdir(base) if os.path.isdir(base) else [])
                if re.fullmatch(r"\d+\.\d+\.\d+", v)
                and (v == spec.version or v.split(".")[0] == spec.version)]
    if not versions:
        raise ConvertError(f"{task}: no tfds version {wanted} in {base} (VTAB reads "
                           f"{spec.builder}:{wanted}; prepare it with tfds first)")
    return os.path.join(base, max(versions, key=_version_key))


def shards(version_dir: str, split: str) -> List[str]:
    """The split's shard files in order."""
    builder = os.path.basename(os.path.dirname(version_dir))
    if not re.fullmatch(r"\d+\.\d+\.\d+", os.path.basename(version_dir)):
        raise ConvertError(f"{version_dir} is not a tfds version folder")
    found = glob.glob(os.path.join(version_dir, f"*-{split}.tfrecord*"))
    found = [f for f in found if re.search(rf"-{split}\.tfrecord(-\d+-of-\d+)?$", f)]
    if not found:
        raise ConvertError(f"no shards of split '{split}' ({builder}-{split}.tfrecord-*) in "
                           f"{version_dir}")
    return sorted(found)


def count_records(paths: Sequence[str]) -> int:
    return sum(1 for p in paths for _ in read_tfrecord(p, keep=lambda i: False))


def read_part(paths: Sequence[str], start: int, stop: int) -> Iterator[Tuple[str, int, bytes]]:
    """(shard, record index in the shard, record) of records [start, stop) in shard order."""
    position = 0
    for path in paths:
        if position >= stop:
            return
        first = position
        records = read_tfrecord(path, keep=lambda i: start <= first + i < stop)
        for index, record in enumerate(records):
            if position >= stop:
                return
            if record is not None:
                yield path, index, record
            position += 1


# ---------------------------------------------------------------- writing

def _image_bytes(ex: Dict[str, list], spec: TfdsTask, jpeg: bool) -> Tuple[bytes, str]:
    """The image as file bytes and its extension."""
    data = ex["image"][0]
    if spec.channels == 3 and not jpeg:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return data, "png"
        if data[:3] == b"\xff\xd8\xff":
            return data, "jpg"
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    if spec.channels == 1 or spec.scale != 1:
        arr = np.asarray(image)
        if arr.ndim == 3:
            arr = arr[..., 0]
        arr = np.clip(arr.astype(np.int64) * spec.scale, 0, 255).astype(np.uint8)
        image = Image.fromarray(np.stack([arr] * 3, axis=-1))
    out = io.BytesIO()
    if jpeg:
        image.convert("RGB").save(out, format="JPEG")
        return out.getvalue(), "jpg"
    image.save(out, format="PNG")
    return out.getvalue(), "png"


def convert_task(tfds_dir: str, out: str, task: str, jpeg: bool = False,
                 force: bool = False) -> str:
    """Write ``<out>/<task>`` from the tfds shards; returns the folder."""
    spec = TFDS_TASKS[task]
    final = os.path.join(out, task)
    complete = all(os.path.isfile(os.path.join(final, f"{n}.txt")) for n in LIST_FILES)
    if complete and not force:
        logger.info("%s: %s is complete (--force rewrites it)", task, final)
        return final
    if os.path.exists(final) and not complete and not force:
        raise ConvertError(f"{task}: {final} exists without the four list files; move it away "
                           f"or pass --force to replace it")
    version_dir = find_version_dir(tfds_dir, task)
    num_classes = VTAB_TASKS[task].num_classes
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{task}.tmp-", dir=out)
    os.chmod(tmp, 0o755)
    try:
        lists: Dict[str, List[str]] = {}
        counts: Dict[str, int] = {}
        for name in ("train800", "val200", "test"):
            part: Part = getattr(spec, name)
            paths = shards(version_dir, part.split)
            if part.split not in counts:
                counts[part.split] = count_records(paths)
            n = counts[part.split]
            start, stop = part.bounds(n)
            if stop > n or start >= stop:
                raise ConvertError(f"{task}: {name} needs records [{start}, {stop}) of split "
                                   f"'{part.split}', which has {n} in {version_dir}")
            lines = lists[name] = []
            os.makedirs(os.path.join(tmp, "images", name))
            for i, (path, index, record) in enumerate(read_part(paths, start, stop)):
                lines.append(_write_record(tmp, name, i, path, index, record, spec, num_classes,
                                           jpeg))
            logger.info("%s: %s = %s[%d:%d], %d images", task, name, part.split, start, stop,
                        len(lines))
        # train800val200: copies of train800's then val200's images, as NOAH's script writes
        os.makedirs(os.path.join(tmp, "images", "train800val200"))
        union = []
        for name in ("train800", "val200"):
            for line in lists[name]:
                rel, label = line.rsplit(" ", 1)
                new = f"images/train800val200/{len(union):06d}{os.path.splitext(rel)[1]}"
                shutil.copyfile(os.path.join(tmp, rel), os.path.join(tmp, new))
                union.append(f"{new} {label}")
        lists["train800val200"] = union
        for name in LIST_FILES:  # last: the list files mark a complete task
            with open(os.path.join(tmp, f"{name}.txt"), "w") as f:
                f.write("".join(f"{line}\n" for line in lists[name]))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_record(folder: str, name: str, i: int, path: str, index: int, record: bytes,
                  spec: TfdsTask, num_classes: int, jpeg: bool) -> str:
    where = f"{path}: record {index}"
    try:
        ex = parse_example(record)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError(f"{where} is not a tf.train.Example ({e})") from None
    if not ex.get("image"):
        raise ConvertError(f"{where} has no 'image' feature (features: {sorted(ex)})")
    try:
        label = spec.label(ex)
    except (KeyError, IndexError, ValueError) as e:
        raise ConvertError(f"{where}: cannot compute the label ({type(e).__name__}: {e}; "
                           f"features: {sorted(ex)})") from None
    if not 0 <= label < num_classes:
        raise ConvertError(f"{where}: label {label} outside 0..{num_classes - 1}")
    data, ext = _image_bytes(ex, spec, jpeg)
    rel = f"images/{name}/{i:06d}.{ext}"
    with open(os.path.join(folder, rel), "wb") as f:
        f.write(data)
    return f"{rel} {label}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tfds-dir", required=True,
                        help="tensorflow_datasets data dir (KMnP/vpt's DATA.DATAPATH)")
    parser.add_argument("--out", required=True, help="the vtab-1k folder to write ($DATA/vtab-1k)")
    parser.add_argument("--tasks", nargs="+", default=list(TFDS_TASKS), choices=list(TFDS_TASKS),
                        metavar="TASK", help="tasks to convert (default: all 19)")
    parser.add_argument("--jpeg", action="store_true",
                        help="re-encode every image as JPEG (PIL defaults), as NOAH's script does")
    parser.add_argument("--force", action="store_true", help="rewrite complete tasks")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for task in args.tasks:
        try:
            folder = convert_task(args.tfds_dir, args.out, task, jpeg=args.jpeg, force=args.force)
        except ConvertError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{task:22s} {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
