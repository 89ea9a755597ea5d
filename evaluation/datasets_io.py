"""Labelled audio as `datasets.Dataset`: the project's one schema, its loaders and a polyphonic benchmark builder.

The schema, as `datasets` users know it: an ``audio`` column and either

* ``label``: a `ClassLabel` (single-label data), or
* ``labels``: a `List(ClassLabel)` of class ids per clip (multi-label data; `multi_hot` turns it into (N, C)).

Loaders from files give a `datasets.Audio` feature over absolute paths; in-memory data (`from_waveforms`, the demo
data, mixtures) gives ``{"array", "sampling_rate"}`` values. ``decode=False`` keeps file values as
``{"path", "bytes"}`` dicts; `sslam.modeling_sslam.audio_io.decode_audio` reads every form with soundfile, which needs
neither torchcodec nor FFmpeg (which `datasets` 5 requires for decoding).

Strongly labelled data (sound event detection) adds an ``events`` column to the multi-label layout: per clip a list
of ``{"onset": float64 s, "offset": float64 s, "label": ClassLabel}`` (`strong_labels.events_feature`), with
``labels`` the sorted classes that occur in it, so every clip-level tool reads the same dataset. `from_strong_labels`
builds one in memory, `load_dcase_tsv_dataset` from a DCASE TSV and its audio folder, `dataset_events` reads the
events back as `strong_labels.Event` lists, and the mixtures of `build_polyphonic_mixtures` carry theirs.
"""

from __future__ import annotations

import csv
import os
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, List, Value

from sslam.evaluation.mixing import mix_sources, source_spans
from sslam.evaluation.strong_labels import Event, audio_id, events_feature, read_dcase_tsv
from sslam.modeling_sslam.audio_io import decode_audio

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aif", ".aiff"})
SAMPLING_RATE = 16_000
# Waveforms kept in the table itself (no torchcodec needed to read them back).
IN_MEMORY_AUDIO = {"array": List(Value("float32")), "sampling_rate": Value("int32")}


# -------------------------------------------------------------------------------------------------------- labels


def label_column(dataset: Dataset) -> str:
    """Name of the label column: ``label`` (single-label) or ``labels`` (multi-label)."""
    for name in ("label", "labels"):
        if name in dataset.column_names:
            return name
    raise ValueError(f"dataset has no 'label' or 'labels' column (columns: {dataset.column_names})")


def is_multilabel(dataset: Dataset) -> bool:
    return label_column(dataset) == "labels"


