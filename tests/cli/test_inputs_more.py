"""Few-shot counts above a class's size are said with numbers; high-bit-depth images are scaled,
not clipped; the protocol tools name an unknown trainer (not a missing config folder)."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from dassl_lite.data import Datum
from dassl_lite.data.data_manager import read_image
from dassl_lite.data.errors import ImageReadError
from dassl_lite.data.splits import generate_fewshot_dataset

from .conftest import REPO


def test_num_shots_above_a_class_size_takes_all_and_warns(caplog):
    items = [Datum(f"{c}{i}.png", c, 0, str(c)) for c, n in ((0, 6), (1, 2), (2, 3))
             for i in range(n)]
    with caplog.at_level(logging.WARNING):
        picked = generate_fewshot_dataset(items, num_shots=4, seed=0)
    assert [sum(d.label == c for d in picked) for c in range(3)] == [4, 2, 3]
    assert caplog.messages == ["DATASET.NUM_SHOTS 4 is more than 2 class(es) have "
                               "(label: images = 1: 2, 2: 3); taking all of them"]


def test_16bit_grey_png_is_scaled_like_torchvision(tmp_path):
    values = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(read_image(str(path)))
    expected = TF.to_dtype(torch.from_numpy(values.astype(np.int32)).to(torch.uint16),
                           torch.uint8, scale=True).numpy()
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], expected)
    mid = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    mid.save(tmp_path / "mid.png")
    assert np.asarray(read_image(str(tmp_path / "mid.png"))).max() == 128  # was 255 (clipped)


def test_float_image_in_unit_range_is_scaled(tmp_path):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "f.tif")
    rgb = np.asarray(read_image(str(tmp_path / "f.tif")))
    assert np.array_equal(rgb[..., 1], np.round(values.astype(np.float64) * 255).astype(np.uint8))


def test_32bit_int_image_outside_16_bits_is_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), -5, dtype=np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ImageReadError, match=r"i.tif: mode I with values in \[-5, -5\]; "
                                             r"expected 8- or 16-bit data"):
        read_image(str(tmp_path / "i.tif"))


def test_protocol_tool_names_an_unknown_trainer(tmp_path, capsys):
    import trainers  # noqa: F401
    from dassl_lite.protocols.cli import main

    code = main("base2new", ["--trainer", "CoOpp", "--config-file", "toy", "--root",
                             str(tmp_path), "--datasets", "toy_shapes"], repo_root=REPO)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: No trainer 'CoOpp' in TRAINER registry. Did you mean 'CoOp'?")
    assert "config" not in err.splitlines()[0].split("Registered:")[0].lower()
