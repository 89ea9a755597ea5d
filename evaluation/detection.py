"""Sound event detection: frame probabilities of audio of any length, per-class thresholds, median filtering,
events; frame features of frozen encoders and of the log-mel baseline; linear frame heads fitted on them.

Decoding (`decode_events`): frame probabilities `(R, C)` on the model's rows (row r spans [r h, (r + 1) h),
h = 0.16 s) -> a row is on for a class when its probability exceeds the class's threshold -> each class's on/off
sequence is median-filtered over `median_filter` rows (odd; 1 = none) -> every run of on rows becomes an event from
the run's first row start to its last row end (cut at the clip's duration), scored by the run's highest probability.

Frozen-encoder frame probes (`fit_frame_head`, `select_frame_head`): frame features of every row of every clip
(`EncoderFrameFeatures`: the encoder's time rows through a parameter-free LayerNorm, which is what the fc_norm of
`SSLAMForAudioFrameClassification` computes at initialisation; `LogMelFrameStatistics`: mean, std and max of each
mel bin over the row's 16 frames) -> standardisation -> one linear layer trained with binary cross-entropy and an
L2 penalty (full-batch L-BFGS, deterministic). `FrameHead.to_frame_classifier` folds the standardisation into the
fc_norm's affine parameters, giving an `SSLAMForAudioFrameClassification` whose outputs equal the probe's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import median_filter as scipy_median_filter

from sslam.evaluation.metrics import mean_average_precision
from sslam.evaluation.strong_labels import Event
from sslam.modeling_sslam.embedding import embed_time_frames

DEFAULT_L2_GRID = (1e-6, 1e-5, 1e-4)
DEFAULT_MEDIAN_FILTERS = (1, 3, 5)


# ------------------------------------------------------------------------------------------------ decoding


def class_thresholds(thresholds: float | Sequence[float], num_classes: int) -> np.ndarray:
    """One threshold for all classes or one per class -> `(C,)` float64, each in (0, 1)."""
    array = np.asarray(thresholds, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and len(array) != num_classes):
        raise ValueError(f"give one threshold or {num_classes} (one per class), got {thresholds!r}")
    values = np.broadcast_to(array, (num_classes,)).copy()
    if not np.all((values > 0.0) & (values < 1.0)):
        raise ValueError(f"thresholds must lie in (0, 1), got {values.tolist()}")
    return values


def decode_events(
    probabilities: np.ndarray,
    hop_seconds: float,
    label_names: Sequence[str],
    thresholds: float | Sequence[float] = 0.5,
    median_filter: int = 1,
    duration: float | None = None,
) -> list[Event]:
    """Frame probabilities `(R, C)` -> events (sorted by onset), as the module docstring says."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(label_names):
        raise ValueError(f"probabilities must have shape (rows, {len(label_names)}), got {probabilities.shape}")
    if median_filter < 1 or median_filter % 2 == 0:
        raise ValueError(f"median_filter must be a positive odd number of rows, got {median_filter}")
    active = probabilities > class_thresholds(thresholds, len(label_names))
    if median_filter > 1 and len(active):
        active = scipy_median_filter(active.astype(np.uint8), size=(median_filter, 1)).astype(bool)
    events = []
    for column, label in enumerate(label_names):
        padded = np.concatenate([[False], active[:, column], [False]])
        changes = np.flatnonzero(padded[1:] != padded[:-1])
        for start, end in zip(changes[::2], changes[1::2]):
            offset = end * hop_seconds if duration is None else min(end * hop_seconds, duration)
            if offset > start * hop_seconds:
                score = float(probabilities[start:end, column].max())
                events.append(Event(start * hop_seconds, offset, label, score))
    return sorted(events, key=lambda event: (event.onset, event.label))