def label_names(dataset: Dataset) -> list[str] | None:
    """Class names from the label column's `ClassLabel` feature, or None."""
    feature = dataset.features[label_column(dataset)]
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def multi_hot(label_ids: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Lists of class ids -> (N, C) float32 multi-hot matrix."""
    matrix = np.zeros((len(label_ids), num_classes), dtype=np.float32)
    for row, ids in enumerate(label_ids):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"row {row} has class ids {ids.tolist()} outside [0, {num_classes})")
        matrix[row, ids] = 1.0
    return matrix


def label_targets(dataset: Dataset) -> np.ndarray:
    """Targets of a dataset: (N,) int64 class ids (``label``) or (N, C) float32 multi-hot (``labels``).

    A ``labels`` column may hold lists of class ids (`List(ClassLabel)`, as the loaders here produce) or
    ready-made multi-hot rows (`List(Value)` of equal length C).
    """
    name = label_column(dataset)
    values = dataset[name]
    if name == "label":
        return np.asarray(values, dtype=np.int64)
    feature = dataset.features[name].feature
    if isinstance(feature, ClassLabel):
        return multi_hot(values, feature.num_classes)
    matrix = np.asarray(values, dtype=np.float32)
    if matrix.ndim != 2 or not np.isin(matrix, (0.0, 1.0)).all():
        raise ValueError("a 'labels' column of plain values must hold multi-hot rows of equal length")
    return matrix


# ------------------------------------------------------------------------------------------------------- loaders


def from_waveforms(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int] | Sequence[Sequence[int]],
    label_names: Sequence[str],
    sampling_rate: int = SAMPLING_RATE,
) -> Dataset:
    """In-memory dataset of 1-D waveforms: integer ``labels`` give a ``label`` column, lists of ids a ``labels``
    column; ``audio`` values are ``{"array", "sampling_rate"}`` dicts."""
    if len(waveforms) != len(labels):
        raise ValueError(f"{len(waveforms)} waveforms but {len(labels)} labels")
    multilabel = len(labels) > 0 and isinstance(labels[0], (list, tuple, np.ndarray))
    label_feature = List(ClassLabel(names=list(label_names))) if multilabel else ClassLabel(names=list(label_names))
    audio = [{"array": np.asarray(w, dtype=np.float32), "sampling_rate": sampling_rate} for w in waveforms]
    features = Features({"audio": IN_MEMORY_AUDIO, "labels" if multilabel else "label": label_feature})
    return Dataset.from_dict({"audio": audio, "labels" if multilabel else "label": list(labels)}, features=features)


def from_strong_labels(
    waveforms: Sequence[np.ndarray],
    events: Sequence[Sequence[Event]],
    label_names: Sequence[str],
    sampling_rate: int = SAMPLING_RATE,
) -> Dataset:
    """In-memory strongly labelled dataset: ``audio`` (``{"array", "sampling_rate"}``), ``events`` and ``labels``
    (the sorted classes of each clip's events)."""
    if len(waveforms) != len(events):
        raise ValueError(f"{len(waveforms)} waveforms but {len(events)} event lists")
    audio = [{"array": np.asarray(w, dtype=np.float32), "sampling_rate": sampling_rate} for w in waveforms]
    return _strong_dataset(audio, IN_MEMORY_AUDIO, events, label_names, {})


def load_dcase_tsv_dataset(
    tsv_path: str | os.PathLike,
    audio_dir: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    decode: bool = True,
) -> Dataset:
    """A strongly labelled dataset from a DCASE ground-truth TSV (`strong_labels.read_dcase_tsv`) and the folder of
    its audio files (``filename`` relative to ``audio_dir``): ``audio`` (`datasets.Audio` over absolute paths),
    ``events``, ``labels`` and ``filename``. ``label_names`` fixes the class order (default: sorted labels found)."""
    events = read_dcase_tsv(tsv_path)
    if not events:
        raise ValueError(f"{tsv_path} lists no files")
    paths = [Path(audio_dir) / filename for filename in events]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} audio file(s) of {tsv_path} not found, e.g. {missing[0]}")
    found = sorted({event.label for clip in events.values() for event in clip})
    names = list(label_names) if label_names is not None else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown[:10]} of {tsv_path} are not among the class names")
    audio = [str(path.resolve()) for path in paths]
    return _strong_dataset(audio, Audio(decode=decode), list(events.values()), names, {"filename": list(events)})


def _strong_dataset(audio: list, audio_feature, events: Sequence[Sequence[Event]], names, extra: dict) -> Dataset:
    index = {name: i for i, name in enumerate(names)}
    rows = []
    for clip in events:
        unknown = sorted({event.label for event in clip} - set(index))
        if unknown:
            raise ValueError(f"event labels {unknown} are not among the class names")
        rows.append([{"onset": e.onset, "offset": e.offset, "label": index[e.label]} for e in clip])
    labels = [sorted({event["label"] for event in clip}) for clip in rows]
    features = {"audio": audio_feature, "events": events_feature(names), "labels": List(ClassLabel(names=list(names)))}
    features.update({key: Value("string") for key in extra})
    columns = {"audio": audio, "events": rows, "labels": labels, **extra}
    return Dataset.from_dict(columns, features=Features(features))


def is_strongly_labelled(dataset: Dataset) -> bool:
    return "events" in dataset.column_names


