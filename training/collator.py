# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Batch assembly for SSLAM pre-training, run inside the DataLoader workers.

Per batch: decode each clip with `modeling_sslam.audio_io.decode_audio` (channels averaged to mono, then resampled
to 16 kHz: both are linear, so this equals resampling each channel, whereas the original training code resampled a
`(samples, channels)` array along the wrong axis for stereo files), cut it to the clip length (the original keeps the
first `max_length` frames; a random crop is available), compute the normalised filter bank, and draw the inverse block
masks of each clip (and, for Stage 2, the unmixed windows of the batch) from generators seeded by `(seed, epoch,
index)` of the items, so masks are reproducible and identical after a resume.
"""

import hashlib
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.masking import PretrainingMaskGenerator

from .data import CROP_STREAM, MASK_STREAM, WINDOW_STREAM, seeded_generator

CROP_MODES = ("start", "random")


def _split_item(item) -> tuple[object, tuple[int, int] | None]:
    """A dataset item -> (audio reference, `(epoch, index)` or None when the item carries no identity)."""
    if isinstance(item, dict) and "audio" in item:
        key = (int(item["epoch"]), int(item["index"])) if "index" in item else None
        return item["audio"], key
    return item, None


def _content_key(waveform: np.ndarray) -> tuple[int, int]:
    """Identity of an item without `(epoch, index)`: a hash of its samples (same clip -> same masks)."""
    digest = hashlib.blake2b(np.ascontiguousarray(waveform).tobytes(), digest_size=7).digest()
    return 0, int.from_bytes(digest, "little")


@dataclass
class SSLAMPretrainingCollator:
    """Turns dataset items into a pre-training batch.

    Items are `{"audio": source, "epoch": e, "index": i}` dicts (see `sslam.training.data`), dataset rows with an
    `audio` entry, or bare audio references (paths, `{"array", "sampling_rate"}` dicts, AudioDecoders). Items without
    `(epoch, index)` get masks keyed by a hash of their samples: reproducible, but the same in every epoch.

    Args:
        feature_extractor: turns waveforms into normalised filter banks of `max_length` frames.
        masking: the model config's [`PretrainingMaskGenerator`] (masks, and Stage-2 unmixed windows).
        max_length: clip length in frames (a multiple of the patch size).
        crop: `"start"` keeps the first `max_length` frames of long clips (the original); `"random"` crops seeded by
            the item.
        seed: run seed; with `(epoch, index)` it seeds each item's masks and crop.

    Returns:
        `input_values` `(B, 1, max_length, num_mel_bins)` float32; `mask` `(B * clone_batch, N)` bool (True = masked,
        item-major then clone); for Stage 2 also `unmixed_window_starts` `(num_unmixed_windows,)` int64 frame starts,
        shared by the batch.

    Build it with [`SSLAMPretrainingCollator.from_config`].
    """

    feature_extractor: SSLAMFeatureExtractor
    masking: PretrainingMaskGenerator
    max_length: int = 1024
    crop: Literal["start", "random"] = "start"
    seed: int = 0

    def __post_init__(self):
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {self.crop!r}.")
        if self.max_length % self.masking.patch_size != 0:
            raise ValueError(
                f"max_length ({self.max_length}) must be a multiple of patch_size ({self.masking.patch_size})."
            )
        self._warned_short = False

    @classmethod
    def from_config(
        cls,
        config,
        feature_extractor: SSLAMFeatureExtractor,
        seed: int = 0,
        crop: Literal["start", "random"] = "start",
    ) -> "SSLAMPretrainingCollator":
        """Collator for `config` (an `SSLAMConfig`): clip length `config.max_length`, its masking and objective."""
        masking = PretrainingMaskGenerator.from_config(config)
        return cls(feature_extractor, masking, max_length=config.max_length, crop=crop, seed=seed)

    @property
    def clip_samples(self) -> int:
        """Samples that yield exactly `max_length` filter-bank frames."""
        extractor = self.feature_extractor
        return extractor.frame_length + extractor.frame_shift * (self.max_length - 1)

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        sources, keys = zip(*(_split_item(item) for item in items))
        waveforms = [decode_audio(source, self.feature_extractor.sampling_rate) for source in sources]
        keys = [key if key is not None else _content_key(waveform) for key, waveform in zip(keys, waveforms)]
        waveforms = [self._fit_length(waveform, key) for waveform, key in zip(waveforms, keys)]
        features = self.feature_extractor(
            waveforms,
            sampling_rate=self.feature_extractor.sampling_rate,
            padding="max_length",
            max_length=self.max_length,
            return_tensors="pt",
            add_channel_dim=True,
        )
        batch = {"input_values": features["input_values"], "mask": self.draw_masks(keys)}
        if self.masking.mixes:
            batch["unmixed_window_starts"] = self.draw_window_starts(keys[0])
        return batch

    def _fit_length(self, waveform: np.ndarray, key: tuple[int, int]) -> np.ndarray:
        """Random crop to `clip_samples` (crop="random"); zero-pad clips too short for one patch of frames.

        With crop="start" long clips are left whole: the extractor keeps their first `max_length` frames.
        """
        if self.crop == "random" and waveform.shape[0] > self.clip_samples:
            generator = seeded_generator(self.seed, CROP_STREAM, *key)
            start = int(torch.randint(waveform.shape[0] - self.clip_samples + 1, (1,), generator=generator))
            return waveform[start : start + self.clip_samples]
        shortest = self.feature_extractor.min_num_samples
        if waveform.shape[0] < shortest:
            if not self._warned_short:
                warnings.warn(
                    f"A clip has {waveform.shape[0]} samples, fewer than the {shortest} of one patch of frames; "
                    "it is zero-padded (further short clips are padded silently).",
                    stacklevel=2,
                )
                self._warned_short = True
            return np.pad(waveform, (0, shortest - waveform.shape[0]))
        return waveform

    def draw_masks(self, keys: list[tuple[int, int]]) -> torch.Tensor:
        """`(len(keys) * clone_batch, N)` bool masks; item `(epoch, index)` seeds its own `clone_batch` rows."""
        time_patches = self.max_length // self.masking.patch_size
        masks = [
            self.masking.clip_masks(time_patches, seeded_generator(self.seed, MASK_STREAM, *key)) for key in keys
        ]
        return torch.cat(masks).bool()

    def draw_window_starts(self, key: tuple[int, int]) -> torch.Tensor:
        """Frame starts of the batch's unmixed windows, seeded by the first item's `(epoch, index)`."""
        return self.masking.window_starts(self.max_length, seeded_generator(self.seed, WINDOW_STREAM, *key))


__all__ = ["CROP_MODES", "SSLAMPretrainingCollator"]
