#!/usr/bin/env python
r"""Convert AF-CLIP's released weights into a dassl_lite checkpoint (explicit, opt-in).

    python tools/convert_afclip.py --weight-dir AF-CLIP/weight --dataset mvtec \
        --output-dir output/afclip_released/mvtec

reads ``<weight-dir>/mvtec_prompt.pt`` (a pickled nn.Parameter) and ``mvtec_adaptor.pt`` (a
pickled whole ``clip.adaptor.Adaptor``) with ``torch.load(weights_only=True)`` and an allow-list
of inert record classes (no pickled code runs; see trainers/anomaly/afclip_upstream.py), and writes
``<output-dir>/AFCLIPLearner/model.pth.tar-<epoch>`` (refused when that folder holds files
already, unless ``--force``). Evaluate it with
``tools/train.py --trainer AFCLIP --eval-only --model-dir <output-dir> --load-epoch <epoch>``
(or ``tools/anomaly.py ... --model-dir``). ``--model-dir`` itself never reads upstream pickles.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.engine.anomaly_core import convert_and_write  # noqa: E402
from trainers.anomaly.afclip_upstream import convert_upstream  # noqa: E402

MODEL_NAME = "AFCLIPLearner"  # the AFCLIP trainer's checkpoint folder
logger = logging.getLogger("convert_afclip")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weight-dir", required=True, help="folder with {dataset}_*.pt files")
    parser.add_argument("--dataset", required=True, help="file prefix, e.g. mvtec or visa")
    parser.add_argument("--output-dir", required=True, help="where AFCLIPLearner/ is written")
    parser.add_argument("--epoch", type=int, default=2, help="epoch number in the file name "
                        "(upstream trains 2 epochs)")
    parser.add_argument("--force", action="store_true",
                        help="write into an --output-dir whose AFCLIPLearner/ holds files already")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    return convert_and_write(
        lambda: convert_upstream(args.weight_dir, args.dataset), args.output_dir, MODEL_NAME,
        args.epoch, f"AF-CLIP release {args.dataset} (converted)", args.force,
        lambda state: ", ".join(f"{k} {list(v.shape)}" for k, v in state.items()), logger)


if __name__ == "__main__":
    sys.exit(main())
