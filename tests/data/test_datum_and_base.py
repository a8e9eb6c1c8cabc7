import builtins
import os
import pickle

import numpy as np
import pytest

from dassl_lite.data import DatasetBase, Datum


def test_datum_does_no_file_io(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("Datum touched the file system")

    for name in ("stat", "lstat", "listdir", "scandir"):
        monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(os.path, "exists", forbidden)
    monkeypatch.setattr(os.path, "isfile", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    d = Datum("/no/such/dir/img.jpg", label=3, domain=1, classname="cat")
    assert (d.impath, d.label, d.domain, d.classname) == ("/no/such/dir/img.jpg", 3, 1, "cat")


def test_datum_equality_hash_repr_and_pickle(tmp_path):
    a = Datum("x/a.jpg", 1, 0, "cat")
    assert a == Datum("x/a.jpg", label=np.int64(1), domain=0, classname="cat")
    assert a != Datum("x/a.jpg", 2, 0, "cat")
    assert a != ("x/a.jpg", 1, 0, "cat")
    assert len({a, Datum("x/a.jpg", 1, 0, "cat")}) == 1
    assert repr(a) == "Datum(impath='x/a.jpg', label=1, domain=0, classname='cat')"
    assert pickle.loads(pickle.dumps(a)) == a
    assert Datum(tmp_path / "p.png").impath == str(tmp_path / "p.png")
    assert not hasattr(a, "__dict__")
    with pytest.raises(AttributeError):
        a.label = 5


def test_datum_rejects_bad_types():
    with pytest.raises(TypeError):
        Datum("a.jpg", label=1.5)
    with pytest.raises(TypeError, match="impath must be a str or path; got int"):
        Datum(3)


def test_dataset_base_classes_from_all_splits():
    train = [Datum("a", 0, classname="zero"), Datum("b", 1, classname="one")]
    val = [Datum("c", 1, classname="one")]
    test = [Datum("d", 2, classname="two"), Datum("e", 0, classname="zero")]
    ds = DatasetBase(train_x=train, val=val, test=test)
    assert ds.num_classes == 3
    assert ds.lab2cname == {0: "zero", 1: "one", 2: "two"}
    assert ds.classnames == ["zero", "one", "two"]
    assert ds.train_x is train and ds.val is val and ds.test is test
    assert ds.train_u == []


def test_dataset_base_empty_and_conflicting_names():
    ds = DatasetBase()
    assert (ds.num_classes, ds.classnames, ds.val) == (0, [], [])
    with pytest.raises(ValueError, match="Label 0 has two class names, 'cat' and 'dog' \\(at b\\)"):
        DatasetBase(train_x=[Datum("a", 0, classname="cat")], test=[Datum("b", 0, classname="dog")])


def test_dataset_base_domain_checks():
    class Domains(DatasetBase):
        domains = ["photo", "sketch"]

    ds = Domains(train_x=[Datum("a")])
    ds.check_input_domains(["photo"], ["sketch"])
    with pytest.raises(ValueError, match=r"must be one of \['photo', 'sketch'\]; got 'art'"):
        ds.check_input_domains(["photo"], ["art"])
    with pytest.raises(ValueError, match="DATASET.SOURCE_DOMAINS is empty"):
        ds.check_input_domains([], ["sketch"])
