"""Linear probing of a frozen SSLAM encoder, and of a log-mel baseline through the same classifier.

Recipe: embed every clip once with the frozen encoder (``model.eval()``, ``torch.no_grad()``, batched), pool the
last hidden state (CLS token or mean of the patch tokens), standardise the features on the training split and fit
a seeded logistic regression: multinomial for single-label data, one-vs-rest for multi-label data. Returns the
metrics of `evaluation.metrics` on the evaluation split.

Data is either a `datasets.Dataset` with an ``audio`` column and a ``label`` (single-label) or ``labels``
(multi-label) column (see `evaluation.datasets_io`), or a ``(waveforms, targets)`` tuple: a sequence of 1-D 16 kHz
waveforms with (N,) class ids or (N, C) multi-hot targets.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sslam.evaluation.datasets_io import SAMPLING_RATE, label_targets, load_waveform
from sslam.evaluation.metrics import accuracy, multilabel_metrics
from sslam.modeling_sslam.embedding import extract_embeddings as embed

Pooling = Literal["cls", "mean"]
AudioData = Union[Dataset, tuple[Sequence[np.ndarray], np.ndarray]]
LOGMEL_BASELINE = "logmel"


class EmbeddingCache:
    """Feature matrices keyed by string, kept in memory and, with ``directory``, mirrored to ``<key>.npy`` files."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self._store: dict[str, np.ndarray] = {}

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached (N, D) matrix for ``key``, computing (and storing) it on a miss."""
        if key in self._store:
            return self._store[key]
        path = self.directory / f"{key}.npy" if self.directory is not None else None
        if path is not None and path.exists():
            features = np.load(path, allow_pickle=False)
        else:
            features = compute()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, features, allow_pickle=False)
        self._store[key] = features
        return features


def run_linear_probe(
    train: AudioData,
    test: AudioData,
    feature_extractor,
    *,
    model: torch.nn.Module | None = None,
    pooling: Pooling = "cls",
    batch_size: int = 16,
    C: float = 1.0,
    max_iter: int = 2000,
    seed: int = 0,
    cache: EmbeddingCache | None = None,
) -> dict[str, float]:
    """Fit a linear probe on ``train`` and score it on ``test``.

    Args:
        feature_extractor: an `SSLAMFeatureExtractor` (its ``target_length`` sets the clip length the model sees).
        model: an `SSLAMModel` (or a model whose ``base_model`` is one); ``None`` probes the log-mel baseline.
        pooling: ``"cls"`` or ``"mean"`` (mean of the real patch tokens).
        C: inverse L2 regularisation strength of the logistic regression.
        cache: reuse embeddings across calls (e.g. to sweep ``C``) and optionally across processes.

    Returns:
        ``{"accuracy"}`` for single-label data, ``{"mAP", "mAUC", "d_prime"}`` for multi-label data (fractions).
    """
    train_targets, test_targets = _targets(train), _targets(test)
    if train_targets.ndim != test_targets.ndim or train_targets.shape[1:] != test_targets.shape[1:]:
        raise ValueError(f"train and test targets differ in kind: {train_targets.shape} vs {test_targets.shape}")
    train_features, test_features = (
        compute_features(data, feature_extractor, model=model, pooling=pooling, batch_size=batch_size, cache=cache)
        for data in (train, test)
    )
    probe = fit_linear_probe(train_features, train_targets, C=C, max_iter=max_iter, seed=seed)
    return score_linear_probe(probe, test_features, test_targets)


def compute_features(
    data: AudioData,
    feature_extractor,
    *,
    model: torch.nn.Module | None = None,
    pooling: Pooling = "cls",
    batch_size: int = 16,
    cache: EmbeddingCache | None = None,
) -> np.ndarray:
    """(N, D) probe features: pooled encoder embeddings, or the log-mel baseline statistics when ``model`` is None."""
    if model is None:
        compute = partial(logmel_statistics, data, feature_extractor, batch_size=batch_size)
        identity = [LOGMEL_BASELINE]
    else:
        compute = partial(extract_embeddings, model, data, feature_extractor, pooling=pooling, batch_size=batch_size)
        identity = [model_fingerprint(model), pooling]
    if cache is None:
        return compute()
    key = _digest([*identity, feature_extractor.to_json_string(), data_fingerprint(data)])
    return cache.get_or_compute(key, compute)


def extract_embeddings(
    model: torch.nn.Module,
    data: AudioData,
    feature_extractor,
    *,
    pooling: Pooling = "cls",
    batch_size: int = 16,
) -> np.ndarray:
    """Pooled last-layer embeddings of a frozen encoder (`modeling_sslam.embedding.extract_embeddings` per batch).

    Returns:
        (N, D) float32 array.
    """
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    encoder = getattr(model, "base_model", model)
    was_training = encoder.training
    encoder.eval()
    try:
        embeddings = [
            embed(encoder, feature_extractor, waveforms, sampling_rate=SAMPLING_RATE, pooling=pooling,
                  batch_size=batch_size)
            for waveforms in iter_waveform_batches(data, batch_size)
        ]
    finally:
        encoder.train(was_training)
    return np.concatenate(embeddings).astype(np.float32)


def logmel_statistics(data: AudioData, feature_extractor, *, batch_size: int = 16) -> np.ndarray:
    """Log-mel baseline: mean, std and max over time of each clip's normalised filter bank, over the real frames of
    the same window the encoders see (the extractor's `target_length`).

    Returns:
        (N, 3 * mel_bins) float32 array.
    """
    features = []
    for waveforms in iter_waveform_batches(data, batch_size):
        inputs = feature_extractor(
            waveforms, sampling_rate=SAMPLING_RATE, return_attention_mask=True, return_tensors="pt"
        )
        fbank = inputs["input_values"].double()  # (B, T, F)
        mask = inputs["attention_mask"].bool().unsqueeze(-1)  # (B, T, 1)
        count = mask.sum(dim=1)
        mean = (fbank * mask).sum(dim=1) / count
        std = ((((fbank - mean.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count).sqrt()
        peak = fbank.masked_fill(~mask, -torch.inf).amax(dim=1)
        features.append(torch.cat([mean, std, peak], dim=1).float())
    return torch.cat(features).numpy()


def fit_linear_probe(
    features: np.ndarray, targets: np.ndarray, *, C: float = 1.0, max_iter: int = 2000, seed: int = 0
) -> Pipeline:
    """Standardise + logistic regression on (N, D) features.

    ``targets`` (N,) class ids -> multinomial logistic regression; (N, C) multi-hot -> one-vs-rest logistic
    regressions (a class without positives in training gets a constant score).
    """
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} targets")
    classifier = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    if targets.ndim == 2:
        classifier = OneVsRestClassifier(classifier)
    probe = make_pipeline(StandardScaler(), classifier)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        probe.fit(features, targets)
    return probe


def score_linear_probe(probe: Pipeline, features: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy (single-label) or mAP / mAUC / d-prime (multi-label) of a fitted probe."""
    if targets.ndim == 1:
        return {"accuracy": accuracy(probe.predict(features), targets)}
    return multilabel_metrics(probe.predict_proba(features), targets)


def iter_waveform_batches(data: AudioData, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Yield lists of at most ``batch_size`` mono 16 kHz float32 waveforms, in data order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if isinstance(data, Dataset):
        audio = data.select_columns(["audio"])
        for start in range(0, len(audio), batch_size):
            yield [load_waveform(value) for value in audio[start : start + batch_size]["audio"]]
        return
    waveforms, _ = data
    for start in range(0, len(waveforms), batch_size):
        yield [load_waveform(w) for w in waveforms[start : start + batch_size]]


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the parameter and buffer names and bytes of a model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(data: AudioData) -> str:
    """The `Dataset` fingerprint, or a sha256 over the waveforms and targets of a tuple."""
    if isinstance(data, Dataset):
        return data._fingerprint
    waveforms, targets = data
    digest = hashlib.sha256()
    for waveform in waveforms:
        digest.update(np.ascontiguousarray(waveform, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(targets).tobytes())
    return digest.hexdigest()


def _targets(data: AudioData) -> np.ndarray:
    if isinstance(data, Dataset):
        return label_targets(data)
    waveforms, targets = data
    targets = np.asarray(targets)
    if len(waveforms) != len(targets) or targets.ndim not in (1, 2):
        raise ValueError(
            f"expected N waveforms with (N,) or (N, C) targets, got {len(waveforms)} waveforms, targets {targets.shape}"
        )
    return targets.astype(np.int64) if targets.ndim == 1 else targets.astype(np.float32)


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
