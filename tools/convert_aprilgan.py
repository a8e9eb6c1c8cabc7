#!/usr/bin/env python
r"""Convert an APRIL-GAN checkpoint (ByChelsea/VAND-APRIL-GAN) into a dassl_lite checkpoint.

    python tools/convert_aprilgan.py --checkpoint exps/pretrained/mvtec_pretrained.pth \
        --output-dir output/aprilgan_released/mvtec

reads the file (``{'trainable_linearlayer': state_dict}``) with ``torch.load(weights_only=True)``
(no pickled code runs), checks one ``fc.<i>`` pair per block of ``--features-list`` and writes
``<output-dir>/LinearLayer/model.pth.tar-<epoch>`` (refused when that folder holds files already,
unless ``--force``). Evaluate it with ``tools/train.py --trainer APRILGAN --config-file
vit_large_14_518_train_mvtec --eval-only --model-dir <output-dir> --load-epoch <epoch>``.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.engine.anomaly_core import convert_and_write  # noqa: E402
from trainers.anomaly.aprilgan import APRILGAN, convert_upstream  # noqa: E402

logger = logging.getLogger("convert_aprilgan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="upstream epoch_<n>.pth file")
    parser.add_argument("--output-dir", required=True, help="where LinearLayer/ is written")
    parser.add_argument("--features-list", type=int, nargs="+", default=[6, 12, 18, 24],
                        help="the blocks it was trained with (TRAINER.APRILGAN.FEATURES_LIST)")
    parser.add_argument("--epoch", type=int, default=3, help="epoch number in the file name")
    parser.add_argument("--force", action="store_true",
                        help="write into an --output-dir whose LinearLayer/ holds files already")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    return convert_and_write(
        lambda: convert_upstream(args.checkpoint, args.features_list), args.output_dir,
        APRILGAN.model_name, args.epoch, f"APRIL-GAN release {args.checkpoint} (converted)",
        args.force, lambda state: f"{len(state) // 2} linear layers "
                                  f"{list(state['fc.0.weight'].shape)}", logger)


if __name__ == "__main__":
    sys.exit(main())
