# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""The HEAR 2021 embedding API (https://hearbenchmark.com/hear-api.html) for SSLAM encoders.

`hear-validator sslam.modeling_sslam.hear` and hear-eval-kit's embedding runner
(`python -m heareval.embeddings.runner sslam.modeling_sslam.hear --model DIR`) run on this module unchanged.

* `load_model(model_file_path="")`: a folder saved with `save_pretrained` (any SSLAM model: an encoder, a classifier
  or a frame classifier; its encoder is used) or a Hub id, with its feature extractor. The empty string loads the
  folder or Hub id in the environment variable `SSLAM_HEAR_MODEL`, and when that is unset a randomly initialised
  base-size encoder (768 wide, 12 blocks; seed 0) with the default extractor, which is only good for checking the
  interface. Keyword options (hear-eval-kit's `--model-options`): `frequency_pooling`, `scene_pooling`,
  `window_seconds`, `hop_seconds`, `batch_size`.
* `get_timestamp_embeddings(audio, model)`: `audio` float32 `(n_sounds, n_samples)` at 16 kHz on any device ->
  embeddings `(n_sounds, n_timestamps, timestamp_embedding_size)` float32 and timestamps `(n_sounds, n_timestamps)`
  in milliseconds, both on the audio's device. One timestamp per 160 ms time row of the encoder at its centre,
  `80 + 160 k` ms, strictly increasing and evenly spaced; the rows' spans cover the audio up to its last full 25 ms
  analysis frame. Audio of any length (tested to 10 minutes) runs in overlapping windows of the extractor's
  `max_length` (`sslam.modeling_sslam.embedding.embed_time_frames`); memory is bounded by one batch of windows.
  Timestamps are float64: float32 cannot keep 160 ms steps even to 1e-3 ms (the validator's tolerance) at 10
  minutes.
* `get_scene_embeddings(audio, model)`: `(n_sounds, scene_embedding_size)`: the mean over the whole clip of every
  patch token (`scene_pooling="mean"`, the default) or of the windows' CLS tokens (`"cls"`, what the original linear
  evaluation reads).

Embedding sizes: timestamps `8 * D` (`frequency_pooling="concat"`, the default: the row's 8 frequency patches side
by side) or `D` (`"mean"`); scenes `D` (768 for the base model).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.utils import logging

from .embedding import FREQUENCY_POOLINGS, TimeFrameEmbedding, embed_time_frames

logger = logging.get_logger(__name__)

MODEL_ENVIRONMENT_VARIABLE = "SSLAM_HEAR_MODEL"
SCENE_POOLINGS = ("mean", "cls")


class SSLAMHEARModel(nn.Module):
    """An SSLAM encoder with its feature extractor and the HEAR attributes (`sample_rate`, `scene_embedding_size`,
    `timestamp_embedding_size`, all Python ints)."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_extractor,
        frequency_pooling: str = "concat",
        scene_pooling: str = "mean",
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        batch_size: int = 8,
    ):
        super().__init__()
        if frequency_pooling not in FREQUENCY_POOLINGS:
            raise ValueError(f"frequency_pooling must be one of {FREQUENCY_POOLINGS}, got {frequency_pooling!r}.")
        if scene_pooling not in SCENE_POOLINGS:
            raise ValueError(f"scene_pooling must be one of {SCENE_POOLINGS}, got {scene_pooling!r}.")
        self.encoder = encoder.eval()
        self.feature_extractor = feature_extractor
        self.frequency_pooling = frequency_pooling
        self.scene_pooling = scene_pooling
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.batch_size = int(batch_size)
        config = encoder.config
        width = config.hidden_size * (config.num_freq_patches if frequency_pooling == "concat" else 1)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.timestamp_embedding_size = int(width)
        self.scene_embedding_size = int(config.hidden_size)

    def time_frames(self, audio: torch.Tensor) -> list[TimeFrameEmbedding]:
        """Checks a HEAR batch and returns each sound's time-frame embedding (torch tensors on the CPU)."""
        if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
            raise ValueError(
                f"audio must be a torch.Tensor of shape (n_sounds, n_samples), got "
                f"{type(audio).__name__} {tuple(getattr(audio, 'shape', ()))}."
            )
        if not audio.is_floating_point():
            raise ValueError(f"audio must be float in [-1, 1], got dtype {audio.dtype}.")
        if audio.shape[0] == 0:
            raise ValueError("audio holds no sounds (n_sounds = 0).")
        return embed_time_frames(
            self.encoder, self.feature_extractor, list(audio.detach().float().cpu()), sampling_rate=self.sample_rate,
            frequency_pooling=self.frequency_pooling, window_seconds=self.window_seconds,
            hop_seconds=self.hop_seconds, batch_size=self.batch_size, return_tensors="pt",
        )


def load_model(model_file_path: str = "", **options) -> SSLAMHEARModel:
    """HEAR `load_model`: an `SSLAMHEARModel` from a saved folder or Hub id (see the module docstring for the
    default and the options)."""
    from transformers import AutoFeatureExtractor, AutoModel

    from .configuration_sslam import SSLAMConfig
    from .feature_extraction_sslam import SSLAMFeatureExtractor
    from .modeling_sslam import SSLAMModel

    source = model_file_path or os.environ.get(MODEL_ENVIRONMENT_VARIABLE, "")
    if not source:
        logger.warning(
            f"hear.load_model: no model given (and ${MODEL_ENVIRONMENT_VARIABLE} is unset): using a randomly "
            "initialised base-size SSLAM encoder, which only checks the interface."
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)
            encoder = SSLAMModel(SSLAMConfig())
        return SSLAMHEARModel(encoder, SSLAMFeatureExtractor(), **options)
    if os.path.isfile(source):
        raise ValueError(
            f"{source} is a file; load_model expects a folder written by save_pretrained (config.json, "
            "model.safetensors, preprocessor_config.json) or a Hub id."
        )
    model = AutoModel.from_pretrained(source)
    encoder = getattr(model, "sslam", model)
    return SSLAMHEARModel(encoder, AutoFeatureExtractor.from_pretrained(source), **options)


def get_timestamp_embeddings(audio: torch.Tensor, model: SSLAMHEARModel) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR: `(n_sounds, n_samples)` audio -> embeddings `(n_sounds, n_timestamps, timestamp_embedding_size)` float32
    and timestamps `(n_sounds, n_timestamps)` float64 milliseconds (row centres), on the audio's device."""
    clips = model.time_frames(audio)
    embeddings = torch.stack([clip.frames for clip in clips]).to(device=audio.device, dtype=torch.float32)
    timestamps = torch.from_numpy(clips[0].times * 1000.0).to(audio.device).expand(len(clips), -1).contiguous()
    return embeddings, timestamps


def get_scene_embeddings(audio: torch.Tensor, model: SSLAMHEARModel) -> torch.Tensor:
    """HEAR: `(n_sounds, n_samples)` audio -> `(n_sounds, scene_embedding_size)` float32 on the audio's device."""
    clips = model.time_frames(audio)
    hidden = model.scene_embedding_size
    if model.scene_pooling == "cls":
        scenes = [clip.cls for clip in clips]
    else:
        scenes = [clip.frames.reshape(len(clip.frames), -1, hidden).mean(dim=(0, 1)) for clip in clips]
    return torch.stack(scenes).to(device=audio.device, dtype=torch.float32)


__all__ = ["SSLAMHEARModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
