"""Waveform mixtures for polyphonic benchmarks: the project's one implementation (numpy only).

Each source is RMS-normalised, scaled by a gain in dB and added from its onset (the tail past the mixture end is
cut); the sum is peak-normalised. `evaluation.datasets_io.build_polyphonic_mixtures` draws the gains and onsets with
`mix_sources`; `demo_data.loader.materialize_mixture` renders the committed recipes with `mix_waveforms`;
`source_spans` gives each source's extent in the mixture (its strong label). This module
imports nothing but numpy, so `demo_data` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_LEVEL = 1e-8
"""Floor of the RMS and peak divisors: a silent source or mixture stays silent instead of dividing by zero."""


def mix_waveforms(
    sources: Sequence[np.ndarray],
    onsets: Sequence[int],
    gains_db: Sequence[float],
    length: int,
    peak: float = 0.7,
) -> np.ndarray:
    """Mix mono sources into one `(length,)` float32 waveform, in float64 arithmetic.

    Args:
        sources: 1-D waveforms (any float dtype).
        onsets: sample at which each source starts (sources running past `length` are cut).
        gains_db: each source's gain in dB, applied after RMS normalisation.
        length: mixture length in samples.
        peak: the mixture's peak absolute value after normalisation.
    """
    if not len(sources) == len(onsets) == len(gains_db):
        raise ValueError(f"got {len(sources)} sources, {len(onsets)} onsets and {len(gains_db)} gains")
    mixture = np.zeros(length, dtype=np.float64)
    for source, onset, gain in zip(sources, onsets, gains_db):
        source = np.asarray(source, dtype=np.float64)
        rms = np.sqrt(np.mean(np.square(source))) if source.size else 0.0
        onset = int(onset)
        part = source[: max(length - onset, 0)] / max(rms, MIN_LEVEL) * 10.0 ** (gain / 20.0)
        mixture[onset : onset + len(part)] += part
    max_abs = np.max(np.abs(mixture)) if length else 0.0
    return (mixture * (peak / max(max_abs, MIN_LEVEL))).astype(np.float32)


def source_spans(onsets: Sequence[int], lengths: Sequence[int], length: int) -> list[tuple[int, int]]:
    """The `[start, end)` samples each source occupies in a mixture of `length` samples: from its onset to the end of
    its own audio, cut at the mixture end (`start == end` when it starts at or after the end). These are the strong
    labels of a mixture."""
    if len(onsets) != len(lengths):
        raise ValueError(f"got {len(onsets)} onsets and {len(lengths)} lengths")
    return [(min(int(onset), length), min(int(onset) + int(size), length)) for onset, size in zip(onsets, lengths)]


def mix_sources(
    sources: Sequence[np.ndarray],
    length: int,
    rng: np.random.Generator,
    gain_db: float = 6.0,
    max_onset_fraction: float = 0.5,
    peak: float = 0.7,
) -> tuple[np.ndarray, list[int], list[float]]:
    """Mix mono sources with random gains (uniform in `[-gain_db, gain_db]` dB) and onsets (uniform in
    `[0, max_onset_fraction * length]` samples), drawn per source in that order from `rng`.

    Returns:
        The `(length,)` float32 mixture (see [`mix_waveforms`]), each source's onset in samples and its gain in dB.
    """
    onsets, gains = [], []
    for _ in sources:
        gains.append(float(rng.uniform(-gain_db, gain_db)))
        onsets.append(int(rng.integers(0, int(max_onset_fraction * length) + 1)))
    return mix_waveforms(sources, onsets, gains, length, peak), onsets, gains


__all__ = ["mix_sources", "mix_waveforms", "source_spans"]
