# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Batch assembly for SSLAM pre-training, run inside the DataLoader workers.

Per batch: decode each clip with `modeling_sslam.audio_io.decode_audio` (channels averaged to mono, then resampled
to 16 kHz: both are linear, so this equals resampling each channel, whereas the original training code resampled a
`(samples, channels)` array along the wrong axis for stereo files), cut it to the clip length (the original keeps the
first `max_length` frames; a random crop is available), compute the normalised filter bank, and draw the inverse block
masks of each clip (and, for Stage 2, the unmixed windows of the batch) from generators seeded by `(seed, epoch,
index)` of the items, so masks are reproducible and identical after a resume.

Bad clips do not stop a run: a clip that cannot be decoded, or is empty, non-finite or far out of range
(`data.decode_usable_clip`), is left out of its batch with a warning naming it, and the batch reports it (see
[`SSLAMPretrainingCollator`]); the trainer counts it and `callbacks.SkippedClipsCallback` enforces the limit.
"""

import hashlib
import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.masking import PretrainingMaskGenerator

from .data import (
    CROP_STREAM,
    DECODE_ERRORS,
    MASK_STREAM,
    MAX_ABS_AMPLITUDE,
    WINDOW_STREAM,
    UnusableClipError,
    decode_usable_clip,
    describe_source,
    seeded_generator,
)

logger = logging.getLogger(__name__)

CROP_MODES = ("start", "random")


def _split_item(item, position: int) -> tuple[object, tuple[int, int] | None, str, str | None]:
    """A dataset item -> (audio reference, `(epoch, index)` or None when the item carries no identity, a name for
    messages, the reader's error for a clip it could not read or None)."""
    if isinstance(item, dict) and "audio" in item:
        key = (int(item["epoch"]), int(item["index"])) if "index" in item else None
        name = item.get("name") or describe_source(item["audio"], item.get("index", position))
        return item["audio"], key, name, item.get("error")
    return item, None, describe_source(item, position), None


def _content_key(waveform: np.ndarray) -> tuple[int, int]:
    """Identity of an item without `(epoch, index)`: a hash of its samples (same clip -> same masks)."""
    digest = hashlib.blake2b(np.ascontiguousarray(waveform).tobytes(), digest_size=7).digest()
    return 0, int.from_bytes(digest, "little")


@dataclass
class SSLAMPretrainingCollator:
    """Turns dataset items into a pre-training batch.

    Items are `{"audio": source, "epoch": e, "index": i}` dicts (see `sslam.training.data`; optionally with a `name`
    for messages and an `error` from a reader that could not read the clip), dataset rows with an `audio` entry, or
    bare audio references (paths, `{"array", "sampling_rate"}` dicts, AudioDecoders). Items without `(epoch, index)`
    get masks keyed by a hash of their samples: reproducible, but the same in every epoch.

    Bad clips (undecodable, empty, non-finite, peak above `max_abs_amplitude`) are skipped with a warning naming them;
    the batch then also holds `skipped_clips` (`"name: reason"` strings) and `num_clips` (items given). When every
    clip of a batch is skipped (for Stage 2, which mixes clips in pairs: all but one), the batch holds silent
    placeholder clips instead (so that every process still takes part in the step; a lone usable Stage-2 clip is
    counted as skipped too) and the trainer gives it zero weight. With `skip_bad_clips=False` a bad clip raises an
    `UnusableClipError` naming it.

    Args:
        feature_extractor: turns waveforms into normalised filter banks of `max_length` frames.
        masking: the model config's [`PretrainingMaskGenerator`] (masks, and Stage-2 unmixed windows).
        max_length: clip length in frames (a multiple of the patch size).
        crop: `"start"` keeps the first `max_length` frames of long clips (the original); `"random"` crops seeded by
            the item.
        seed: run seed; with `(epoch, index)` it seeds each item's masks and crop.
        skip_bad_clips: skip unusable clips (True) or raise (False).
        max_abs_amplitude: clips peaking above this are unusable.

    Returns:
        `input_values` `(B, 1, max_length, num_mel_bins)` float32 (B = the usable clips); `mask` `(B * clone_batch,
        N)` bool (True = masked, item-major then clone); for Stage 2 also `unmixed_window_starts`
        `(num_unmixed_windows,)` int64 frame starts, shared by the batch; `skipped_clips` and `num_clips` when a clip
        was skipped.

    Build it with [`SSLAMPretrainingCollator.from_config`].
    """

    feature_extractor: SSLAMFeatureExtractor
    masking: PretrainingMaskGenerator
    max_length: int = 1024
    crop: Literal["start", "random"] = "start"
    seed: int = 0
    skip_bad_clips: bool = True
    max_abs_amplitude: float = MAX_ABS_AMPLITUDE

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
        **kwargs,
    ) -> "SSLAMPretrainingCollator":
        """Collator for `config` (an `SSLAMConfig`): clip length `config.max_length`, its masking and objective;
        `kwargs` set the other fields (`skip_bad_clips`, `max_abs_amplitude`)."""
        masking = PretrainingMaskGenerator.from_config(config)
        return cls(feature_extractor, masking, max_length=config.max_length, crop=crop, seed=seed, **kwargs)

    @property
    def clip_samples(self) -> int:
        """Samples that yield exactly `max_length` filter-bank frames."""
        extractor = self.feature_extractor
        return extractor.frame_length + extractor.frame_shift * (self.max_length - 1)

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        features, keys, names, skipped = [], [], [], []
        for position, item in enumerate(items):
            source, key, name, error = _split_item(item, position)
            try:
                if error is not None:
                    raise UnusableClipError(error)
                clip_features, key = self._clip_features(source, key)
            except DECODE_ERRORS as problem:
                if not self.skip_bad_clips:
                    raise UnusableClipError(f"{name}: {problem}") from problem
                logger.warning("skipping clip %s: %s", name, problem)
                skipped.append(f"{name}: {problem}")
                continue
            features.append(clip_features)
            keys.append(key)
            names.append(name)
        needed = 2 if self.masking.mixes else 1  # Stage 2 mixes every clip with another one
        if len(keys) < needed:  # too few usable clips: a silent placeholder batch that the trainer weighs 0
            skipped += [f"{name}: usable, but left without a clip to mix with" for name in names]
            placeholder, key = self._clip_features(np.zeros(self.clip_samples, dtype=np.float32), None)
            features, keys = [placeholder] * needed, [key] * needed
        batch = {"input_values": torch.cat(features), "mask": self.draw_masks(keys)}
        if self.masking.mixes:
            batch["unmixed_window_starts"] = self.draw_window_starts(keys[0])
        if skipped:
            batch.update(skipped_clips=skipped, num_clips=len(items))
        return batch

    def _clip_features(self, source, key: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int]]:
        """`(1, 1, max_length, num_mel_bins)` features of one clip and its key; raises `UnusableClipError` (or what
        decoding raises) for a clip that cannot be used."""
        waveform = decode_usable_clip(source, self.feature_extractor.sampling_rate, self.max_abs_amplitude)
        key = key if key is not None else _content_key(waveform)
        features = self.feature_extractor(
            self._fit_length(waveform, key),
            sampling_rate=self.feature_extractor.sampling_rate,
            padding="max_length",
            max_length=self.max_length,
            return_tensors="pt",
            add_channel_dim=True,
        )
        return features["input_values"], key

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


__all__ = ["CROP_MODES", "SSLAMPretrainingCollator", "UnusableClipError"]
