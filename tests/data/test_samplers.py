import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler

from dassl_lite.data import Datum, build_sampler
from dassl_lite.data.samplers import RandomClassSampler, RandomDomainSampler, SeqDomainSampler


def data(n_domains=3, per_domain=8, n_classes=4):
    return [Datum(f"{d}_{i}", label=i % n_classes, domain=d) for d in range(n_domains) for i in range(per_domain)]


def test_plain_samplers_and_unknown_name():
    src = data()
    assert isinstance(build_sampler("RandomSampler", data_source=src), RandomSampler)
    seq = build_sampler("SequentialSampler", data_source=src)
    assert isinstance(seq, SequentialSampler) and list(seq) == list(range(24))
    with pytest.raises(KeyError) as e:
        build_sampler("RandomSampeler", data_source=src)
    assert "Did you mean 'RandomSampler'?" in str(e.value)
    with pytest.raises(ValueError, match="needs a data_source; got None"):
        build_sampler("RandomSampler")


@pytest.mark.parametrize("name", ["RandomSampler", "RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"])
def test_order_follows_global_torch_rng(name):
    torch.manual_seed(0)
    sampler = build_sampler(name, data_source=data(), batch_size=6, n_domain=3, n_ins=2)
    state = torch.get_rng_state()
    epoch1, epoch2 = list(sampler), list(sampler)
    assert epoch1 != epoch2
    torch.set_rng_state(state)  # what the engine does on resume
    assert list(sampler) == epoch1 and list(sampler) == epoch2


def test_construction_does_not_consume_global_rng():
    state = torch.get_rng_state()
    build_sampler("RandomDomainSampler", data_source=data(), batch_size=6, n_domain=2)
    build_sampler("RandomClassSampler", data_source=data(), batch_size=4, n_ins=2)
    assert torch.equal(torch.get_rng_state(), state)


def test_random_domain_sampler_batches():
    src = data(n_domains=3, per_domain=8)
    sampler = RandomDomainSampler(src, batch_size=4, n_domain=2)
    idxs = list(sampler)
    assert len(idxs) % 4 == 0 and len(set(idxs)) == len(idxs)
    for b in range(0, len(idxs), 4):
        domains = [src[i].domain for i in idxs[b:b + 4]]
        assert domains[0] == domains[1] and domains[2] == domains[3] and domains[0] != domains[2]
    with pytest.raises(ValueError, match="n_domain <= 3 .* dividing batch_size; got n_domain=2, batch_size=5"):
        RandomDomainSampler(src, batch_size=5, n_domain=2)
    with pytest.raises(ValueError) as e:
        RandomDomainSampler(data(n_domains=3, per_domain=1), batch_size=4, n_domain=2)
    assert str(e.value) == "RandomDomainSampler needs at least 2 images per domain; got {0: 1, 1: 1, 2: 1} (domain: count)"


def test_seq_domain_sampler_batches():
    src = data(n_domains=3, per_domain=8)
    sampler = SeqDomainSampler(src, batch_size=6)
    idxs = list(sampler)
    assert len(sampler) == len(idxs) == 24  # 4 rounds of 2 images from each of 3 domains
    assert [src[i].domain for i in idxs[:6]] == [0, 0, 1, 1, 2, 2]
    assert sorted(idxs) == list(range(24))
    with pytest.raises(ValueError, match="SeqDomainSampler needs n_domain <= 3 .*; got n_domain=3, batch_size=4"):
        SeqDomainSampler(src, batch_size=4)


def test_random_class_sampler_batches():
    src = data(n_domains=1, per_domain=12, n_classes=4) + [Datum("rare", label=4)]
    sampler = RandomClassSampler(src, batch_size=6, n_ins=3)
    idxs = list(sampler)
    assert len(idxs) % 6 == 0
    for b in range(0, len(idxs), 3):
        assert len({src[i].label for i in idxs[b:b + 3]}) == 1
    every_chunk = list(RandomClassSampler(src, batch_size=3, n_ins=3))
    assert [src[i].label for i in every_chunk].count(4) == 3  # one image, drawn with replacement
    with pytest.raises(ValueError, match="at least batch_size // n_ins = 3 classes; the data has 1"):
        RandomClassSampler([Datum("a")], batch_size=6, n_ins=2)
