# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Embeddings from an SSLAM encoder (transformers' "feature-extraction" pipeline is text-only).

`extract_embeddings` gives clip-level (CLS or mean of patch tokens) or frame-level (patch token) features for one clip
or a batch; `embed_long_audio` handles audio longer than the position table (or than one training clip) by encoding
overlapping windows and pooling them.

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .modeling_sslam import pool_tokens, token_attention_mask

POOLINGS = ("cls", "mean", "frames")


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
    **feature_kwargs,
):
    """Encodes clips and pools their tokens.

    Args:
        model: an `SSLAMModel` (or any model returning `last_hidden_state` `(B, 1 + N, D)` with CLS first).
        feature_extractor: an `SSLAMFeatureExtractor`.
        audio: a mono waveform (1-D) or a list of them, at `sampling_rate`.
        pooling: `"cls"` -> `(B, D)`; `"mean"` -> `(B, D)` mean of the real patch tokens; `"frames"` -> a list of
            `(N_i, D)` patch-token arrays (time-major, `n = t * 8 + f`), padding removed.
        return_tensors: `"np"` or `"pt"`.
        feature_kwargs: passed to the feature extractor, e.g. `padding="longest"` (each clip keeps its own length and
            batch padding is masked out) or `max_length=...`; by default clips are padded to the extractor's
            `max_length` and the padding is part of the input, as in the original feature scripts.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    clips = _as_list(audio)
    if not clips:
        raise ValueError("no audio given.")
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(clips), batch_size):
        features = feature_extractor(
            clips[start : start + batch_size], sampling_rate=sampling_rate, return_tensors="pt", **feature_kwargs
        )
        input_values = features["input_values"].to(device)
        attention_mask = features.get("attention_mask")
        attention_mask = None if attention_mask is None else attention_mask.to(device)
        hidden = model(input_values, attention_mask=attention_mask).last_hidden_state
        num_frames = input_values.shape[-2]
        batch, tokens = hidden.shape[:2]
        token_mask = token_attention_mask(attention_mask, batch, tokens - 1, num_frames, model.config)
        if pooling == "frames":
            for row in range(hidden.shape[0]):
                tokens = hidden[row, 1:]
                results.append(tokens if token_mask is None else tokens[token_mask[row, 1:]])
        else:
            results.append(pool_tokens(hidden, pooling, token_mask))
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


__all__ = ["LongAudioEmbedding", "embed_long_audio", "extract_embeddings", "window_starts"]