def dataset_events(dataset: Dataset) -> list[list[Event]]:
    """The ``events`` column as one `Event` list per clip, labels as class names."""
    if not is_strongly_labelled(dataset):
        raise ValueError(f"dataset has no 'events' column (columns: {dataset.column_names})")
    names = dataset.features["events"].feature["label"].names
    return [
        [Event(float(e["onset"]), float(e["offset"]), names[e["label"]]) for e in clip] for clip in dataset["events"]
    ]


def dataset_audio_ids(dataset: Dataset) -> list[str]:
    """One id per clip for metrics and TSV files: the ``id`` column, else the stem of ``filename``, else the row."""
    if "id" in dataset.column_names:
        return [str(value) for value in dataset["id"]]
    if "filename" in dataset.column_names:
        return [audio_id(value) for value in dataset["filename"]]
    return [f"clip_{index:06d}" for index in range(len(dataset))]


def load_audiofolder(root: str | os.PathLike, *, decode: bool = True) -> Dataset | DatasetDict:
    """Load ``root/<label>/<file>`` as a `Dataset` or ``root/<split>/<label>/<file>`` as a `DatasetDict`.

    Class names are the sorted label-folder names (shared by all splits); files are sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist")
    files = _audio_files_by_label(root)
    if files:
        return _audiofolder_split(files, sorted(files), decode)
    splits = {d.name: _audio_files_by_label(d) for d in sorted(root.iterdir()) if d.is_dir()}
    splits = {split: files for split, files in splits.items() if files}
    if not splits:
        raise ValueError(f"no audio files found under {root}/<label>/ or {root}/<split>/<label>/")
    names = sorted({label for files in splits.values() for label in files})
    return DatasetDict({split: _audiofolder_split(files, names, decode) for split, files in splits.items()})


def _audio_files_by_label(folder: Path) -> dict[str, list[Path]]:
    """``{label folder name: sorted audio files}`` for the sub-folders of ``folder`` that hold audio."""
    files = {}
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        audio = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
        if audio:
            files[label_dir.name] = audio
    return files


def _audiofolder_split(files: dict[str, list[Path]], names: list[str], decode: bool) -> Dataset:
    rows = [(str(path.resolve()), label) for label, paths in files.items() for path in paths]
    return _single_label_dataset([path for path, _ in rows], [label for _, label in rows], names, decode)


def load_manifest(
    path: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    label_separator: str = ",",
    label_names: Sequence[str] | None = None,
    decode: bool = True,
) -> Dataset:
    """Load a CSV or TSV manifest with a header row: ``path`` and either ``label`` or ``labels``.

    A ``labels`` cell lists class names separated by ``label_separator`` (quote it in a CSV). Relative paths are
    resolved against ``root`` (default: the manifest's folder). ``label_names`` fixes the class order
    (default: sorted names found in the manifest).
    """
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f, delimiter=delimiter))
    if not records:
        raise ValueError(f"manifest {path} has no rows")
    columns = set(records[0])
    if "path" not in columns or not {"label", "labels"} & columns:
        raise ValueError(f"manifest {path} needs a 'path' and a 'label' or 'labels' column, got {sorted(columns)}")
    base = Path(root) if root is not None else path.parent
    paths = [str((base / r["path"]).resolve()) for r in records]
    if "labels" in columns:
        label_lists = [[s.strip() for s in r["labels"].split(label_separator) if s.strip()] for r in records]
        return _multi_label_dataset(paths, label_lists, label_names, decode)
    labels = [r["label"].strip() for r in records]
    return _single_label_dataset(paths, labels, list(label_names or sorted(set(labels))), decode)


def load_fairseq_manifest(
    tsv_path: str | os.PathLike,
    lbl_path: str | os.PathLike | None = None,
    *,
    label_descriptors: str | os.PathLike | None = None,
    decode: bool = True,
) -> Dataset:
    """Load an original EAT/SSLAM manifest pair as a multi-label `Dataset`.

    Args:
        tsv_path: first line the root folder, then ``relative_path<TAB>size`` lines.
        lbl_path: ``name<TAB>label1,label2,...`` lines aligned with the tsv entries (default: the tsv path with a
            ``.lbl`` suffix).
        label_descriptors: ``index,label,display name`` CSV (AudioSet ``labels.csv`` / ``label_descriptors.csv``)
            giving the class order and display names (default: ``label_descriptors.csv`` next to the tsv when it
            exists, else the sorted labels found in the ``.lbl`` file).
    """
    tsv_path = Path(tsv_path)
    lines = tsv_path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{tsv_path} is empty")
    root = Path(lines[0].strip())
    paths = [str(root / line.split("\t")[0]) for line in lines[1:] if line.strip()]
    lbl_path = Path(lbl_path) if lbl_path is not None else tsv_path.with_suffix(".lbl")
    lbl_lines = [line for line in lbl_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    label_lists = [line.split()[1].split(",") for line in lbl_lines]
    if len(label_lists) != len(paths):
        raise ValueError(f"{lbl_path} has {len(label_lists)} entries but {tsv_path} lists {len(paths)} files")
    if label_descriptors is None and (tsv_path.parent / "label_descriptors.csv").exists():
        label_descriptors = tsv_path.parent / "label_descriptors.csv"
    names = _read_label_descriptors(label_descriptors) if label_descriptors is not None else None
    return _multi_label_dataset(paths, label_lists, names, decode)


def _read_label_descriptors(path: str | os.PathLike) -> list[str]:
    """``index,label[,display name]`` rows (no header) -> label ids ordered by index."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    by_index = {int(row[0]): row[1] for row in rows}
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: class indices must be 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def _single_label_dataset(paths: list[str], labels: list[str], names: list[str], decode: bool) -> Dataset:
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the class names")
    features = Features({"audio": Audio(decode=decode), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"audio": paths, "label": labels}, features=features)


def _multi_label_dataset(
    paths: list[str], label_lists: list[list[str]], names: Sequence[str] | None, decode: bool
) -> Dataset:
    names = list(names) if names is not None else sorted({label for labels in label_lists for label in labels})
    unknown = sorted({label for labels in label_lists for label in labels} - set(names))
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not among the class names")
    features = Features({"audio": Audio(decode=decode), "labels": List(ClassLabel(names=names))})
    return Dataset.from_dict({"audio": paths, "labels": label_lists}, features=features)


# --------------------------------------------------------------------------------------- polyphonic benchmark


def build_polyphonic_mixtures(
    dataset: Dataset | DatasetDict,
    *,
    num_sources: int | tuple[int, int] = (2, 3),
    num_mixtures: int | None = None,
    duration_s: float | None = None,
    gain_db: float = 6.0,
    max_onset_fraction: float = 0.5,
    peak: float = 0.7,
    seed: int = 0,
    sampling_rate: int = SAMPLING_RATE,
    output_dir: str | os.PathLike | None = None,
) -> Dataset | DatasetDict:
    """Turn a single-label dataset into a multi-label benchmark of seeded k-source mixtures.

    Each mixture draws k (fixed, or uniform in the inclusive ``num_sources`` range) distinct classes of its split
    and one clip per class. Each source is RMS-normalised, scaled by a gain uniform in ``[-gain_db, +gain_db]`` dB,
    placed at an onset uniform in ``[0, max_onset_fraction * length]`` (the tail past the mixture end is cut), and
    the sum is peak-normalised to ``peak``. Splits are kept apart: a `DatasetDict` gives a `DatasetDict` whose
    mixtures only use clips of the same split, with a per-split seed derived from ``seed`` and the split name.

    Args:
        dataset: single-label data with ``audio`` and ``label`` columns.
        num_mixtures: mixtures per split (default: the split's size).
        duration_s: mixture length (default: the longest selected source).
        output_dir: write the mixtures as float wav files there (``audio`` becomes a `datasets.Audio` column of
            paths); default: keep them in memory as ``{"array", "sampling_rate"}`` dicts.

    Returns:
        ``audio``, ``labels`` (`List(ClassLabel)` of the source classes, sorted), ``source_indices`` (rows of the
        split that were mixed), ``onsets_s`` and ``gains_db`` per source, and ``events``: the strong labels, one
        per source, from its onset to the end of its own audio, cut at the mixture end (`mixing.source_spans`).
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {
                split: build_polyphonic_mixtures(
                    ds,
                    num_sources=num_sources,
                    num_mixtures=num_mixtures,
                    duration_s=duration_s,
                    gain_db=gain_db,
                    max_onset_fraction=max_onset_fraction,
                    peak=peak,
                    seed=zlib.crc32(f"{seed}/{split}".encode()),
                    sampling_rate=sampling_rate,
                    output_dir=None if output_dir is None else Path(output_dir) / split,
                )
                for split, ds in dataset.items()
            }
        )
    if is_multilabel(dataset):
        raise ValueError("build_polyphonic_mixtures needs single-label data (a 'label' column)")
    labels = np.asarray(dataset["label"], dtype=np.int64)
    names = label_names(dataset) or [str(i) for i in range(labels.max() + 1)]
    k_min, k_max = (num_sources, num_sources) if isinstance(num_sources, int) else num_sources
    classes = np.unique(labels)
    if not 1 <= k_min <= k_max <= len(classes):
        raise ValueError(f"num_sources {num_sources} must lie within [1, {len(classes)}] (classes in this split)")
    num_mixtures = len(dataset) if num_mixtures is None else num_mixtures
    if num_mixtures < 1:
        raise ValueError(f"num_mixtures must be positive, got {num_mixtures}")

    rng = np.random.default_rng(seed)
    clips_by_class = {c: np.flatnonzero(labels == c) for c in classes}
    audio_column = dataset.select_columns(["audio"])

    @lru_cache(maxsize=512)
    def decoded(index: int) -> np.ndarray:
        return decode_audio(audio_column[index]["audio"], sampling_rate)

    rows = []
    for _ in range(num_mixtures):
        chosen = rng.choice(classes, size=rng.integers(k_min, k_max + 1), replace=False)
        indices = [int(rng.choice(clips_by_class[c])) for c in chosen]
        sources = [decoded(i) for i in indices]
        length = round(duration_s * sampling_rate) if duration_s else max(len(s) for s in sources)
        mixture, onsets, gains = mix_sources(sources, length, rng, gain_db, max_onset_fraction, peak)
        spans = source_spans(onsets, [len(source) for source in sources], length)
        order = np.argsort(chosen)
        rows.append(
            {
                "audio": mixture,
                "labels": chosen[order].tolist(),
                "source_indices": [indices[i] for i in order],
                "onsets_s": [onsets[i] / sampling_rate for i in order],
                "gains_db": [gains[i] for i in order],
                "events": [
                    {"onset": spans[i][0] / sampling_rate, "offset": spans[i][1] / sampling_rate, "label": int(chosen[i])}
                    for i in order
                    if spans[i][1] > spans[i][0]
                ],
            }
        )
    return _mixtures_dataset(rows, names, sampling_rate, output_dir)


def _mixtures_dataset(
    rows: list[dict], names: list[str], sampling_rate: int, output_dir: str | os.PathLike | None
) -> Dataset:
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    features = {
        "labels": List(ClassLabel(names=names)),
        "source_indices": List(Value("int64")),
        "onsets_s": List(Value("float32")),
        "gains_db": List(Value("float32")),
        "events": events_feature(names),
    }
    if output_dir is None:
        columns["audio"] = [{"array": a, "sampling_rate": sampling_rate} for a in columns["audio"]]
        audio_feature = IN_MEMORY_AUDIO
    else:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, waveform in enumerate(columns["audio"]):
            path = folder / f"mixture_{i:06d}.wav"
            sf.write(path, waveform, sampling_rate, subtype="FLOAT")
            paths.append(str(path.resolve()))
        columns["audio"] = paths
        audio_feature = Audio()
    return Dataset.from_dict(columns, features=Features({"audio": audio_feature, **features}))

