# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Embeddings from an SSLAM encoder (transformers' "feature-extraction" pipeline is text-only).

`extract_embeddings` gives clip-level (CLS or mean of patch tokens), patch-level (patch tokens) or time-frame
(`pooling="time"`: one feature per 160 ms time row, with its centre time) features for one clip or a batch;
`embed_long_audio` handles audio longer than the position table (or than one training clip) by encoding overlapping
windows and pooling them; `embed_time_frames` gives time-frame features of audio of any length from overlapping
windows stitched on one row grid (what the HEAR module, `sslam detect` and the detection probes use).

Time frames: patch row r covers filter-bank frames 16r .. 16r + 15 (each 25 ms, every 10 ms), i.e. the samples
[2560r, 2560r + 2800) at 16 kHz. It is given the time span [0.16 r, 0.16 (r + 1)) s and the centre 0.16 (r + 0.5) s
(7.5 ms before the centre of the audio it sees). Its 8 frequency patches are concatenated (`"concat"`, the default:
8 * D values, lowest band first) or averaged (`"mean"`: D values). The hop is fixed at 160 ms; no finer hop is
offered (one would only interpolate between rows).

Example:

```python
>>> import modeling_sslam
>>> from transformers import AutoFeatureExtractor, AutoModel
>>> from sslam.modeling_sslam.embedding import extract_embeddings
>>> model = AutoModel.from_pretrained("path/to/sslam").eval()
>>> extractor = AutoFeatureExtractor.from_pretrained("path/to/sslam")
>>> cls = extract_embeddings(model, extractor, waveform, sampling_rate=16000, pooling="cls")  # (1, D) numpy
```
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .modeling_sslam import pool_tokens, row_attention_mask, time_rows, token_attention_mask

POOLINGS = ("cls", "mean", "frames", "time")
FREQUENCY_POOLINGS = ("concat", "mean")


@dataclass
class TimeFrameEmbedding:
    """Time-frame embedding of one clip.

    frames: `(R, 8 * D)` (`"concat"`) or `(R, D)` (`"mean"`): one feature per 160 ms time row, padding rows removed.
    times: `(R,)` float64 centre of each row in seconds, `(r + 0.5) * 0.16`.
    cls: `(D,)` the CLS token, kept apart (for windowed audio: the mean of the windows' CLS tokens).
    """

    frames: np.ndarray | torch.Tensor
    times: np.ndarray
    cls: np.ndarray | torch.Tensor


def row_hop_seconds(feature_extractor) -> float:
    """Seconds between time rows: `patch_size` filter-bank frames (16 x 10 ms = 0.16 s)."""
    return feature_extractor.patch_size * feature_extractor.frame_shift / feature_extractor.sampling_rate


def row_centre_times(num_rows: int, hop_seconds: float) -> np.ndarray:
    """`(num_rows,)` float64 centre times `(r + 0.5) * hop_seconds` (computed from r, not accumulated)."""
    return (np.arange(num_rows, dtype=np.float64) + 0.5) * hop_seconds


def _check_frequency_pooling(frequency_pooling: str) -> None:
    if frequency_pooling not in FREQUENCY_POOLINGS:
        raise ValueError(f"frequency_pooling must be one of {FREQUENCY_POOLINGS}, got {frequency_pooling!r}.")


def _model_sees_attention_mask(feature_extractor, feature_kwargs: dict) -> bool:
    """Whether the extractor, called with `feature_kwargs`, returns an attention mask (which the model then gets):
    with `padding="longest"` or when asked; with `padding="max_length"` (the original recipe) the padding is part of
    the input."""
    padding = feature_kwargs.get("padding", "max_length" if feature_extractor.max_length is not None else "longest")
    default = padding in (True, "longest") or feature_extractor.return_attention_mask
    return bool(feature_kwargs.get("return_attention_mask", default))


DEFAULT_HOP_SECONDS = 5.0


