"""Linear probing of frozen features: an SSLAM encoder's pooled embeddings or the log-mel baseline statistics, through
the same classifier.

Recipe: compute every clip's features once (a *feature source*: [`EncoderFeatures`] or [`LogMelStatistics`]),
standardise them on the training split and fit a seeded logistic regression: multinomial for single-label data,
one-vs-rest for multi-label data. Returns the metrics of `sslam.evaluation.metrics` on the evaluation split.

Data is a `datasets.Dataset` with an ``audio`` column and a ``label`` (single-label) or ``labels`` (multi-label)
column: the project's one labelled-audio schema (see `sslam.evaluation.datasets_io`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sslam.evaluation.datasets_io import SAMPLING_RATE, label_targets
from sslam.evaluation.metrics import accuracy, multilabel_metrics
from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.embedding import extract_embeddings

Pooling = Literal["cls", "mean"]


class FeatureSource(Protocol):
    """What the probe needs from a feature source: `(N, D)` features of a dataset and a stable identity (for the
    cache)."""

    def __call__(self, dataset: Dataset) -> np.ndarray: ...

    def identity(self) -> str: ...


@dataclass
class EncoderFeatures:
    """Pooled last-layer embeddings of a frozen SSLAM encoder (`sslam.modeling_sslam.embedding.extract_embeddings`).

    Args:
        model: an `SSLAMModel` (or a model whose ``base_model`` is one); run in eval mode without gradients.
        feature_extractor: an `SSLAMFeatureExtractor` (its ``max_length`` sets the clip length the model sees).
        pooling: ``"cls"`` or ``"mean"`` (mean of the patch tokens).
    """

    model: torch.nn.Module
    feature_extractor: object
    pooling: Pooling = "cls"
    batch_size: int = 16

    def __post_init__(self):
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")

    def __call__(self, dataset: Dataset) -> np.ndarray:
        encoder = getattr(self.model, "base_model", self.model)
        was_training = encoder.training
        encoder.eval()
        try:
            embeddings = [
                extract_embeddings(
                    encoder,
                    self.feature_extractor,
                    waveforms,
                    sampling_rate=SAMPLING_RATE,
                    pooling=self.pooling,
                    batch_size=self.batch_size,
                    clip_names=names,
                )
                for names, waveforms in iter_waveform_batches(dataset, self.batch_size)
            ]
        finally:
            encoder.train(was_training)
        return np.concatenate(embeddings).astype(np.float32)

    def identity(self) -> str:
        return _digest([model_fingerprint(self.model), self.pooling, self.feature_extractor.to_json_string()])


@dataclass
class LogMelStatistics:
    """The log-mel baseline: mean, std and max over time of each clip's normalised filter bank, over the real frames
    of the window the encoders see (the extractor's ``max_length``). Features: `(N, 3 * mel_bins)`."""

    feature_extractor: object
    batch_size: int = 16

    def __call__(self, dataset: Dataset) -> np.ndarray:
        features = []
        for names, waveforms in iter_waveform_batches(dataset, self.batch_size):
            inputs = self.feature_extractor(
                waveforms, sampling_rate=SAMPLING_RATE, return_attention_mask=True, return_tensors="pt",
                clip_names=names,
            )  # fmt: skip
            fbank = inputs["input_values"].double()  # (B, T, F)
            mask = inputs["attention_mask"].bool().unsqueeze(-1)  # (B, T, 1)
            count = mask.sum(dim=1)
            mean = (fbank * mask).sum(dim=1) / count
            std = ((((fbank - mean.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count).sqrt()
            peak = fbank.masked_fill(~mask, -torch.inf).amax(dim=1)
            features.append(torch.cat([mean, std, peak], dim=1).float())
        return torch.cat(features).numpy()

    def identity(self) -> str:
        return _digest(["logmel-statistics", self.feature_extractor.to_json_string()])


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
    train: Dataset,
    test: Dataset,
    features: FeatureSource,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
    seed: int = 0,
    cache: EmbeddingCache | None = None,
) -> dict[str, float]:
    """Fit a linear probe on the `features` of ``train`` and score it on ``test``.

    Args:
        features: an [`EncoderFeatures`] or [`LogMelStatistics`] (or any [`FeatureSource`]).
        C: inverse L2 regularisation strength of the logistic regression.
        cache: reuse features across calls (e.g. to sweep ``C``) and optionally across processes.

    Returns:
        ``{"accuracy"}`` for single-label data, ``{"mAP", "mAUC", "d_prime"}`` for multi-label data (fractions).
    """
    train_targets, test_targets = label_targets(train), label_targets(test)
    if train_targets.ndim != test_targets.ndim or train_targets.shape[1:] != test_targets.shape[1:]:
        raise ValueError(f"train and test targets differ in kind: {train_targets.shape} vs {test_targets.shape}")
    train_features, test_features = (compute_features(data, features, cache) for data in (train, test))
    probe = fit_linear_probe(train_features, train_targets, C=C, max_iter=max_iter, seed=seed)
    return score_linear_probe(probe, test_features, test_targets)


def compute_features(dataset: Dataset, features: FeatureSource, cache: EmbeddingCache | None = None) -> np.ndarray:
    """(N, D) features of `dataset`, through `cache` when given (keyed by the source's identity and the data)."""
    if cache is None:
        return features(dataset)
    key = _digest([features.identity(), dataset._fingerprint])
    return cache.get_or_compute(key, lambda: features(dataset))


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


def iter_waveform_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Yield lists of at most ``batch_size`` mono 16 kHz float32 waveforms of the ``audio`` column, in order, with
    their names in messages ("Clip i", i the row of the dataset)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    audio = dataset.select_columns(["audio"])
    for start in range(0, len(audio), batch_size):
        waveforms = [decode_audio(value, SAMPLING_RATE) for value in audio[start : start + batch_size]["audio"]]
        yield [f"Clip {start + index}" for index in range(len(waveforms))], waveforms


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the parameter and buffer names and bytes of a model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
