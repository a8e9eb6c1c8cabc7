"""UCF101: 101 human actions, one middle frame per video (``ucf101/``)."""
from __future__ import annotations

import os
import re
from typing import Dict, List

from dassl_lite.data import Datum
from dassl_lite.registry import DATASET_REGISTRY

from .benchmark import BenchmarkDataset

LISTS = "ucfTrainTestlist"  # the official split lists (UCF101TrainTestSplits-RecognitionTask.zip)


def action_name(action: str) -> str:
    """Upstream's class name (and frame folder) of an action: ``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``."""
    return "_".join(re.findall(r"[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    """``UCF-101-midframes/<Action_Name>/<video>.jpg``; the split is built from the first
    official split (``ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt``; val: 20% of
    training per class)."""

    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    split_file_id = "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"
    raw_annotations = tuple(f"{LISTS}/{name}.txt" for name in ("classInd", "trainlist01", "testlist01"))
    num_classes_expected = 101
    layout = ("ucf101/UCF-101-midframes/<Action_Name>/*.jpg + ucf101/split_zhou_UCF101.json "
              f"(or ucf101/{LISTS}/{{classInd,trainlist01,testlist01}}.txt to build it)")
    instructions = "see DATASETS.md#ucf101"

    def build_split(self):
        label_of = {}
        for number, line in self.read_lines(f"{LISTS}/classInd.txt"):
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise self.bad_line(f"{LISTS}/classInd.txt", number, line, "'<class id> <Action>'")
            label_of[parts[1]] = int(parts[0]) - 1
        trainval = self.read_list(f"{LISTS}/trainlist01.txt", label_of)
        test = self.read_list(f"{LISTS}/testlist01.txt", label_of)
        train, val = self.carve_val(trainval)
        return train, val, test

    def read_list(self, relpath: str, label_of: Dict[str, int]) -> List[Datum]:
        """Items of a split list: lines ``<Action>/<video>.avi[ <class id>]``."""
        items = []
        for number, line in self.read_lines(relpath):
            action, _, video = line.split()[0].partition("/")
            if action not in label_of or not video:
                raise self.bad_line(relpath, number, line, "'<Action from classInd.txt>/<video>.avi'")
            name = action_name(action)
            frame = os.path.splitext(video)[0] + ".jpg"
            items.append(Datum(impath=os.path.join(self.image_dir, name, frame),
                               label=label_of[action], classname=name))
        return items