@torch.no_grad()
def frame_probabilities(
    model,
    feature_extractor,
    audio,
    sampling_rate: int | None = None,
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> list[np.ndarray]:
    """Frame probabilities `(R, C)` per clip from an `SSLAMForAudioFrameClassification`, for audio of any length:
    the encoder runs in overlapping windows (`sslam.modeling_sslam.embedding.embed_time_frames`) and the head on
    the stitched rows."""
    rows = embed_time_frames(
        model.sslam, feature_extractor, audio, sampling_rate=sampling_rate,
        frequency_pooling=model.config.frequency_pooling, window_seconds=window_seconds, hop_seconds=hop_seconds,
        batch_size=batch_size, progress=progress, return_tensors="pt",
    )
    device = next(model.parameters()).device
    return [torch.sigmoid(model.frame_logits(clip.frames.to(device))).float().cpu().numpy() for clip in rows]


# ------------------------------------------------------------------------------------------ frame features


@dataclass
class EncoderFrameFeatures:
    """Frozen-encoder frame features: the time rows of `embed_time_frames` (windows of the extractor's `max_length`)
    through a parameter-free LayerNorm. `__call__(waveforms) -> [(R_i, width)]`."""

    model: torch.nn.Module
    feature_extractor: object
    frequency_pooling: str = "concat"
    hop_seconds: float | None = None
    batch_size: int = 16

    def __call__(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        encoder = getattr(self.model, "base_model", self.model)
        was_training = encoder.training
        encoder.eval()
        try:
            clips = embed_time_frames(
                encoder, self.feature_extractor, list(waveforms), sampling_rate=self.feature_extractor.sampling_rate,
                frequency_pooling=self.frequency_pooling, hop_seconds=self.hop_seconds, batch_size=self.batch_size,
                return_tensors="pt",
            )
        finally:
            encoder.train(was_training)
        eps = encoder.config.layer_norm_eps
        return [F.layer_norm(clip.frames, clip.frames.shape[-1:], eps=eps).numpy() for clip in clips]


@dataclass
class LogMelFrameStatistics:
    """The log-mel frame baseline: per time row, the mean, std and max of each normalised mel bin over the row's real
    frames (`3 * mel_bins` values), on the same rows as the encoders (`ceil(frames / 16)` per clip)."""

    feature_extractor: object

    def __call__(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        patch = self.feature_extractor.patch_size
        features = []
        for waveform in waveforms:
            inputs = self.feature_extractor(
                waveform, sampling_rate=self.feature_extractor.sampling_rate, padding="longest", truncation=False,
                return_attention_mask=True, return_tensors="pt",
            )
            fbank = inputs["input_values"][0].double()  # (T, F), T a multiple of 16
            mask = inputs["attention_mask"][0].bool()
            num_rows = int(np.ceil(int(mask.sum()) / patch))
            rows = fbank[: num_rows * patch].reshape(num_rows, patch, -1)
            weights = mask[: num_rows * patch].reshape(num_rows, patch, 1).double()
            count = weights.sum(dim=1)
            mean = (rows * weights).sum(dim=1) / count
            std = ((((rows - mean.unsqueeze(1)) * weights) ** 2).sum(dim=1) / count).sqrt()
            peak = rows.masked_fill(weights == 0, -torch.inf).amax(dim=1)
            features.append(torch.cat([mean, std, peak], dim=1).float().numpy())
        return features


# -------------------------------------------------------------------------------------------- frame heads


@dataclass
class FrameHead:
    """Standardisation + linear layer over frame features, with its detection settings.

    mean, scale: `(D,)` standardisation; weight `(C, D)`, bias `(C,)`; thresholds `(C,)`; median_filter in rows.
    """

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    thresholds: np.ndarray
    median_filter: int = 1
    l2: float = 0.0

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """`(N, D)` features -> `(N, C)` sigmoid probabilities."""
        logits = ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.weight.T + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def to_frame_classifier(self, encoder, label_names: Sequence[str], frequency_pooling: str = "concat"):
        """An `SSLAMForAudioFrameClassification` made of `encoder` (an `SSLAMModel`, copied) and this head: its
        fc_norm applies LayerNorm and then the standardisation (weight 1 / scale, bias -mean / scale), its
        classifier the linear layer, its config the thresholds and the median filter. It reproduces the probe
        on `EncoderFrameFeatures` of the same encoder."""
        from sslam.modeling_sslam import SSLAMForAudioFrameClassification

        config = encoder.config.__class__(**{
            **encoder.config.to_dict(),
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: index for index, name in enumerate(label_names)},
            "problem_type": "multi_label_classification",
            "frequency_pooling": frequency_pooling,
            "detection_thresholds": [float(value) for value in self.thresholds],
            "detection_median_filter": int(self.median_filter),
            "architectures": ["SSLAMForAudioFrameClassification"],
        })
        model = SSLAMForAudioFrameClassification(config)
        model.sslam.load_state_dict(encoder.state_dict())
        with torch.no_grad():
            model.fc_norm.weight.copy_(torch.from_numpy(1.0 / self.scale))
            model.fc_norm.bias.copy_(torch.from_numpy(-self.mean / self.scale))
            model.classifier.weight.copy_(torch.from_numpy(self.weight))
            model.classifier.bias.copy_(torch.from_numpy(self.bias))
        return model.eval()


def fit_frame_head(
    features: np.ndarray, targets: np.ndarray, *, l2: float = 1e-4, max_iter: int = 50, seed: int = 0
) -> FrameHead:
    """Standardise `(N, D)` features and fit a linear layer to `(N, C)` 0/1 targets: mean binary cross-entropy plus
    `l2 * ||W||^2`, full-batch L-BFGS in float32 (thresholds 0.5, no median filter)."""
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if features.ndim != 2 or targets.ndim != 2 or len(features) != len(targets):
        raise ValueError(f"features (N, D) and targets (N, C) must agree, got {features.shape} and {targets.shape}")
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-8] = 1.0
    inputs = torch.from_numpy((features - mean) / scale).float()
    labels = torch.from_numpy(targets).float()
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(targets.shape[1], features.shape[1], generator=generator) * 1e-3
    weight.requires_grad_(True)
    bias = torch.zeros(targets.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(inputs @ weight.T + bias, labels) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return FrameHead(
        mean=mean, scale=scale, weight=weight.detach().double().numpy(), bias=bias.detach().double().numpy(),
        thresholds=np.full(targets.shape[1], 0.5), l2=l2,
    )


THRESHOLD_GRID = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2))


