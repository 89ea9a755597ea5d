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
from sslam.modeling_sslam.pretraining_sslam import compute_block_mask_2d, draw_unmixed_window_starts

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

    Items are `{"audio": source, "epoch": e, "index": i}` dicts (see `training.data`), dataset rows with an `audio`
    entry, or bare audio references (paths, `{"array", "sampling_rate"}` dicts, AudioDecoders). Items without
    `(epoch, index)` get masks keyed by a hash of their samples: reproducible, but the same in every epoch.

    Returns:
        `input_values` `(B, 1, num_frames, num_mel_bins)` float32; `mask` `(B * clone_batch, N)` bool (True = masked,
        item-major then clone, `N = (num_frames / patch_size) * (num_mel_bins / patch_size)`); for Stage 2
        (`unmixed_window_frames` set) also `unmixed_window_starts` `(num_unmixed_windows,)` int64 frame starts,
        shared by the batch.

    Build it with [`SSLAMPretrainingCollator.from_config`].
    """

    feature_extractor: SSLAMFeatureExtractor
    num_frames: int = 1024
    clone_batch: int = 16
    mask_prob: float = 0.8
    mask_prob_adjust: float = 0.07
    mask_length: int = 5
    inverse_mask: bool = True
    patch_size: int = 16
    unmixed_window_frames: int | None = None
    num_unmixed_windows: int = 2
    crop: Literal["start", "random"] = "start"
    seed: int = 0

    def __post_init__(self):
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {self.crop!r}.")
        if self.num_frames % self.patch_size != 0:
            raise ValueError(f"num_frames ({self.num_frames}) must be a multiple of patch_size ({self.patch_size}).")
        self._warned_short = False

    @classmethod
    def from_config(
        cls,
        config,
        feature_extractor: SSLAMFeatureExtractor,
        seed: int = 0,
        crop: Literal["start", "random"] = "start",
        num_frames: int | None = None,
    ) -> "SSLAMPretrainingCollator":
        """Collator for `config` (an `SSLAMConfig`): clip length `config.max_length`, its masking and objective."""
        stage2 = config.objective == "sslam"
        return cls(
            feature_extractor=feature_extractor,
            num_frames=num_frames or config.max_length,
            clone_batch=config.clone_batch,
            mask_prob=config.mask_prob,
            mask_prob_adjust=config.mask_prob_adjust,
            mask_length=config.mask_length,
            inverse_mask=config.inverse_mask,
            patch_size=config.patch_size,
            unmixed_window_frames=config.unmixed_window_frames if stage2 else None,
            num_unmixed_windows=config.num_unmixed_windows,
            crop=crop,
            seed=seed,
        )

    @property
    def clip_samples(self) -> int:
        """Samples that yield exactly `num_frames` filter-bank frames."""
        extractor = self.feature_extractor
        return extractor.frame_length + extractor.frame_shift * (self.num_frames - 1)

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        sources, keys = zip(*(_split_item(item) for item in items))
        waveforms = [decode_audio(source, self.feature_extractor.sampling_rate) for source in sources]
        keys = [key if key is not None else _content_key(waveform) for key, waveform in zip(keys, waveforms)]
        waveforms = [self._fit_length(waveform, key) for waveform, key in zip(waveforms, keys)]
        features = self.feature_extractor(
            waveforms,
            sampling_rate=self.feature_extractor.sampling_rate,
            target_length=self.num_frames,
            return_tensors="pt",
            add_channel_dim=True,
        )
        batch = {"input_values": features["input_values"], "mask": self.draw_masks(keys)}
        if self.unmixed_window_frames is not None:
            batch["unmixed_window_starts"] = self.draw_window_starts(keys[0])
        return batch

    def _fit_length(self, waveform: np.ndarray, key: tuple[int, int]) -> np.ndarray:
        """Random crop to `clip_samples` (crop="random"); zero-pad clips too short for one patch of frames.

        With crop="start" long clips are left whole: the extractor keeps their first `num_frames` frames.
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
        masks = [
            compute_block_mask_2d(
                self.clone_batch,
                self.num_frames // self.patch_size,
                self.feature_extractor.feature_size // self.patch_size,
                mask_prob=self.mask_prob,
                mask_length=self.mask_length,
                mask_prob_adjust=self.mask_prob_adjust,
                inverse=self.inverse_mask,
                generator=seeded_generator(self.seed, MASK_STREAM, *key),
            )
            for key in keys
        ]
        return torch.cat(masks).bool()

    def draw_window_starts(self, key: tuple[int, int]) -> torch.Tensor:
        """Frame starts of the batch's unmixed windows, seeded by the first item's `(epoch, index)`."""
        return draw_unmixed_window_starts(
            self.num_frames,
            self.unmixed_window_frames,
            self.num_unmixed_windows,
            self.patch_size,
            seeded_generator(self.seed, WINDOW_STREAM, *key),
        )


__all__ = ["CROP_MODES", "SSLAMPretrainingCollator", "decode_audio"]
