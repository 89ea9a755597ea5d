"""Loader API for the committed demo audio of the ``demo_data`` package.

Every set (``pretrain``, ``events``, ``instruments``, ``soundscapes``) is a folder of this package with a
``manifest.csv`` (one row per clip: relative ``path``, ``label``, ``split``, ``num_samples``, source package and
upstream path, licence, and ``pcm_sha256``, the SHA-256 of the decoded 16 kHz mono int16 PCM). Polyphonic sets are
not stored as audio: ``mixtures/<set>_<split>.jsonl`` holds one recipe per mixture, and
:func:`materialize_mixture` turns a recipe into a waveform; ``soundscapes/<split>.jsonl`` holds strongly labelled
10 s soundscapes (events of ``events`` over the ambience backgrounds of ``soundscapes/manifest.csv``), which
:func:`materialize_soundscape` renders and :func:`soundscape_events` labels.

Reading clips needs only numpy and soundfile (mixing uses the numpy-only :mod:`sslam.evaluation.mixing`); the
dataset loaders also need ``datasets``; building the sets (``build.py``) needs more.
"""

from __future__ import annotations

import csv
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
DEMO_DIR = Path(__file__).resolve().parent
LABELLED_SETS = ("events", "instruments")
SPLITS = ("train", "test")
INT16_SCALE = 32768.0
# A 10 s real recording for quick starts (0 A.D. ambience, CC-BY-SA-3.0; see pretrain/ATTRIBUTION.md).
EXAMPLE_CLIP = DEMO_DIR / "pretrain" / "audio" / "0ad_ambient" / "0ad_ambient_0000.ogg"
# The first test soundscape rendered (CC-BY-SA-3.0; see soundscapes/ATTRIBUTION.md), and its ground truth.
EXAMPLE_SOUNDSCAPE = DEMO_DIR / "soundscapes" / "example.flac"
EXAMPLE_SOUNDSCAPE_TSV = DEMO_DIR / "soundscapes" / "example.tsv"


def set_dir(set_name: str) -> Path:
    """Folder of a committed set (``pretrain``, ``events`` or ``instruments``)."""
    path = DEMO_DIR / set_name
    if not (path / "manifest.csv").is_file():
        raise FileNotFoundError(f"no demo set {set_name!r}: {path / 'manifest.csv'} is missing")
    return path


@lru_cache(maxsize=None)
def _manifest_rows(set_name: str) -> tuple[dict[str, str], ...]:
    with open(set_dir(set_name) / "manifest.csv", newline="", encoding="utf-8") as handle:
        return tuple(csv.DictReader(handle))


