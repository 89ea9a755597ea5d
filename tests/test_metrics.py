"""Metrics of evaluation/metrics.py against scikit-learn, and the local `evaluate` modules loaded offline."""

import math
import os
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from sslam.evaluation import metrics

SEEDS = (0, 1, 2, 3)


def random_multilabel(seed: int, n: int = 64, c: int = 7, empty_class: int | None = 3):
    """(N, C) scores and binary targets, optionally with one class that has no positives."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.int64)
    targets[0, :] = 1  # every class has a positive ...
    if empty_class is not None:
        targets[:, empty_class] = 0  # ... except this one
    scores = rng.random((n, c)) + 0.5 * targets
    return scores, targets


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(50, 5))
    references = rng.integers(0, 5, size=50)
    expected = accuracy_score(references, logits.argmax(1))
    assert metrics.accuracy(logits, references) == pytest.approx(expected)
    assert metrics.accuracy(logits.argmax(1), np.eye(5)[references]) == pytest.approx(expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_map_is_nanmean_of_per_class_sklearn_ap(seed):
    scores, targets = random_multilabel(seed)
    per_class = [average_precision_score(targets[:, k], scores[:, k]) for k in range(7) if targets[:, k].any()]
    ap = metrics.average_precision_per_class(scores, targets)
    assert np.isnan(ap[3]) and np.isfinite(np.delete(ap, 3)).all()
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(np.mean(per_class))


@pytest.mark.parametrize("seed", SEEDS)
def test_map_and_mauc_equal_sklearn_macro_when_every_class_has_positives(seed):
    scores, targets = random_multilabel(seed, empty_class=None)
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(
        average_precision_score(targets, scores, average="macro")
    )
    assert metrics.mean_roc_auc(scores, targets) == pytest.approx(roc_auc_score(targets, scores, average="macro"))


@pytest.mark.parametrize("seed", SEEDS)
def test_mauc_skips_classes_without_both_labels(seed):
    scores, targets = random_multilabel(seed)
    targets[:, 5] = 1  # a class without negatives
    valid = [k for k in range(7) if k not in (3, 5)]
    expected = np.mean([roc_auc_score(targets[:, k], scores[:, k]) for k in valid])
    assert metrics.mean_roc_auc(scores, targets) == pytest.approx(expected)


def test_multilabel_metrics_raise_no_warnings_even_without_any_positive():
    scores, targets = random_multilabel(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.multilabel_metrics(scores, targets)
        assert math.isnan(metrics.mean_average_precision(scores, np.zeros_like(targets)))
    assert set(result) == {"mAP", "mAUC", "d_prime"}
    assert result["d_prime"] == pytest.approx(math.sqrt(2) * norm.ppf(result["mAUC"]))


def test_d_prime_values_and_normaldist_fallback(monkeypatch):
    assert metrics.d_prime(0.5) == pytest.approx(0.0)
    assert metrics.d_prime(norm.cdf(1 / math.sqrt(2))) == pytest.approx(1.0)
    assert math.isnan(metrics.d_prime(math.nan))
    assert metrics.d_prime(1.0) == math.inf
    scipy_value = metrics.d_prime(0.8)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `from scipy.stats import norm` now raises ImportError
    assert metrics.d_prime(0.8) == pytest.approx(scipy_value, rel=1e-9)
    assert metrics.d_prime(0.0) == -math.inf
    with pytest.raises(ValueError, match="auc"):
        metrics.d_prime(1.5)


@pytest.mark.parametrize(
    "scores, targets, match",
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), "shape"),
        (np.zeros((4, 3)), np.full((4, 3), 0.5), "binary"),
        (np.full((4, 3), np.nan), np.zeros((4, 3)), "nan"),
    ],
)
def test_multilabel_input_errors(scores, targets, match):
    with pytest.raises(ValueError, match=match):
        metrics.mean_average_precision(scores, targets)


def test_accuracy_input_errors():
    with pytest.raises(ValueError, match="examples"):
        metrics.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="integer"):
        metrics.accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.load_metric("accuracy")


@pytest.fixture(scope="module")
def evaluate_modules():
    """Both local modules, loaded once with the Hub switched off (importing `evaluate` takes seconds)."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update({key: "1" for key in saved})
    try:
        yield {name: metrics.load_metric(name) for name in metrics.METRIC_NAMES}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_evaluate_multilabel_module_equals_numpy(evaluate_modules):
    scores, targets = random_multilabel(5)
    scores = scores.astype(np.float32)  # the module's features are float32
    result = evaluate_modules["sslam_multilabel"].compute(predictions=scores, references=targets)
    expected = metrics.multilabel_metrics(scores, targets)
    assert result == pytest.approx(expected)


def test_evaluate_accuracy_module_equals_numpy_with_batches(evaluate_modules):
    rng = np.random.default_rng(7)
    predictions, references = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    module = evaluate_modules["sslam_accuracy"]
    module.add_batch(predictions=predictions[:25], references=references[:25])
    module.add_batch(predictions=predictions[25:], references=references[25:])
    assert module.compute() == {"accuracy": pytest.approx(metrics.accuracy(predictions, references))}