def frame_f1_thresholds(
    probabilities: np.ndarray, targets: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID, default: float = 0.5
) -> np.ndarray:
    """Per class, the threshold of `grid` with the best frame-level F1 on `(N, C)` validation data (the lowest on a
    tie); `default` for classes without positive frames. The coarse grid keeps a class that the head hardly
    separates from being given a near-zero threshold (which would mark whole clips active)."""
    grid = np.asarray(grid, dtype=np.float64)
    thresholds = np.full(targets.shape[1], default)
    positives = targets.astype(bool)
    for column in np.flatnonzero(positives.any(axis=0)):
        predicted = probabilities[:, column, None] > grid[None, :]  # (N, G)
        true_positives = (predicted & positives[:, column, None]).sum(axis=0)
        f1 = 2 * true_positives / (predicted.sum(axis=0) + positives[:, column].sum())
        thresholds[column] = grid[int(np.argmax(f1))]
    return thresholds


def select_frame_head(
    train_features: Sequence[np.ndarray],
    train_targets: Sequence[np.ndarray],
    validation_features: Sequence[np.ndarray],
    validation_targets: Sequence[np.ndarray],
    validation_events: dict[str, list[Event]],
    validation_durations: dict[str, float],
    hop_seconds: float,
    label_names: Sequence[str],
    *,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    median_filters: Sequence[int] = DEFAULT_MEDIAN_FILTERS,
    seed: int = 0,
) -> FrameHead:
    """A linear frame head fitted on the training clips, its settings chosen on the validation clips: the L2 penalty
    by frame mAP, the per-class thresholds by frame F1 (`frame_f1_thresholds`), the median filter by event-based
    macro F1. `validation_events` / `validation_durations` are keyed by clip id in the order of the features."""
    from sslam.evaluation.sed_metrics import event_based_f1

    fit_x, fit_y = np.concatenate(train_features), np.concatenate(train_targets)
    val_x, val_y = np.concatenate(validation_features), np.concatenate(validation_targets)
    candidates = [fit_frame_head(fit_x, fit_y, l2=l2, seed=seed) for l2 in l2_grid]
    head = max(candidates, key=lambda candidate: mean_average_precision(candidate.probabilities(val_x), val_y))
    head.thresholds = frame_f1_thresholds(head.probabilities(val_x), val_y)
    ids = list(validation_events)

    def event_f1(size: int) -> float:
        estimated = {
            clip: decode_events(head.probabilities(features), hop_seconds, label_names, head.thresholds, size,
                                validation_durations[clip])
            for clip, features in zip(ids, validation_features)
        }
        return event_based_f1(validation_events, estimated, label_names)["f1_macro"]

    head.median_filter = max(median_filters, key=event_f1)
    return head


__all__ = [
    "DEFAULT_L2_GRID",
    "DEFAULT_MEDIAN_FILTERS",
    "EncoderFrameFeatures",
    "FrameHead",
    "LogMelFrameStatistics",
    "THRESHOLD_GRID",
    "class_thresholds",
    "decode_events",
    "fit_frame_head",
    "frame_f1_thresholds",
    "frame_probabilities",
    "select_frame_head",
]
