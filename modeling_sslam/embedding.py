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


def _as_list(audio) -> list:
    """One clip (1-D array/tensor) or a sequence of clips -> list of clips."""
    if isinstance(audio, (np.ndarray, torch.Tensor)) and audio.ndim == 1:
        return [audio]
    if isinstance(audio, Sequence) and len(audio) > 0 and np.ndim(audio[0]) == 0:
        return [np.asarray(audio, dtype=np.float32)]
    return list(audio)


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
        feature_kwargs: passed to the feature extractor, e.g. `padding="longest"` (each clip keeps its own length and
            batch padding is masked out) or `max_length=...`; by default clips are padded to the extractor's
            `max_length` and the padding is part of the input, as in the original feature scripts.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    _check_frequency_pooling(frequency_pooling)
    clips = _as_list(audio)
    if not clips:
        raise ValueError("no audio given.")
    device = next(model.parameters()).device
    # Time rows need the frame mask to drop padding rows, also where the model itself does not get it.
    model_gets_mask = pooling != "time" or _model_sees_attention_mask(feature_extractor, feature_kwargs)
    if pooling == "time":
        feature_kwargs = {**feature_kwargs, "return_attention_mask": True}
    hop = row_hop_seconds(feature_extractor)
    results = []
    for start in range(0, len(clips), batch_size):
        features = feature_extractor(
            clips[start : start + batch_size], sampling_rate=sampling_rate, return_tensors="pt", **feature_kwargs
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


def embed_long_audio(
    model,
    feature_extractor,
    waveform,
    sampling_rate: int,
    window_seconds: float = 10.0,
    hop_seconds: float = 5.0,
    pooling: str = "cls",
    return_tensors: str = "np",
    batch_size: int = 8,
) -> LongAudioEmbedding:
    """Embeds audio of any length in overlapping windows (10 s windows every 5 s by default, as the model was
    trained on 10 s clips) and averages the window embeddings.

    Each window is featurised like a training clip (padded to the extractor's target length), so a clip no longer than
    one window gives exactly `extract_embeddings(...)` of the whole clip. The waveform is cut at its own rate and each
    window is resampled by the feature extractor when `sampling_rate` differs from 16 kHz.
    """
    if pooling == "frames":
        raise ValueError("embed_long_audio pools windows; use extract_embeddings(pooling='frames') per window instead.")
    if pooling == "time":
        raise ValueError("embed_long_audio pools windows; use embed_time_frames for time frames of long audio.")
    waveform = np.asarray(waveform.numpy() if isinstance(waveform, torch.Tensor) else waveform)
    if waveform.ndim != 1:
        raise ValueError(f"embed_long_audio expects one mono waveform (1-D), got shape {waveform.shape}.")
    window = int(round(window_seconds * sampling_rate))
    hop = int(round(hop_seconds * sampling_rate))
    starts = window_starts(len(waveform), window, hop)
    chunks = [waveform[start : start + window] for start in starts]
    extra = {"resample": True} if sampling_rate != feature_extractor.sampling_rate else {}
    windows = extract_embeddings(
        model,
        feature_extractor,
        chunks,
        sampling_rate=sampling_rate,
        pooling=pooling,
        return_tensors="pt",
        batch_size=batch_size,
        **extra,
    )
    return LongAudioEmbedding(
        windows=_convert(windows, return_tensors),
        starts=np.asarray(starts, dtype=np.float64) / sampling_rate,
        pooled=_convert(windows.mean(dim=0), return_tensors),
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
    clips = _as_list(audio)
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
            clip, sampling_rate=sampling_rate, padding="longest", pad_to_multiple_of=rows_per_window * patch,
            return_attention_mask=True, return_tensors="pt", **extra,
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
    "FREQUENCY_POOLINGS",
    "LongAudioEmbedding",
    "POOLINGS",
    "TimeFrameEmbedding",
    "embed_long_audio",
    "embed_time_frames",
    "extract_embeddings",
    "nearest_window",
    "row_centre_times",
    "row_hop_seconds",
    "window_starts",
]
