#!/usr/bin/env python
r"""Convert an AnomalyCLIP checkpoint (zqhang/AnomalyCLIP) into a dassl_lite checkpoint.

    python tools/convert_anomalyclip.py \
        --checkpoint checkpoints/9_12_4_multiscale_visa/epoch_15.pth \
        --output-dir output/anomalyclip_released/mvtec

reads the file (``{'prompt_learner': state_dict}``) with ``torch.load(weights_only=True)`` (no
pickled code runs), checks ``ctx_pos`` / ``ctx_neg`` ([1, 1, --n_ctx, width]) and the
``--depth`` - 1 deep prompts ``compound_prompts_text.<k>`` ([--t_n_ctx, width]) against
upstream's flags, keeps those (upstream's token buffers and its unused
``compound_prompt_projections`` are left out) and writes
``<output-dir>/prompt_learner/model.pth.tar-<epoch>`` (refused when that folder holds files
already, unless ``--force``). Evaluate it with ``tools/train.py --trainer AnomalyCLIP
--config-file configs/trainers/AnomalyCLIP/9_12_4_multiscale_visa.yaml --eval-only --model-dir
<output-dir> --load-epoch <epoch>``.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.engine.anomaly_core import convert_and_write  # noqa: E402
from trainers.anomaly.anomalyclip import AnomalyCLIP, convert_upstream  # noqa: E402

logger = logging.getLogger("convert_anomalyclip")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="upstream epoch_<n>.pth file")
    parser.add_argument("--output-dir", required=True, help="where prompt_learner/ is written")
    parser.add_argument("--n_ctx", type=int, default=12, help="TRAINER.ANOMALYCLIP.N_CTX")
    parser.add_argument("--depth", type=int, default=9, help="TRAINER.ANOMALYCLIP.DEPTH")
    parser.add_argument("--t_n_ctx", type=int, default=4, help="TRAINER.ANOMALYCLIP.T_N_CTX")
    parser.add_argument("--epoch", type=int, default=15, help="epoch number in the file name")
    parser.add_argument("--force", action="store_true",
                        help="write into an --output-dir whose prompt_learner/ holds files already")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    return convert_and_write(
        lambda: convert_upstream(args.checkpoint, args.n_ctx, args.depth, args.t_n_ctx),
        args.output_dir, AnomalyCLIP.model_name, args.epoch,
        f"AnomalyCLIP release {args.checkpoint} (converted)", args.force,
        lambda state: f"2 x {args.n_ctx} context vectors and {len(state) - 2} deep prompts "
                      f"of {args.t_n_ctx}, width {state['ctx_pos'].shape[-1]}", logger)


if __name__ == "__main__":
    sys.exit(main())
