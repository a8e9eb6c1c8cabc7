"""Samplers by name (Dassl's set). All randomness comes from the global torch RNG.

Each ``__iter__`` draws one seed from the global torch generator (as torch's ``RandomSampler``
does), so the data order is reproducible from ``torch.manual_seed`` and resumes exactly when the
engine restores the torch RNG state. Dassl's samplers use Python's ``random`` instead.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data.sampler import RandomSampler, Sampler, SequentialSampler

from ..registry import SAMPLER_REGISTRY
from .datum import Datum

__all__ = ["RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler", "build_sampler"]


def _generator_from_global() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
    return g


def _sample(items: Sequence[int], k: int, g: torch.Generator) -> List[int]:
    """``k`` distinct items of ``items`` in random order."""
    return [items[i] for i in torch.randperm(len(items), generator=g)[:k].tolist()]


def _without(items: List[int], picked: List[int]) -> List[int]:
    drop = set(picked)
    return [i for i in items if i not in drop]


def _group(data_source: Sequence[Datum], attr: str) -> Dict[int, List[int]]:
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, item in enumerate(data_source):
        groups[getattr(item, attr)].append(i)
    return dict(sorted(groups.items()))


class _EstimatedLength(Sampler):
    """A sampler whose epoch length depends on its draws: estimated once with a private seed."""

    def _iterate(self, g: torch.Generator) -> List[int]:
        raise NotImplementedError

    def _estimate_length(self) -> int:
        return len(self._iterate(torch.Generator().manual_seed(0)))

    def __iter__(self) -> Iterator[int]:
        return iter(self._iterate(_generator_from_global()))

    def __len__(self) -> int:
        return self.length


class RandomDomainSampler(_EstimatedLength):
    """Batches of ``n_domain`` random domains with ``batch_size // n_domain`` images each
    (``n_domain <= 0``: all domains); the epoch ends when a domain runs short."""

    def __init__(self, data_source: Sequence[Datum], batch_size: int, n_domain: int) -> None:
        name = type(self).__name__
        self.domain_dict = _group(data_source, "domain")
        self.domains = list(self.domain_dict)
        if n_domain is None or n_domain <= 0:
            n_domain = len(self.domains)
        if n_domain > len(self.domains) or batch_size % n_domain != 0:
            raise ValueError(
                f"{name} needs n_domain <= {len(self.domains)} (domains in the data) "
                f"dividing batch_size; got n_domain={n_domain}, batch_size={batch_size}"
            )
        self.n_domain = n_domain
        self.n_img_per_domain = batch_size // n_domain
        _check_group_sizes(self.domain_dict, self.n_img_per_domain, "domain", name)
        self.length = self._estimate_length()

    def _choose_domains(self, g: torch.Generator) -> List[int]:
        return _sample(self.domains, self.n_domain, g)

    def _iterate(self, g: torch.Generator) -> List[int]:
        remaining = {d: list(idxs) for d, idxs in self.domain_dict.items()}
        out: List[int] = []
        stop = False
        while not stop:  # the batch in progress is always completed
            for domain in self._choose_domains(g):
                picked = _sample(remaining[domain], self.n_img_per_domain, g)
                out.extend(picked)
                remaining[domain] = _without(remaining[domain], picked)
                stop = stop or len(remaining[domain]) < self.n_img_per_domain
        return out


class SeqDomainSampler(RandomDomainSampler):
    """Batches holding ``batch_size // n_domains`` random images of every domain, in domain order."""

    def __init__(self, data_source: Sequence[Datum], batch_size: int) -> None:
        super().__init__(data_source, batch_size, n_domain=0)

    def _choose_domains(self, g: torch.Generator) -> List[int]:
        return self.domains


class RandomClassSampler(_EstimatedLength):
    """Batches of ``batch_size // n_ins`` random classes with ``n_ins`` images each.

    A class with fewer than ``n_ins`` images is sampled with replacement.
    """

    def __init__(self, data_source: Sequence[Datum], batch_size: int, n_ins: int) -> None:
        if n_ins <= 0 or batch_size < n_ins:
            raise ValueError(
                f"RandomClassSampler needs 0 < n_ins <= batch_size; got n_ins={n_ins}, "
                f"batch_size={batch_size}"
            )
        self.index_dic = _group(data_source, "label")
        self.labels = list(self.index_dic)
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        if len(self.labels) < self.ncls_per_batch:
            raise ValueError(
                f"RandomClassSampler needs at least batch_size // n_ins = {self.ncls_per_batch} "
                f"classes; the data has {len(self.labels)}"
            )
        self.length = self._estimate_length()

    def _chunks(self, label: int, g: torch.Generator) -> List[List[int]]:
        idxs = self.index_dic[label]
        if len(idxs) < self.n_ins:
            idxs = [idxs[i] for i in torch.randint(len(idxs), (self.n_ins,), generator=g).tolist()]
        idxs = _sample(idxs, len(idxs), g)
        n_full = len(idxs) // self.n_ins
        return [idxs[k * self.n_ins:(k + 1) * self.n_ins] for k in range(n_full)]

    def _iterate(self, g: torch.Generator) -> List[int]:
        chunks = {label: self._chunks(label, g) for label in self.labels}
        available = list(self.labels)
        out: List[int] = []
        while len(available) >= self.ncls_per_batch:
            for label in _sample(available, self.ncls_per_batch, g):
                out.extend(chunks[label].pop(0))
                if not chunks[label]:
                    available.remove(label)
        return out


def _check_group_sizes(groups: Dict[int, List[int]], need: int, what: str, sampler: str) -> None:
    small = {k: len(v) for k, v in groups.items() if len(v) < need}
    if small:
        raise ValueError(f"{sampler} needs at least {need} images per {what}; got {small} ({what}: count)")


# ------------------------------------------------------------------ registry
# A builder takes (data_source, batch_size, n_domain, n_ins, cfg) and returns a Sampler.
@SAMPLER_REGISTRY.register(name="RandomSampler")
def _build_random(data_source, batch_size, n_domain, n_ins, cfg) -> Sampler:
    return RandomSampler(data_source)


@SAMPLER_REGISTRY.register(name="SequentialSampler")
def _build_sequential(data_source, batch_size, n_domain, n_ins, cfg) -> Sampler:
    return SequentialSampler(data_source)


@SAMPLER_REGISTRY.register(name="RandomDomainSampler")
def _build_random_domain(data_source, batch_size, n_domain, n_ins, cfg) -> Sampler:
    return RandomDomainSampler(data_source, batch_size, n_domain)


@SAMPLER_REGISTRY.register(name="SeqDomainSampler")
def _build_seq_domain(data_source, batch_size, n_domain, n_ins, cfg) -> Sampler:
    return SeqDomainSampler(data_source, batch_size)


@SAMPLER_REGISTRY.register(name="RandomClassSampler")
def _build_random_class(data_source, batch_size, n_domain, n_ins, cfg) -> Sampler:
    return RandomClassSampler(data_source, batch_size, n_ins)


def build_sampler(
    sampler_type: str,
    cfg=None,
    data_source: Optional[Sequence[Datum]] = None,
    batch_size: int = 32,
    n_domain: int = 0,
    n_ins: int = 16,
) -> Sampler:
    """The sampler registered as ``sampler_type`` over ``data_source`` (Dassl's signature)."""
    builder = SAMPLER_REGISTRY.get(sampler_type)
    if data_source is None:
        raise ValueError(f"build_sampler({sampler_type!r}) needs a data_source; got None")
    return builder(data_source, batch_size, n_domain, n_ins, cfg)
