"""Linear-probe CLIP as CoOp's ``lpclip`` runs it (Radford et al. 2021; Zhou et al. 2022).

The frozen image encoder's features (``clip.visual`` output, not normalised; training images with
the test transform) are extracted once and kept in memory; scikit-learn's L2 logistic
regression (lbfgs, ``MAX_ITER`` 1000) is fitted on them. The inverse regularisation strength C
is chosen on the val split as ``lpclip/linear_probe.py`` does: try ``C_INIT``, take the best
(first best on ties), then ``NUM_STEP`` rounds that fit the two ends of a range starting at
[C/10, 10 C], keep the better end (the left one on ties) and halve the range in log10 towards
it; the classifier of the last round is the probe.

Unseen classes: lpclip has no base-to-novel protocol; a probe has no weights for classes it was
not fitted on. Evaluated on classes that are all unseen (base-to-novel's ``test_new``) it falls
back to zero-shot CLIP with the dataset's hand-written prompt, with a warning; on a mix of seen
and unseen classes it raises an error (the two kinds of logits are not comparable).
"""
from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from yacs.config import CfgNode as CN

from dassl_lite.clip import CLIP
from dassl_lite.config import register_config_extender
from dassl_lite.errors import DasslLiteError
from dassl_lite.registry import TRAINER_REGISTRY

from .fitted import ClassIndex, FittedCLIPTrainer, extract_features
from .zsclip import ZeroshotCLIPModel

logger = logging.getLogger(__name__)


@register_config_extender("LinearProbeCLIP")
def add_linear_probe_config(cfg: CN) -> None:
    """``TRAINER.LINEAR_PROBE``: lpclip's search settings."""
    if "LINEAR_PROBE" not in cfg.TRAINER:  # DePT keeps its head's keys here too (upstream's)
        cfg.TRAINER.LINEAR_PROBE = CN()
    cfg.TRAINER.LINEAR_PROBE.C_INIT = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]  # first C values
    cfg.TRAINER.LINEAR_PROBE.NUM_STEP = 8  # refinement rounds (lpclip --num_step)
    cfg.TRAINER.LINEAR_PROBE.MAX_ITER = 1000  # lbfgs iterations per fit
    cfg.TRAINER.LINEAR_PROBE.PREC = "fp16"  # fp16, fp32, amp, bf16 (the feature extractor)


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression  # optional dependency

    return LogisticRegression(C=c, max_iter=max_iter).fit(x, y)


def _accuracy(clf, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x) == y).mean())


def search_c(train: Tuple[np.ndarray, np.ndarray], val: Tuple[np.ndarray, np.ndarray],
             c_init: Sequence[float], num_step: int, max_iter: int = 1000):
    """lpclip's C search; returns (classifier, C, val accuracy in [0, 1])."""
    accs = [_accuracy(_fit(*train, c, max_iter), *val) for c in c_init]
    logger.info("C search, first pass: " + ", ".join(f"C={c:g}: {100 * a:.2f}%"
                                                     for c, a in zip(c_init, accs)))
    peak = c_init[int(np.argmax(accs))]
    left, right = 0.1 * peak, 10.0 * peak
    if num_step < 1:
        return _fit(*train, peak, max_iter), peak, max(accs)
    for _ in range(num_step):
        clf_l, clf_r = _fit(*train, left, max_iter), _fit(*train, right, max_iter)
        acc_l, acc_r = _accuracy(clf_l, *val), _accuracy(clf_r, *val)
        mid = 0.5 * (np.log10(left) + np.log10(right))
        if acc_l < acc_r:
            best = (clf_r, right, acc_r)
            left = 10 ** mid
        else:
            best = (clf_l, left, acc_l)
            right = 10 ** mid
    return best


def probe_weights(clf, n_classes: int, width: int) -> Tuple[Tensor, Tensor]:
    """A fitted scikit-learn classifier as (weight [n_classes, width], bias [n_classes])."""
    if list(clf.classes_) != list(range(n_classes)):
        raise DasslLiteError(f"the probe was fitted on labels {list(clf.classes_)}; expected "
                             f"every label 0..{n_classes - 1} in the training data")
    coef, bias = np.asarray(clf.coef_), np.asarray(clf.intercept_)
    if n_classes == 2:  # binary: one logit for class 1; class 0's is 0
        coef, bias = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    assert coef.shape == (n_classes, width), f"unexpected coef shape {coef.shape}"
    return torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)


