"""ImageNet's index lists each class folder once and stats no image file."""
import os

from tests.datasets.miniatures import make_imagenet


def count_stats(monkeypatch):
    calls = []
    real = os.stat

    def counting_stat(path, *args, **kwargs):
        calls.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    return calls


def test_stat_calls_do_not_grow_with_the_number_of_images(tmp_path, load, monkeypatch):
    counts = []
    for per_class in (1, 3):
        root = tmp_path / str(per_class)
        make_imagenet(str(root), train_per_class=per_class, val_per_class=per_class)
        with monkeypatch.context() as m:
            calls = count_stats(m)
            ds = load("ImageNet", root)
        assert len(ds.train_x) == 1000 * per_class
        counts.append(len(calls))
        assert len([c for c in calls if c.endswith(".JPEG")]) <= 2  # the first train and test image
    assert counts[0] == counts[1] < 20
