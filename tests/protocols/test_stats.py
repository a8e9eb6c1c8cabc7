"""Aggregation on hand-computed numbers: HM, population std, CI95, missing seeds, averages."""
import math

import pytest

from dassl_lite.protocols.stats import (
    average_base2new, base2new_stat, ci95, harmonic_mean, mean_or_none, mean_std, seed_stat,
)


def test_harmonic_mean_matches_published_tables():
    # MaPLe ImageNet 76.66 / 70.54 -> 73.47; CoOp 11-dataset average 82.69 / 63.22 -> 71.66
    assert round(harmonic_mean(76.66, 70.54), 2) == 73.47
    assert round(harmonic_mean(82.69, 63.22), 2) == 71.66
    assert harmonic_mean(80.0, 20.0) == 32.0  # 2 * 80 * 20 / 100
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(None, 50.0) is None


def test_harmonic_mean_rejects_negative():
    with pytest.raises(ValueError, match="accuracies must be >= 0; got base=-1.0, new=2.0"):
        harmonic_mean(-1.0, 2.0)


def test_std_is_population_std_like_numpy_default():
    mean, std = mean_std([80.0, 82.0, 84.0])
    assert mean == 82.0
    assert std == pytest.approx(math.sqrt(8 / 3))  # 1.632993..., not the sample std 2.0
    assert mean_std([70.0]) == (70.0, 0.0)
    assert ci95([80.0, 82.0, 84.0]) == pytest.approx(1.96 * math.sqrt(8 / 3) / math.sqrt(3))
    with pytest.raises(ValueError, match="at least one value"):
        mean_std([])


def test_seed_stat_marks_missing_instead_of_averaging_fewer_seeds():
    assert seed_stat({1: 70.0, 2: 72.0}) == {
        "mean": 71.0, "std": 1.0, "per_seed": {"1": 70.0, "2": 72.0}, "missing": []}
    assert seed_stat({1: 70.0, 2: None, 3: 74.0}) == {
        "mean": None, "std": None, "per_seed": {"1": 70.0, "2": None, "3": 74.0}, "missing": [2]}


def test_base2new_stat_hand_computed():
    st = base2new_stat({1: 80.0, 2: 82.0, 3: 84.0}, {1: 70.0, 2: 72.0, 3: 74.0})
    assert st["base"]["mean"] == 82.0 and st["new"]["mean"] == 72.0
    # HM of the means: 2 * 82 * 72 / 154
    assert st["hm"]["mean"] == pytest.approx(76.67532467532467)
    per_seed = {"1": 2 * 80 * 70 / 150, "2": 2 * 82 * 72 / 154, "3": 2 * 84 * 74 / 158}
    assert st["hm"]["per_seed"] == pytest.approx(per_seed)
    assert round(st["hm"]["per_seed"]["1"], 4) == 74.6667
    assert st["hm"]["std"] == pytest.approx(mean_std(list(per_seed.values()))[1])
    assert round(st["hm"]["std"], 4) == 1.6399


def test_base2new_stat_with_a_missing_new_run():
    st = base2new_stat({1: 80.0, 2: 82.0}, {1: 70.0, 2: None})
    assert st["base"]["mean"] == 81.0 and st["base"]["missing"] == []
    assert st["new"]["mean"] is None and st["new"]["missing"] == [2]
    assert st["hm"]["mean"] is None and st["hm"]["missing"] == [2]
    assert st["hm"]["per_seed"]["2"] is None


def test_base2new_stat_needs_the_same_seeds():
    with pytest.raises(ValueError, match=r"same seeds; got \[1, 2\] and \[1\]"):
        base2new_stat({1: 1.0, 2: 2.0}, {1: 1.0})


def test_average_over_datasets_is_hm_of_mean_base_and_new():
    per = {"a": base2new_stat({1: 90.0}, {1: 60.0}), "b": base2new_stat({1: 70.0}, {1: 80.0})}
    avg = average_base2new(per)
    assert avg["base"] == 80.0 and avg["new"] == 70.0
    assert avg["hm"] == pytest.approx(2 * 80 * 70 / 150)  # 74.666..., not mean of HMs (73.33)
    per["c"] = base2new_stat({1: 50.0}, {1: None})
    assert average_base2new(per) == {"base": pytest.approx(70.0), "new": None, "hm": None}
    assert mean_or_none([]) is None and mean_or_none([1.0, None]) is None
