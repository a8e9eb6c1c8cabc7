"""DatasetBase: Dassl's dataset container, with class names taken from every split."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import splits
from .datum import Datum


class DatasetBase:
    """Holds the splits of one dataset (Dassl signature, so upstream dataset classes port as is).

    ``num_classes`` is max label + 1 and ``lab2cname``/``classnames`` come from train_x, val and
    test together (Dassl looks at train_x only, which hides classes missing from a few-shot
    train set). Missing splits are empty lists.
    """

    task = "classification"  # task family ("classification" or "anomaly"); trainers check it
    dataset_dir = ""  # folder of the dataset under DATASET.ROOT
    domains: List[str] = []  # names of all domains (domain adaptation / generalization)

    def __init__(
        self,
        train_x: Optional[List[Datum]] = None,
        train_u: Optional[List[Datum]] = None,
        val: Optional[List[Datum]] = None,
        test: Optional[List[Datum]] = None,
    ) -> None:
        self._train_x = train_x if train_x is not None else []
        self._train_u = train_u if train_u is not None else []
        self._val = val if val is not None else []
        self._test = test if test is not None else []
        labelled = (self._train_x, self._val, self._test)
        self._num_classes = self.get_num_classes(*labelled)
        self._lab2cname, self._classnames = self.get_lab2cname(*labelled)

    @property
    def train_x(self) -> List[Datum]:
        return self._train_x

    @property
    def train_u(self) -> List[Datum]:
        return self._train_u

    @property
    def val(self) -> List[Datum]:
        return self._val

    @property
    def test(self) -> List[Datum]:
        return self._test

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def lab2cname(self) -> Dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> List[str]:
        return self._classnames

    @staticmethod
    def get_num_classes(*data_sources: Iterable[Datum]) -> int:
        """Max label + 1 over all given data sources (0 when they are empty)."""
        labels = [item.label for source in data_sources for item in source]
        return max(labels) + 1 if labels else 0

    @staticmethod
    def get_lab2cname(*data_sources: Iterable[Datum]) -> Tuple[Dict[int, str], List[str]]:
        """``({label: classname}, classnames sorted by label)`` over all given data sources.

        A label seen with two different class names is an error (Dassl would pick one at random).
        """
        mapping: Dict[int, str] = {}
        for source in data_sources:
            for item in source:
                known = mapping.setdefault(item.label, item.classname)
                if known != item.classname:
                    raise ValueError(
                        f"Label {item.label} has two class names, {known!r} and "
                        f"{item.classname!r} (at {item.impath}); each label needs one name"
                    )
        labels = sorted(mapping)
        return {label: mapping[label] for label in labels}, [mapping[label] for label in labels]

    def check_input_domains(self, source_domains: Sequence[str], target_domains: Sequence[str]) -> None:
        """Raise ValueError unless both domain lists are non-empty and known to ``self.domains``."""
        for what, given in (("source", source_domains), ("target", target_domains)):
            if not given:
                raise ValueError(f"DATASET.{what.upper()}_DOMAINS is empty; choose from {self.domains}")
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains: Sequence[str]) -> None:
        """Raise ValueError naming the first domain that is not in ``self.domains``."""
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must be one of {self.domains}; got {domain!r}")

    # Upstream helpers, shared with every dataset class (see dassl_lite.data.splits).
    read_split = staticmethod(splits.read_split)
    save_split = staticmethod(splits.save_split)
    read_and_split_data = staticmethod(splits.read_and_split_data)
    split_trainval = staticmethod(splits.split_trainval)
    generate_fewshot_dataset = staticmethod(splits.generate_fewshot_dataset)
    subsample_classes = staticmethod(splits.subsample_classes)
    split_dataset_by_label = staticmethod(splits.split_dataset_by_label)
    split_dataset_by_domain = staticmethod(splits.split_dataset_by_domain)
