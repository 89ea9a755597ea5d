"""Classification metrics used to evaluate SSLAM/EAT models.

All metrics return fractions in [0, 1] (multiply by 100 for the numbers quoted in the papers).

* ``accuracy``: argmax / class-id match rate (ESC-50, Speech Commands).
* ``mean_average_precision``: macro mAP exactly as the original EAT/SSLAM evaluation computes it: one
  ``sklearn.metrics.average_precision_score`` per class on the scores, then ``np.nanmean`` over classes. A class
  without positives has an undefined AP (``nan`` in the scikit-learn versions the original used) and is skipped by
  the mean; newer scikit-learn versions return 0 with a warning instead, so such classes are set to ``nan`` here
  explicitly, without calling scikit-learn.
* ``mean_roc_auc``: macro ROC AUC, same per-class scheme; classes with only one label value are skipped.
* ``d_prime``: ``sqrt(2) * Phi^-1(AUC)``, the AudioSet convention for reporting AUC as a sensitivity index.

The same functions back the local ``evaluate`` modules under ``evaluation/evaluate_metrics/``; ``load_metric`` loads
them offline.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

if TYPE_CHECKING:
    import evaluate

METRIC_MODULES_DIR = Path(__file__).resolve().parent / "evaluate_metrics"
METRIC_NAMES = ("sslam_accuracy", "sslam_multilabel")
SSLAM_CITATION = """\
@inproceedings{alex2025sslam,
  title = {{SSLAM}: Enhancing Self-Supervised Models with Audio Mixtures for Polyphonic Soundscapes},
  author = {Alex, Tony and Atito, Sara and Mustafa, Armin and Awais, Muhammad and Jackson, Philip J. B.},
  booktitle = {The Thirteenth International Conference on Learning Representations (ICLR)},
  url = {https://openreview.net/forum?id=odU59TxdiB},
  year = {2025}
}
"""
"""BibTeX of the SSLAM paper, the citation of the local `evaluate` metric modules."""


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    """Fraction of examples whose predicted class equals the reference class.

    Args:
        predictions: (N,) integer class ids, or (N, C) scores/logits (argmax is taken).
        references: (N,) integer class ids, or (N, C) one-hot / soft targets (argmax is taken).
    """
    predicted = _class_ids(predictions, "predictions")
    target = _class_ids(references, "references")
    if predicted.shape != target.shape:
        raise ValueError(f"predictions and references hold {predicted.shape[0]} and {target.shape[0]} examples")
    if predicted.size == 0:
        raise ValueError("accuracy needs at least one example")
    return float(np.mean(predicted == target))


def average_precision_per_class(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class average precision, ``nan`` for classes without positives.

    Args:
        scores: (N, C) scores (sigmoid outputs or logits; AP only depends on their order).
        targets: (N, C) binary multi-hot targets.

    Returns:
        (C,) float64 array.
    """
    scores, targets = _check_multilabel(scores, targets)
    ap = np.full(targets.shape[1], np.nan)
    for k in np.flatnonzero(targets.any(axis=0)):
        ap[k] = average_precision_score(targets[:, k], scores[:, k])
    return ap


def roc_auc_per_class(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class ROC AUC, ``nan`` for classes whose targets are all 0 or all 1.

    Args:
        scores: (N, C) scores.
        targets: (N, C) binary multi-hot targets.

    Returns:
        (C,) float64 array.
    """
    scores, targets = _check_multilabel(scores, targets)
    auc = np.full(targets.shape[1], np.nan)
    has_both = targets.any(axis=0) & ~targets.all(axis=0)
    for k in np.flatnonzero(has_both):
        auc[k] = roc_auc_score(targets[:, k], scores[:, k])
    return auc


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Macro mAP: nan-mean over classes of the per-class AP (classes without positives are skipped)."""
    return _nanmean(average_precision_per_class(scores, targets))


def mean_roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Macro ROC AUC: nan-mean over classes of the per-class AUC."""
    return _nanmean(roc_auc_per_class(scores, targets))


def d_prime(auc: float) -> float:
    """Sensitivity index of an AUC: ``sqrt(2) * Phi^-1(auc)`` (``nan`` stays ``nan``, 0/1 map to -inf/+inf)."""
    if math.isnan(auc):
        return math.nan
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"auc must lie in [0, 1], got {auc}")
    return math.sqrt(2.0) * _normal_ppf(auc)


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """mAP, mAUC and d-prime (of the mAUC) of (N, C) scores against (N, C) binary targets."""
    mauc = mean_roc_auc(scores, targets)
    return {"mAP": mean_average_precision(scores, targets), "mAUC": mauc, "d_prime": d_prime(mauc)}


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of the local ``evaluate`` modules (``sslam_accuracy`` or ``sslam_multilabel``) offline.

    ``evaluate`` is imported here, not at module import: the import alone takes several seconds.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    import evaluate

    return evaluate.load(str(METRIC_MODULES_DIR / name))


def _class_ids(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 2:
        return values.argmax(axis=1)
    if values.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, C), got {values.shape}")
    if not np.issubdtype(values.dtype, np.integer) and not np.all(values == np.round(values)):
        raise ValueError(f"{name} of shape (N,) must hold integer class ids")
    return values.astype(np.int64)


def _check_multilabel(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores and targets must both have shape (N, C), got {scores.shape} and {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be binary (0/1) multi-hot labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain nan or inf")
    return scores, targets.astype(bool)


def _nanmean(values: np.ndarray) -> float:
    """Mean ignoring nan; ``nan`` (without a RuntimeWarning) when every value is nan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def _normal_ppf(p: float) -> float:
    try:
        from scipy.stats import norm
    except ImportError:
        from statistics import NormalDist

        if p in (0.0, 1.0):
            return math.copysign(math.inf, p - 0.5)
        return NormalDist().inv_cdf(p)
    return float(norm.ppf(p))
