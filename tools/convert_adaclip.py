#!/usr/bin/env python
r"""Convert an AdaCLIP release (caoyunkang/AdaCLIP ``weights/pretrained_*.pth``) into a dassl_lite
checkpoint.

    python tools/convert_adaclip.py --checkpoint weights/pretrained_mvtec_colondb.pth \
        --output-dir released/adaclip_mvtec_colondb

reads the file (a flat dict ``clip_model.<piece>.<...>`` -> tensor, as ``AdaCLIP_Trainer.save``
writes it) with ``torch.load(weights_only=True)`` (no pickled code runs), checks every key and
shape against AdaCLIP's trainable layout for the given prompting settings and backbone widths
(defaults: upstream's ViT-L-14-336 run) and writes ``<output-dir>/AdaCLIP/model.pth.tar-<epoch>``
(refused when that folder holds files already, unless ``--force``). Evaluate it with
``tools/train.py --trainer AdaCLIP --config-file pretrained_mvtec_colondb --eval-only
--model-dir <output-dir> --load-epoch <epoch>``.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.engine.anomaly_core import convert_and_write  # noqa: E402
from trainers.anomaly.adaclip import AdaCLIP, convert_upstream  # noqa: E402
from trainers.anomaly.adaclip_model import AdaCLIPLearner  # noqa: E402

logger = logging.getLogger("convert_adaclip")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="upstream pretrained_*.pth file")
    parser.add_argument("--output-dir", required=True, help="where AdaCLIP/ is written")
    parser.add_argument("--prompting-depth", type=int, default=4)
    parser.add_argument("--prompting-length", type=int, default=5)
    parser.add_argument("--prompting-type", default="SD", choices=["", "S", "D", "SD"])
    parser.add_argument("--prompting-branch", default="VL", choices=["", "V", "L", "VL"])
    parser.add_argument("--num-features", type=int, default=4,
                        help="number of blocks in FEATURES_LIST (upstream: 4)")
    parser.add_argument("--vision-width", type=int, default=1024, help="ViT-L-14-336: 1024")
    parser.add_argument("--text-width", type=int, default=768, help="ViT-L-14-336: 768")
    parser.add_argument("--embed-dim", type=int, default=768, help="ViT-L-14-336: 768")
    parser.add_argument("--epoch", type=int, default=5, help="epoch number in the file name")
    parser.add_argument("--force", action="store_true",
                        help="write into an --output-dir whose AdaCLIP/ holds files already")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    learner = AdaCLIPLearner(args.vision_width, args.text_width, args.embed_dim, args.num_features,
                             args.prompting_length, args.prompting_depth, args.prompting_branch,
                             args.prompting_type)
    expected = {k: v.shape for k, v in learner.state_dict().items()}
    return convert_and_write(
        lambda: convert_upstream(args.checkpoint, expected), args.output_dir, AdaCLIP.model_name,
        args.epoch, f"AdaCLIP release {args.checkpoint} (converted)", args.force,
        lambda state: f"{len(state)} tensors, {sum(v.numel() for v in state.values()):,} values",
        logger)


if __name__ == "__main__":
    sys.exit(main())