def read_manifest(set_name: str, split: str | None = None) -> list[dict[str, str]]:
    """Manifest rows of a set (as string dicts), optionally only those of one split."""
    rows = _manifest_rows(set_name)
    if split is not None:
        _check_split(split)
        rows = tuple(row for row in rows if row["split"] == split)
    return [dict(row) for row in rows]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def read_pcm(path: str | Path) -> np.ndarray:
    """Decode an audio file of the demo sets to mono 16 kHz int16 PCM."""
    pcm, rate = sf.read(str(path), dtype="int16", always_2d=False)
    if rate != SAMPLE_RATE or pcm.ndim != 1:
        raise ValueError(f"{path}: expected mono {SAMPLE_RATE} Hz audio, got {rate} Hz with shape {pcm.shape}")
    return pcm


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM to float32 in [-1, 1)."""
    return pcm.astype(np.float32) / INT16_SCALE


def pcm_sha256(pcm: np.ndarray) -> str:
    """SHA-256 of int16 PCM as little-endian bytes (the manifests' ``pcm_sha256``)."""
    return hashlib.sha256(np.ascontiguousarray(pcm, dtype="<i2").tobytes()).hexdigest()


def read_clip(set_name: str, relative_path: str) -> np.ndarray:
    """One clip of a set as a float32 16 kHz waveform."""
    return pcm_to_float(read_pcm(set_dir(set_name) / relative_path))


def load_pretrain_files() -> list[Path]:
    """Absolute paths of the unlabelled pre-training chunks (16 kHz mono, at most 10 s each)."""
    root = set_dir("pretrain")
    return [root / row["path"] for row in read_manifest("pretrain")]


def class_names(set_name: str) -> list[str]:
    """Sorted class names of a labelled set; index i is label id i everywhere in this module."""
    _check_labelled(set_name)
    return sorted({row["label"] for row in read_manifest(set_name)})


def _check_labelled(set_name: str) -> None:
    if set_name not in LABELLED_SETS:
        raise ValueError(f"labelled sets are {LABELLED_SETS}, got {set_name!r}")


def load_labelled_dataset(set_name: str, split: str):
    """One split of ``events`` or ``instruments`` in the project's labelled-audio schema: a ``datasets.Dataset`` with
    ``audio`` (``{"array", "sampling_rate"}``, float32 at 16 kHz, stored in the table: no audio codec needed),
    ``label`` (ClassLabel over `class_names`) and ``id``."""
    from sslam.evaluation.datasets_io import from_waveforms

    _check_labelled(set_name)
    names = class_names(set_name)
    rows = read_manifest(set_name, split)
    dataset = from_waveforms(
        [read_clip(set_name, row["path"]) for row in rows], [names.index(row["label"]) for row in rows], names
    )
    return dataset.add_column("id", [row["id"] for row in rows])


def read_mixture_recipes(set_name: str, split: str) -> list[dict]:
    """Mixture recipes (one dict per JSONL line) built from the clips of one split of a labelled set."""
    _check_labelled(set_name)
    _check_split(split)
    path = DEMO_DIR / "mixtures" / f"{set_name}_{split}.jsonl"
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def materialize_mixture(recipe: Mapping, clips: Mapping[str, np.ndarray]) -> np.ndarray:
    """Render one mixture recipe into a float32 waveform, deterministically.

    Each component clip (looked up by id in ``clips``, float waveforms at 16 kHz) is RMS-normalised,
    scaled by ``gain_db``, and added starting at sample ``onset`` (clips running past the end are cut).
    The sum is then scaled so its peak equals ``recipe["peak"]``. The mixing itself is
    `evaluation.mixing.mix_waveforms` (numpy only), the same code as the evaluation's polyphonic benchmarks.
    """
    from sslam.evaluation.mixing import mix_waveforms

    components = recipe["components"]
    return mix_waveforms(
        [clips[component["clip"]] for component in components],
        [int(component["onset"]) for component in components],
        [component["gain_db"] for component in components],
        int(recipe["num_samples"]),
        recipe["peak"],
    )


def load_mixture_dataset(set_name: str, split: str):
    """The polyphonic mixtures of one split in the labelled-audio schema: ``audio`` (3 s mixtures), ``labels``
    (List(ClassLabel) of the source classes) and ``id``. Test mixtures are made only from test clips and train
    mixtures only from train clips."""
    from sslam.evaluation.datasets_io import from_waveforms

    names = class_names(set_name)
    clips = {row["id"]: read_clip(set_name, row["path"]) for row in read_manifest(set_name, split)}
    recipes = read_mixture_recipes(set_name, split)
    dataset = from_waveforms(
        [materialize_mixture(recipe, clips) for recipe in recipes],
        [sorted(names.index(label) for label in recipe["labels"]) for recipe in recipes],
        names,
    )
    return dataset.add_column("id", [recipe["id"] for recipe in recipes])


def read_soundscape_recipes(split: str) -> list[dict]:
    """Soundscape recipes of one split: events of that split of ``events`` over backgrounds of the same split."""
    _check_split(split)
    with open(DEMO_DIR / "soundscapes" / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@lru_cache(maxsize=None)
def _clip_paths(set_name: str) -> dict[str, str]:
    return {row["id"]: row["path"] for row in read_manifest(set_name)}


@lru_cache(maxsize=None)
def _clip_lengths(set_name: str) -> dict[str, int]:
    return {row["id"]: int(row["num_samples"]) for row in read_manifest(set_name)}


def _clip_by_id(set_name: str, clip_id: str) -> np.ndarray:
    paths = _clip_paths(set_name)
    if clip_id not in paths:
        raise KeyError(f"no clip {clip_id!r} in the {set_name} set")
    return read_clip(set_name, paths[clip_id])


def materialize_soundscape(recipe: Mapping, clips: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Render one soundscape recipe into a float32 waveform, deterministically: the background (RMS-normalised,
    ``gain_db`` 0) plus each event clip RMS-normalised, scaled by its ``gain_db`` (the event-to-background ratio) and
    added from its ``onset`` sample, peak-normalised to ``recipe["peak"]`` (`evaluation.mixing.mix_waveforms`).
    ``clips`` maps event clip ids to waveforms (default: read from the ``events`` set)."""
    from sslam.evaluation.mixing import mix_waveforms

    events = recipe["events"]
    sources = [_clip_by_id("soundscapes", recipe["background"]["clip"])]
    sources += [clips[e["clip"]] if clips is not None else _clip_by_id("events", e["clip"]) for e in events]
    return mix_waveforms(
        sources,
        [0] + [int(event["onset"]) for event in events],
        [recipe["background"]["gain_db"]] + [event["gain_db"] for event in events],
        int(recipe["num_samples"]),
        recipe["peak"],
    )


def soundscape_events(recipe: Mapping) -> list:
    """The strong labels of a soundscape recipe as `sslam.evaluation.strong_labels.Event`s (seconds): each event clip
    from its onset to the end of its own audio, cut at the soundscape's end (`evaluation.mixing.source_spans`)."""
    from sslam.evaluation.mixing import source_spans
    from sslam.evaluation.strong_labels import Event

    lengths = _clip_lengths("events")
    rate = int(recipe["sample_rate"])
    spans = source_spans(
        [int(event["onset"]) for event in recipe["events"]],
        [lengths[event["clip"]] for event in recipe["events"]],
        int(recipe["num_samples"]),
    )
    return [
        Event(start / rate, end / rate, event["label"])
        for (start, end), event in zip(spans, recipe["events"])
        if end > start
    ]


def load_soundscape_dataset(split: str, limit: int | None = None):
    """The strongly labelled soundscapes of one split (the first ``limit`` recipes, default all) in the project's
    strongly labelled layout: ``audio`` (10 s, 16 kHz), ``events``, ``labels`` (ClassLabel over the 17 event
    classes) and ``id``. Test soundscapes use only test clips and test backgrounds."""
    from sslam.evaluation.datasets_io import from_strong_labels

    recipes = read_soundscape_recipes(split)[:limit]
    clips = {row["id"]: read_clip("events", row["path"]) for row in read_manifest("events", split)}
    dataset = from_strong_labels(
        [materialize_soundscape(recipe, clips) for recipe in recipes],
        [soundscape_events(recipe) for recipe in recipes],
        class_names("events"),
    )
    return dataset.add_column("id", [recipe["id"] for recipe in recipes])


def verify_manifest(set_name: str, ids: Iterable[str] | None = None) -> list[str]:
    """Decode the clips of a set (all, or only ``ids``) and return the ids whose PCM hash or length differs."""
    rows = read_manifest(set_name)
    if ids is not None:
        wanted = set(ids)
        rows = [row for row in rows if row["id"] in wanted]
    root = set_dir(set_name)
    failures = []
    for row in rows:
        pcm = read_pcm(root / row["path"])
        if len(pcm) != int(row["num_samples"]) or pcm_sha256(pcm) != row["pcm_sha256"]:
            failures.append(row["id"])
    return failures
