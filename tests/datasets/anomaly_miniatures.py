"""Anomaly datasets in their exact on-disk layouts, tiny (20 x 30 px), for tests: MVTec AD,
VisA (with its split csv and defect-id masks) and an anomalib-style folder dataset."""
import os

import numpy as np
from PIL import Image


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def rgb(value, size=(20, 30)):
    return np.full(size + (3,), value, np.uint8)


def make_mvtec(root):
    """bottle: 3 train good, 2 test good, broken (2) and crack (1) with 0/255 masks; wood: 1+1+1."""
    base = os.path.join(root, "mvtec")
    for cat, train, good, defects in (("bottle", 3, 2, {"broken": 2, "crack": 1}),
                                      ("wood", 1, 1, {"hole": 1})):
        for i in range(train):
            save(f"{base}/{cat}/train/good/{i:03d}.png", rgb(10 * i))
        for i in range(good):
            save(f"{base}/{cat}/test/good/{i:03d}.png", rgb(50 + i))
        for defect, n in defects.items():
            for i in range(n):
                save(f"{base}/{cat}/test/{defect}/{i:03d}.png", rgb(100 + i))
                mask = np.zeros((20, 30), np.uint8)
                mask[5:10, 10:20] = 255
                save(f"{base}/{cat}/ground_truth/{defect}/{i:03d}_mask.png", mask)
    return base


def make_visa(root):
    """candle: 2 train normal, 1 test normal, 2 anomalies whose masks hold ids 1..3."""
    base = os.path.join(root, "visa")
    rows = [["object", "split", "label", "image", "mask"]]
    for i in range(3):
        img = f"candle/Data/Images/Normal/{i:04d}.JPG"
        Image.fromarray(rgb(30 * i)).save(_mk(base, img), format="JPEG")
        rows.append(["candle", "train" if i < 2 else "test", "normal", img, ""])
    for i in range(2):
        img, mask = f"candle/Data/Images/Anomaly/{i:03d}.JPG", f"candle/Data/Masks/Anomaly/{i:03d}.png"
        Image.fromarray(rgb(200)).save(_mk(base, img), format="JPEG")
        ids = np.zeros((20, 30), np.uint8)
        ids[2:6, 2:6], ids[10:14, 20:24], ids[15:18, 5:8] = 1, 2, 3
        save(os.path.join(base, mask), ids)
        rows.append(["candle", "test", "anomaly", img, mask])
    os.makedirs(os.path.join(base, "split_csv"))
    with open(os.path.join(base, "split_csv", "1cls.csv"), "w") as f:
        f.write("\n".join(",".join(r) for r in rows) + "\n")
    return base


def _mk(base, rel):
    path = os.path.join(base, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def make_folder(base, normal=5, abnormal=2, masks=True, mask_name="{stem}_mask.png"):
    """<base>/good (normal), <base>/bad (anomalous), <base>/masks (0/255 masks) when ``masks``."""
    for i in range(normal):
        save(f"{base}/good/{i:03d}.png", rgb(10 + i))
    for i in range(abnormal):
        save(f"{base}/bad/{i:03d}.png", rgb(200 + i))
        if masks:
            mask = np.zeros((20, 30), np.uint8)
            mask[3:8, 4:12] = 255
            save(f"{base}/masks/" + mask_name.format(stem=f"{i:03d}"), mask)
    return str(base)
