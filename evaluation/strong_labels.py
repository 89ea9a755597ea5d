"""Strong labels: sound events with onset and offset, their DCASE TSV files and their frame targets.

An event is `(onset, offset, label)` in seconds, `0 <= onset < offset` (`Event`; detections also carry a `score`).
In a `datasets.Dataset` (the strongly labelled layout of `sslam.evaluation.datasets_io`) a clip's events are one
``events`` value: a list of ``{"onset": float64, "offset": float64, "label": ClassLabel}`` dicts (`events_feature`).

DCASE TSV (DESED / DCASE task 4): tab-separated with a header. Ground truth is ``filename onset offset
event_label`` (seconds, one row per event; a clip without events is a row with empty onset, offset and label);
system output has the same columns in any order, here with an extra ``score`` column. `read_dcase_tsv` reads
columns by name, so both layouts (and the baseline's ``event_label onset offset filename``) are read.

Frame targets (`events_to_frame_targets`): time row r of the model (16 filter-bank frames, hop h = 0.16 s) spans
[r h, (r + 1) h). It is active for a class when the class's events, merged where they overlap, cover at least half
of that span (h / 2 = 80 ms). Events shorter than h / 2 that straddle a row boundary can therefore activate no row.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, List, Value

TSV_COLUMNS = ("filename", "onset", "offset", "event_label")
COVERAGE_FRACTION = 0.5
"""Fraction of a row's span that a class's events must cover for the row to be active for that class."""
_TOLERANCE = 1e-9  # seconds: float noise in onset/offset arithmetic


@dataclass(frozen=True)
class Event:
    """One sound event: `onset` and `offset` in seconds, its class `label` and, for detections, a `score`."""

    onset: float
    offset: float
    label: str
    score: float | None = None

    def __post_init__(self):
        if not (math.isfinite(self.onset) and math.isfinite(self.offset)) or not 0.0 <= self.onset < self.offset:
            raise ValueError(f"an event needs 0 <= onset < offset (seconds), got {self.onset} .. {self.offset} "
                             f"({self.label!r}).")


def events_feature(label_names: Sequence[str]) -> List:
    """The `datasets` feature of an ``events`` column: a list of ``{"onset", "offset", "label"}`` per clip."""
    return List({"onset": Value("float64"), "offset": Value("float64"), "label": ClassLabel(names=list(label_names))})


def merge_events(events: Iterable[Event]) -> list[Event]:
    """Events of the same class that overlap or touch merged into one (sorted by label, then onset). Scores are
    dropped. PSDS and the frame targets need the union of each class's events."""
    merged: list[Event] = []
    for event in sorted(events, key=lambda e: (e.label, e.onset, e.offset)):
        last = merged[-1] if merged else None
        if last is not None and last.label == event.label and event.onset <= last.offset:
            merged[-1] = Event(last.onset, max(last.offset, event.offset), last.label)
        else:
            merged.append(Event(event.onset, event.offset, event.label))
    return merged


def events_to_frame_targets(
    events: Iterable[Event], num_rows: int, hop_seconds: float, label_names: Sequence[str]
) -> np.ndarray:
    """`(num_rows, C)` float32 0/1 targets: row r (span [r h, (r + 1) h)) is active for a class when the class's
    merged events cover at least `COVERAGE_FRACTION` of the span."""
    index = {name: i for i, name in enumerate(label_names)}
    coverage = np.zeros((num_rows, len(label_names)), dtype=np.float64)
    starts = np.arange(num_rows, dtype=np.float64) * hop_seconds
    for event in merge_events(events):
        if event.label not in index:
            raise ValueError(f"event label {event.label!r} is not among the classes {list(label_names)}")
        overlap = np.minimum(event.offset, starts + hop_seconds) - np.maximum(event.onset, starts)
        coverage[:, index[event.label]] += np.clip(overlap, 0.0, None)
    return (coverage >= COVERAGE_FRACTION * hop_seconds - _TOLERANCE).astype(np.float32)


def audio_id(filename: str) -> str:
    """The audio id of a TSV ``filename``: its stem (``a/b.wav`` -> ``b``), as the DCASE tools key clips."""
    return Path(filename).stem


def read_dcase_tsv(path: str | os.PathLike) -> dict[str, list[Event]]:
    """``{filename: [Event, ...]}`` from a DCASE TSV (columns found by name; ``score`` is read when present).

    A row with empty onset, offset and label lists a clip without events (its list is empty).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [column for column in TSV_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: a DCASE TSV needs the columns {list(TSV_COLUMNS)}; missing {missing} "
                             f"(header {reader.fieldnames})")
        events: dict[str, list[Event]] = {}
        for line, row in enumerate(reader, start=2):
            filename = (row["filename"] or "").strip()
            if not filename:
                raise ValueError(f"{path}, line {line}: empty filename")
            values = [(row[column] or "").strip() for column in ("onset", "offset", "event_label")]
            clip_events = events.setdefault(filename, [])
            if not any(values):
                continue
            if not all(values):
                raise ValueError(f"{path}, line {line}: onset, offset and event_label must all be given or all empty")
            score = (row.get("score") or "").strip()
            try:
                event = Event(float(values[0]), float(values[1]), values[2], float(score) if score else None)
            except ValueError as error:
                raise ValueError(f"{path}, line {line}: {error}") from None
            clip_events.append(event)
    return events


def write_dcase_tsv(
    path: str | os.PathLike, events: Mapping[str, Sequence[Event]], *, with_scores: bool = False
) -> Path:
    """Write ``{filename: events}`` as a DCASE TSV (``filename onset offset event_label`` [``score``], seconds with 3
    decimals, files in the given order, events by onset); a clip without events gets an empty row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = TSV_COLUMNS + (("score",) if with_scores else ())
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for filename, clip_events in events.items():
            if not clip_events:
                writer.writerow([filename] + [""] * (len(columns) - 1))
            for event in sorted(clip_events, key=lambda e: (e.onset, e.offset, e.label)):
                row = [filename, f"{event.onset:.3f}", f"{event.offset:.3f}", event.label]
                if with_scores:
                    row.append("" if event.score is None else f"{event.score:.4f}")
                writer.writerow(row)
    return path


__all__ = [
    "COVERAGE_FRACTION",
    "Event",
    "TSV_COLUMNS",
    "audio_id",
    "events_feature",
    "events_to_frame_targets",
    "merge_events",
    "read_dcase_tsv",
    "write_dcase_tsv",
]