class LinearProbeHead(nn.Module):
    """The fitted probe: weight [K, E], bias [K], the K class names, the chosen C."""

    feature_width_keys = ("weight",)

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(0, width))
        self.register_buffer("bias", torch.zeros(0))
        self.register_buffer("classnames", ClassIndex.encode([]))
        self.register_buffer("c", torch.tensor(0.0))


class LinearProbeModel(ZeroshotCLIPModel):
    """CLIP image features -> the probe (zero-shot CLIP for classes the probe never saw)."""

    def __init__(self, clip_model: CLIP, classnames: Sequence[str], templates: Sequence[str]):
        super().__init__(clip_model, classnames, templates)
        self.classnames = list(classnames)
        self.fitted = LinearProbeHead(clip_model.embed_dim)

    def probe_rows(self) -> Tensor:
        """Row of the probe for each current class; empty when no class is known."""
        fitted = ClassIndex.decode(self.fitted.classnames)
        where = {name: i for i, name in enumerate(fitted)}
        unknown = [n for n in self.classnames if n not in where]
        if len(unknown) == len(self.classnames):
            return torch.zeros(0, dtype=torch.long)
        if unknown:
            raise DasslLiteError(
                f"The linear probe was fitted on {len(fitted)} classes; {len(unknown)} of the "
                f"{len(self.classnames)} classes evaluated are not among them (e.g. "
                f"{unknown[:3]}). A probe has no weights for unseen classes; evaluate on the "
                f"fitted classes, or on unseen classes only (then zero-shot CLIP is used)")
        return torch.tensor([where[n] for n in self.classnames])

    def forward(self, images: Tensor) -> Tensor:
        rows = self.probe_rows()
        if rows.numel() == 0:
            return self.logits(self.encode_image(images), self.fixed_text_features)
        features = self.clip.visual(images).float()
        rows = rows.to(features.device)
        return features @ self.fitted.weight[rows].t() + self.fitted.bias[rows]


@TRAINER_REGISTRY.register()
class LinearProbeCLIP(FittedCLIPTrainer):
    """Logistic regression on frozen CLIP image features; section ``TRAINER.LINEAR_PROBE``."""

    model_name = "linear_probe"
    precision_key = "TRAINER.LINEAR_PROBE.PREC"

    def build_prompted_clip(self, clip_model: CLIP, classnames: List[str]) -> LinearProbeModel:
        return LinearProbeModel(clip_model, classnames, self.templates()).to(self.device)

    def fit(self) -> None:
        ds, tfm = self.dm.dataset, self.dm.tfm_test
        if not ds.val:
            raise DasslLiteError(f"LinearProbeCLIP chooses C on the val split, but dataset "
                                 f"{self.cfg.DATASET.NAME!r} has none")
        train = [t.cpu().numpy() for t in extract_features(self, ds.train_x, tfm, normalize=False)]
        val = [t.cpu().numpy() for t in extract_features(self, ds.val, tfm, normalize=False)]
        c = self.cfg.TRAINER.LINEAR_PROBE
        clf, c_value, acc = search_c(train, val, list(c.C_INIT), c.NUM_STEP, c.MAX_ITER)
        logger.info(f"Linear probe: C={c_value:.4g} (val accuracy {100 * acc:.2f}%)")
        weight, bias = probe_weights(clf, len(ds.classnames), train[0].shape[1])
        head = self.unwrapped_model.fitted
        head.weight, head.bias = weight.to(self.device), bias.to(self.device)
        head.classnames = ClassIndex.encode(ds.classnames).to(self.device)
        head.c.fill_(c_value)

    def before_test(self) -> None:
        if self.unwrapped_model.probe_rows().numel() == 0:
            logger.warning("None of the evaluated classes was seen by the linear probe: "
                           "evaluating zero-shot CLIP (the dataset's hand-written prompt)")
