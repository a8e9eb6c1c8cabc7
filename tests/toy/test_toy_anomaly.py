"""The toy anomaly world: determinism, exact masks, defect sizes, the on-disk layouts."""
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from datasets.toy_anomaly import DEFECTS, TOY_ANOMALY_DATASETS, defect_plan, render_sample
from datasets.toy_anomaly_world import ToyAnomalyCounts, make_toy_anomaly_world

SMALL = ToyAnomalyCounts(train_good=2, test_good=2, test_defective=4)


def all_cases():
    for ds, info in TOY_ANOMALY_DATASETS.items():
        for cat in info["categories"]:
            for d in info["defects"]:
                yield ds, cat.name, d


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_mask_pixel_lies_on_a_drawn_defect(index):
    """Against the defect-free twin: mask pixels all changed, every other pixel identical; each
    defect covers at least about one 16 px patch's worth of extent at 128 px."""
    for ds, cat, defect in all_cases():
        s = render_sample(ds, cat, index, [defect])
        img, normal = np.asarray(s.image).astype(int), np.asarray(s.normal).astype(int)
        changed = (img != normal).any(axis=-1)
        assert np.array_equal(changed, s.mask > 0), (ds, cat, defect)
        ys, xs = np.nonzero(s.mask)
        assert ys.size >= 40, (ds, cat, defect, ys.size)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert extent >= 11, (ds, cat, defect, extent)
        assert s.mask.max() == 1


def test_same_seed_same_bytes_other_seed_other_images():
    a = render_sample("ToyVisA", "pink_moon", 3, ["crack", "spot"])
    b = render_sample("ToyVisA", "pink_moon", 3, ["crack", "spot"])
    c = render_sample("ToyVisA", "pink_moon", 3, ["crack", "spot"], seed=1)
    assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.mask, b.mask)
    assert a.image.tobytes() != c.image.tobytes()
    assert set(np.unique(a.mask)) <= {0, 1, 2} and (a.mask == 2).any()
    assert set(DEFECTS) == {d for info in TOY_ANOMALY_DATASETS.values() for d in info["defects"]}
    mvtec, visa = (set(TOY_ANOMALY_DATASETS[k]["defects"]) for k in ("ToyMVTec", "ToyVisA"))
    assert mvtec & visa and mvtec - visa and visa - mvtec  # partly disjoint
    cats = [{c.name for c in TOY_ANOMALY_DATASETS[k]["categories"]} for k in ("ToyMVTec", "ToyVisA")]
    assert not cats[0] & cats[1]  # disjoint categories
    assert defect_plan("ToyMVTec", 4, category="dots")[0] == "scratch"


def file_digests(folder):
    out = {}
    for base, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(base, f), "rb") as fh:
                out[os.path.relpath(os.path.join(base, f), folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_generation_is_byte_identical_and_in_the_real_layouts(tmp_path):
    a = make_toy_anomaly_world(str(tmp_path / "a"), counts=SMALL)
    b = make_toy_anomaly_world(str(tmp_path / "b"), counts=SMALL)
    for name in a:
        assert file_digests(a[name]) == file_digests(b[name])
    mv, vi = a["ToyMVTec"], a["ToyVisA"]
    plans = [defect_plan("ToyMVTec", i, category="red_circle") for i in range(SMALL.test_defective)]
    folders = {"good"} | {"combined" if len(p) > 1 else p[0] for p in plans}
    assert sorted(os.listdir(os.path.join(mv, "red_circle", "test"))) == sorted(folders)
    assert folders - {"good", "combined"}  # single-defect folders are named after the defect
    mask = np.asarray(Image.open(os.path.join(mv, "red_circle", "ground_truth", "hole", "000_mask.png")))
    assert set(np.unique(mask)) == {0, 255}
    with open(os.path.join(vi, "split_csv", "1cls.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "object,split,label,image,mask"
    assert lines[1] == "yellow_star,train,normal,yellow_star/Data/Images/Normal/0000.JPG,"
    assert "yellow_star,test,anomaly,yellow_star/Data/Images/Anomaly/000.JPG,yellow_star/Data/Masks/Anomaly/000.png" in lines
    assert len(lines) == 1 + 5 * 8
    ids = set()
    for f in os.listdir(os.path.join(vi, "mesh", "Data", "Masks", "Anomaly")):
        ids |= set(np.unique(np.asarray(Image.open(os.path.join(vi, "mesh", "Data", "Masks", "Anomaly", f)))))
    assert ids == {0, 1, 2, 3, 4}  # defect-type ids crack, missing, spot, stain
    assert Image.open(os.path.join(vi, "mesh", "Data", "Images", "Normal", "0000.JPG")).format == "JPEG"
    assert os.path.isfile(os.path.join(mv, "meta.json")) and os.path.isfile(os.path.join(vi, "meta.json"))
    assert make_toy_anomaly_world(str(tmp_path / "a"), counts=SMALL) == a  # idempotent


def test_normal_images_are_aligned_per_category():
    """As MVTec AD's and VisA's: a category's normal images share its look (an object's
    background, placement and colour; a texture's colours) up to a small jitter, and another
    seed draws another look."""
    for ds, info in TOY_ANOMALY_DATASETS.items():
        for cat in info["categories"]:
            imgs = [np.asarray(render_sample(ds, cat.name, i).image, dtype=float) for i in range(4)]
            other = np.asarray(render_sample(ds, cat.name, 0, seed=1).image, dtype=float)
            if cat.kind == "object":
                diffs = [np.abs(imgs[0] - x).mean() for x in imgs[1:]]
                assert max(diffs) < 10 < np.abs(imgs[0] - other).mean(), (ds, cat.name, diffs)
            means = [x.mean(axis=(0, 1)) for x in imgs]
            assert max(np.abs(means[0] - m).max() for m in means[1:]) < 8, (ds, cat.name)