def _as_list(audio) -> tuple[list, list[str]]:
    """One clip (an array or tensor, which the extractor reads as one clip whatever its shape, or a list of numbers)
    or a sequence of clips -> the list of clips and their names in messages ("The audio", or "Clip i")."""
    if isinstance(audio, (np.ndarray, torch.Tensor)):
        return [audio], ["The audio"]
    if isinstance(audio, Sequence) and len(audio) > 0 and np.ndim(audio[0]) == 0:
        return [np.asarray(audio, dtype=np.float32)], ["The audio"]
    clips = list(audio)
    return clips, [f"Clip {index}" for index in range(len(clips))]


def _convert(array: torch.Tensor, return_tensors: str):
    if return_tensors == "pt":
        return array
    if return_tensors == "np":
        return array.float().numpy()
    raise ValueError(f"return_tensors must be 'np' or 'pt', got {return_tensors!r}.")


@torch.no_grad()
def extract_embeddings(
    model,
    feature_extractor,
    audio,
    sampling_rate: int | None = None,
    pooling: str = "cls",
    return_tensors: str = "np",
    batch_size: int = 8,
    frequency_pooling: str = "concat",
    clip_names: Sequence[str] | None = None,
    **feature_kwargs,
):
    """Encodes clips and pools their tokens.

    Args:
        model: an `SSLAMModel` (or any model returning `last_hidden_state` `(B, 1 + N, D)` with CLS first).
        feature_extractor: an `SSLAMFeatureExtractor`.
        audio: a mono waveform (1-D) or a list of them, at `sampling_rate`.
        pooling: `"cls"` -> `(B, D)`; `"mean"` -> `(B, D)` mean of the real patch tokens; `"frames"` -> a list of
            `(N_i, D)` patch-token arrays (time-major, `n = t * 8 + f`), padding removed; `"time"` -> a list of
            [`TimeFrameEmbedding`] (one feature per 160 ms time row, its centre time, the CLS token apart), rows
            without any real frame removed. Clips longer than the position table: use `embed_time_frames`.
        return_tensors: `"np"` or `"pt"`.
        frequency_pooling: with `pooling="time"`, `"concat"` (`(R, 8 * D)`) or `"mean"` (`(R, D)`) of each row's
            frequency patches.
        clip_names: one name per clip for errors and warnings (default "Clip i", the index in `audio`, not in the
            internal batch; "The audio" for one clip).
        feature_kwargs: passed to the feature extractor, e.g. `padding="longest"` (each clip keeps its own length and
            batch padding is masked out) or `max_length=...`; by default clips are padded to the extractor's
            `max_length` and the padding is part of the input, as in the original feature scripts.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    _check_frequency_pooling(frequency_pooling)
    clips, names = _as_list(audio)
    if not clips:
        raise ValueError("no audio given.")
    if clip_names is not None:
        names = [str(name) for name in clip_names]
        if len(names) != len(clips):
            raise ValueError(f"clip_names has {len(names)} name(s) for {len(clips)} clip(s).")
    device = next(model.parameters()).device
    # Time rows need the frame mask to drop padding rows, also where the model itself does not get it.
    model_gets_mask = pooling != "time" or _model_sees_attention_mask(feature_extractor, feature_kwargs)
    if pooling == "time":
        feature_kwargs = {**feature_kwargs, "return_attention_mask": True}
    hop = row_hop_seconds(feature_extractor)
    results = []
    for start in range(0, len(clips), batch_size):
        features = feature_extractor(
            clips[start : start + batch_size],
            sampling_rate=sampling_rate,
            return_tensors="pt",
            clip_names=names[start : start + batch_size],
            **feature_kwargs,
        )
        input_values = features["input_values"].to(device)
        frame_mask = features.get("attention_mask")
        frame_mask = None if frame_mask is None else frame_mask.to(device)
        attention_mask = frame_mask if model_gets_mask else None
        hidden = model(input_values, attention_mask=attention_mask).last_hidden_state
        num_frames = input_values.shape[-2]
        batch, tokens = hidden.shape[:2]
        token_mask = token_attention_mask(attention_mask, batch, tokens - 1, num_frames, model.config)
        if pooling == "time":
            frame_tokens = token_attention_mask(frame_mask, batch, tokens - 1, num_frames, model.config)
            real_rows = row_attention_mask(frame_tokens, model.config.num_freq_patches)
            rows = time_rows(hidden[:, 1:], model.config.num_freq_patches, frequency_pooling, token_mask)
            for index in range(batch):
                kept = rows[index, real_rows[index]].float().cpu()
                results.append(
                    TimeFrameEmbedding(
                        frames=_convert(kept, return_tensors),
                        times=row_centre_times(int(real_rows[index].sum()), hop),
                        cls=_convert(hidden[index, 0].float().cpu(), return_tensors),
                    )
                )
        elif pooling == "frames":
            for row in range(hidden.shape[0]):
                tokens = hidden[row, 1:]
                results.append(tokens if token_mask is None else tokens[token_mask[row, 1:]])
        else:
            results.append(pool_tokens(hidden, pooling, token_mask))
    if pooling == "time":
        return results
    if pooling == "frames":
        return [_convert(tokens.cpu(), return_tensors) for tokens in results]
    return _convert(torch.cat(results).cpu(), return_tensors)


@dataclass
class LongAudioEmbedding:
    """Windowed embedding of one long clip.

    windows: `(W, D)` one pooled embedding per window. starts: `(W,)` window start times in seconds.
    pooled: `(D,)` the mean over windows.
    """

    windows: np.ndarray | torch.Tensor
    starts: np.ndarray
    pooled: np.ndarray | torch.Tensor


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of windows of `window` samples every `hop` samples; the last window ends at the clip's end."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop}.")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def window_frames(feature_extractor, window_seconds: float) -> int:
    """Filter-bank frames of a window of `window_seconds`, rounded up to a multiple of the patch size."""
    samples = int(round(window_seconds * feature_extractor.sampling_rate))
    frames = feature_extractor.num_frames(samples)
    return math.ceil(frames / feature_extractor.patch_size) * feature_extractor.patch_size


def check_window(
    feature_extractor, window_seconds: float, hop_seconds: float | None = None, max_frames: int | None = None
) -> float:
    """Checks a window length and hop (default: 5 s, or the window when shorter) and returns the hop.

    Raises a `ValueError` for windows the model cannot embed: a non-finite or non-positive length or hop, a window
    shorter than one patch, a hop longer than the window (audio between windows would be skipped), or a window longer
    than `max_frames` (the model's position table)."""
    if hop_seconds is None and isinstance(window_seconds, (int, float)):
        hop_seconds = min(DEFAULT_HOP_SECONDS, window_seconds)
    for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    shortest = feature_extractor.min_num_samples / feature_extractor.sampling_rate
    if window_seconds < shortest:
        raise ValueError(
            f"window_seconds={window_seconds:g} is shorter than one patch of {feature_extractor.patch_size} frames "
            f"({shortest:.3f} s)."
        )
    if hop_seconds > window_seconds:
        raise ValueError(
            f"hop_seconds={hop_seconds:g} is longer than window_seconds={window_seconds:g}: the audio between the "
            "windows would be skipped."
        )
    frames = window_frames(feature_extractor, window_seconds)
    if max_frames is not None and frames > max_frames:
        longest = (feature_extractor.frame_length + feature_extractor.frame_shift * (max_frames - 1)) / (
            feature_extractor.sampling_rate
        )
        raise ValueError(
            f"window_seconds={window_seconds:g} needs {frames} frames, more than the model's position table covers "
            f"({max_frames} frames, {longest:.1f} s)."
        )
    return hop_seconds


@dataclass
class AudioWindows:
    """Overlapping windows of one waveform, ready for the feature extractor.

    chunks: the W windows (1-D, at the waveform's rate). starts / ends: `(W,)` in seconds. names: one name per window
    for messages ("Window w (start-end s)", or "The audio" when it is one window). window_seconds, hop_seconds: the
    window length and hop used. max_length: frames to featurise each window to when the window is longer
    than the extractor's `max_length` (all of its frames, so no part is cut off); None: the extractor's own padding
    (a window no longer than a training clip is padded like one).
    """

    chunks: list[np.ndarray]
    starts: np.ndarray
    ends: np.ndarray
    names: list[str]
    window_seconds: float
    hop_seconds: float
    max_length: int | None

    def feature_kwargs(self) -> dict:
        """Padding arguments of the feature extractor for these windows."""
        return {} if self.max_length is None else {"padding": "max_length", "max_length": self.max_length}


def split_into_windows(
    feature_extractor,
    waveform,
    sampling_rate: int,
    window_seconds: float,
    hop_seconds: float | None = None,
    name: str | None = None,
    max_frames: int | None = None,
) -> AudioWindows:
    """Cuts a `(num_samples,)` waveform into windows of `window_seconds` every `hop_seconds` (default: 5 s, or the
    window when shorter; the last window ends at the audio's end), checked with [`check_window`]. `name` (e.g. the
    file) is added to each window's name."""
    hop_seconds = check_window(feature_extractor, window_seconds, hop_seconds, max_frames)
    waveform = np.asarray(waveform.numpy() if isinstance(waveform, torch.Tensor) else waveform)
    if waveform.ndim != 1:
        raise ValueError(f"expected one mono waveform (1-D), got shape {waveform.shape}.")
    window = int(round(window_seconds * sampling_rate))
    hop = int(round(hop_seconds * sampling_rate))
    starts = window_starts(len(waveform), window, hop)
    ends = [min(start + window, len(waveform)) for start in starts]
    suffix = f" of {name}" if name else ""
    names = [
        f"Window {index} ({start / sampling_rate:.2f}-{end / sampling_rate:.2f} s){suffix}"
        for index, (start, end) in enumerate(zip(starts, ends))
    ]
    if len(starts) == 1:
        names = [name or "The audio"]
    frames = window_frames(feature_extractor, window_seconds)
    longer_than_a_clip = feature_extractor.max_length is not None and frames > feature_extractor.max_length
    return AudioWindows(
        chunks=[waveform[start:end] for start, end in zip(starts, ends)],
        starts=np.asarray(starts, dtype=np.float64) / sampling_rate,
        ends=np.asarray(ends, dtype=np.float64) / sampling_rate,
        names=names,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        max_length=frames if longer_than_a_clip else None,
    )


def max_model_frames(model) -> int | None:
    """Frames the model's position table covers (None for a model without an SSLAM config)."""
    config = getattr(model, "config", None)
    if not all(hasattr(config, name) for name in ("max_time_patches", "patch_size")):
        return None
    return config.max_time_patches * config.patch_size


def embed_long_audio(
    model,
    feature_extractor,
    waveform,
    sampling_rate: int,
    window_seconds: float = 10.0,
    hop_seconds: float | None = None,
    pooling: str = "cls",
    return_tensors: str = "np",
    batch_size: int = 8,
    name: str | None = None,
) -> LongAudioEmbedding:
    """Embeds audio of any length in overlapping windows (10 s windows every 5 s by default, as the model was
    trained on 10 s clips) and averages the window embeddings.

    A window no longer than the extractor's clip (`max_length` frames) is featurised like a training clip (padded to
    that length), so a clip no longer than one window gives exactly `extract_embeddings(...)` of the whole clip; a
    longer window is featurised at its own length (its frames rounded up to the patch size), so the model sees all of
    it. The waveform is cut at its own rate and each window is resampled by the feature extractor when `sampling_rate`
    differs from 16 kHz. Errors name the window and its time span (and `name`, e.g. the file, when given).

    Args:
        hop_seconds: window hop (default: 5 s, or the window when shorter); at most `window_seconds`.
    """
    if pooling == "frames":
        raise ValueError("embed_long_audio pools windows; use extract_embeddings(pooling='frames') per window instead.")
    if pooling == "time":
        raise ValueError("embed_long_audio pools windows; use embed_time_frames for time frames of long audio.")
    windows = split_into_windows(
        feature_extractor, waveform, sampling_rate, window_seconds, hop_seconds, name, max_model_frames(model)
    )
    extra = {"resample": True} if sampling_rate != feature_extractor.sampling_rate else {}
    embeddings = extract_embeddings(
        model,
        feature_extractor,
        windows.chunks,
        sampling_rate=sampling_rate,
        pooling=pooling,
        return_tensors="pt",
        batch_size=batch_size,
        clip_names=windows.names,
        **windows.feature_kwargs(),
        **extra,
    )
    return LongAudioEmbedding(
        windows=_convert(embeddings, return_tensors),
        starts=windows.starts,
        pooled=_convert(embeddings.mean(dim=0), return_tensors),
    )


def _window_rows(seconds: float | None, default: int, hop_seconds: float, name: str) -> int:
    """A window length or hop in seconds -> whole time rows (rounded); None -> `default`."""
    if seconds is None:
        return default
    rows = round(seconds / hop_seconds)
    if seconds <= 0 or rows < 1:
        raise ValueError(f"{name} must be at least one time row ({hop_seconds} s), got {seconds}.")
    return rows


def nearest_window(num_rows: int, starts: Sequence[int], rows_per_window: int) -> np.ndarray:
    """`(num_rows,)` index of the window (of `rows_per_window` rows at `starts`) whose centre is nearest to each row's
    centre; the earlier window on a tie."""
    owner = np.zeros(num_rows, dtype=np.int64)
    best = np.full(num_rows, np.inf)
    for index, start in enumerate(starts):
        rows = np.arange(start, min(start + rows_per_window, num_rows))
        distance = np.abs(rows + 0.5 - (start + min(rows_per_window, num_rows) / 2))
        closer = distance < best[rows]
        owner[rows[closer]] = index
        best[rows[closer]] = distance[closer]
    return owner


@dataclass
class _ClipPlan:
    """One clip of `embed_time_frames`: its padded filter bank, window starts (rows), row owners and outputs."""

    features: torch.Tensor
    starts: list[int]
    owner: np.ndarray
    frames: np.ndarray
    cls_sum: torch.Tensor
    pending: int


@torch.no_grad()
def embed_time_frames(
    model,
    feature_extractor,
    audio,
    sampling_rate: int | None = None,
    frequency_pooling: str = "concat",
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    batch_size: int = 8,
    progress: bool = False,
    return_tensors: str = "np",
) -> list[TimeFrameEmbedding]:
    """Time-frame embeddings of clips of any length, from overlapping windows on one 160 ms row grid.

    Each clip's filter bank is computed once, padded to whole windows and cut into windows of `window_seconds`
    (default: the extractor's `max_length`, the clip length the model was trained on) every `hop_seconds` (default:
    half a window), both rounded to whole rows; the last window ends at the clip's last row. Each window is encoded
    like a clip of that length (padding attended, as in the original recipe) and each row is taken from the window
    whose centre is nearest to it (`nearest_window`), so rows keep context on both sides. A clip no longer than one
    window gives `extract_embeddings(..., pooling="time")` with the extractor's defaults.

    Memory stays bounded: the filter banks of the clips in flight, `batch_size` windows and the output rows (10
    minutes of audio are 3,750 rows).

    Args:
        audio: a mono waveform (1-D) or a list of them, at `sampling_rate` (resampled when it is not 16 kHz).
        progress: show a progress bar over the windows.

    Returns:
        one [`TimeFrameEmbedding`] per clip: the rows with at least one real frame (`ceil(frames / 16)`), their
        centre times and the mean of the windows' CLS tokens.
    """
    _check_frequency_pooling(frequency_pooling)
    clips, names = _as_list(audio)
    if not clips:
        raise ValueError("no audio given.")
    config = model.config
    hop = row_hop_seconds(feature_extractor)
    patch = feature_extractor.patch_size
    if window_seconds is None and feature_extractor.max_length is None:
        raise ValueError("the feature extractor has no max_length: pass window_seconds.")
    default_rows = None if feature_extractor.max_length is None else feature_extractor.max_length // patch
    rows_per_window = _window_rows(window_seconds, default_rows, hop, "window_seconds")
    hop_rows = _window_rows(hop_seconds, max(1, rows_per_window // 2), hop, "hop_seconds")
    width = config.hidden_size * (config.num_freq_patches if frequency_pooling == "concat" else 1)
    extra = {"resample": True} if sampling_rate not in (None, feature_extractor.sampling_rate) else {}
    device = next(model.parameters()).device
    plans: list[_ClipPlan | None] = [None] * len(clips)
    results: list[TimeFrameEmbedding | None] = [None] * len(clips)
    queue: list[tuple[int, int]] = []  # (clip, window) pairs waiting for a batch
    bar = tqdm(total=0, desc="windows", unit="window", disable=not progress)

    def run_batch(batch: list[tuple[int, int]]) -> None:
        inputs = torch.stack(
            [plans[c].features[plans[c].starts[w] * patch : (plans[c].starts[w] + rows_per_window) * patch]
             for c, w in batch]
        ).to(device)
        hidden = model(inputs).last_hidden_state
        rows = time_rows(hidden[:, 1:], config.num_freq_patches, frequency_pooling).float().cpu().numpy()
        for (c, w), window_rows, cls in zip(batch, rows, hidden[:, 0].float().cpu()):
            plan = plans[c]
            start = plan.starts[w]
            owned = np.flatnonzero(plan.owner == w)
            plan.frames[owned] = window_rows[owned - start]
            plan.cls_sum += cls
            plan.pending -= 1
            if plan.pending == 0:
                cls_mean = plan.cls_sum / len(plan.starts)
                results[c] = TimeFrameEmbedding(
                    frames=_convert(torch.from_numpy(plan.frames), return_tensors),
                    times=row_centre_times(len(plan.frames), hop),
                    cls=_convert(cls_mean, return_tensors),
                )
                plans[c] = None  # frees the clip's filter bank
        bar.update(len(batch))

    for index, clip in enumerate(clips):
        features = feature_extractor(
            [clip], sampling_rate=sampling_rate, padding="longest", pad_to_multiple_of=rows_per_window * patch,
            return_attention_mask=True, return_tensors="pt", clip_names=[names[index]], **extra,
        )
        num_rows = math.ceil(int(features["attention_mask"].sum()) / patch)
        starts = window_starts(num_rows, rows_per_window, hop_rows)
        plans[index] = _ClipPlan(
            features=features["input_values"][0],
            starts=starts,
            owner=nearest_window(num_rows, starts, rows_per_window),
            frames=np.empty((num_rows, width), dtype=np.float32),
            cls_sum=torch.zeros(config.hidden_size),
            pending=len(starts),
        )
        bar.total += len(starts)
        bar.refresh()
        queue.extend((index, window) for window in range(len(starts)))
        while len(queue) >= batch_size:
            run_batch(queue[:batch_size])
            queue = queue[batch_size:]
    if queue:
        run_batch(queue)
    bar.close()
    return results


__all__ = [
    "AudioWindows",
    "FREQUENCY_POOLINGS",
    "LongAudioEmbedding",
    "POOLINGS",
    "TimeFrameEmbedding",
    "check_window",
    "embed_long_audio",
    "embed_time_frames",
    "extract_embeddings",
    "nearest_window",
    "row_centre_times",
    "row_hop_seconds",
    "split_into_windows",
    "window_frames",
    "window_starts",
]
