# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Class names of converted classifiers: AudioSet-style label CSVs, checked against the mids stored in a checkpoint."""

import csv
from collections import Counter
from pathlib import Path


class LabelsError(ValueError):
    """A labels CSV that is malformed or does not describe the checkpoint's classes."""


def read_labels_csv(path: str | Path) -> list[tuple[str, str]]:
    """Reads `index,mid,display_name` rows (AudioSet `class_labels_indices.csv`; a header row is optional).

    Returns:
        `(mid, display_name)` pairs in index order. Indices must be exactly 0 .. n-1.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(field.strip() for field in row)]
    if rows and not rows[0][0].strip().isdigit():
        rows = rows[1:]  # header, e.g. "index,mid,display_name"
    if not rows:
        raise LabelsError(f"{path} contains no label rows.")
    entries = {}
    for line_number, row in enumerate(rows, start=1):
        if len(row) < 3 or not row[0].strip().isdigit():
            raise LabelsError(f"{path}: row {line_number} is not 'index,mid,display_name': {row}")
        index = int(row[0])
        if index in entries:
            raise LabelsError(f"{path}: index {index} appears twice.")
        entries[index] = (row[1].strip(), ",".join(row[2:]).strip())
    if sorted(entries) != list(range(len(entries))):
        raise LabelsError(f"{path}: indices must be 0 .. {len(entries) - 1} without gaps.")
    return [entries[index] for index in range(len(entries))]


def check_mids(csv_mids: list[str], stored_mids: list[str], source: str) -> None:
    """Raises a `LabelsError` unless the CSV lists exactly the stored mids in the same order."""
    missing = [mid for mid in stored_mids if mid not in set(csv_mids)]
    extra = [mid for mid in csv_mids if mid not in set(stored_mids)]
    if missing or extra or len(csv_mids) != len(stored_mids):
        raise LabelsError(
            f"{source} does not list the checkpoint's {len(stored_mids)} classes: "
            f"{len(csv_mids)} rows, missing mids {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unknown mids {extra[:5]}{' ...' if len(extra) > 5 else ''}."
        )
    for index, (csv_mid, stored_mid) in enumerate(zip(csv_mids, stored_mids)):
        if csv_mid != stored_mid:
            raise LabelsError(
                f"{source} orders the classes differently from the checkpoint: index {index} is {csv_mid!r} in the "
                f"CSV but {stored_mid!r} in the checkpoint."
            )


def resolve_label_names(
    num_labels: int, stored_mids: list[str] | None = None, labels_csv: str | Path | None = None
) -> list[str] | None:
    """Class names in head order.

    With `labels_csv`: its display names, after checking its mids against `stored_mids` (order and set) or, when the
    checkpoint stores none, its row count against `num_labels`. Without it: the stored mids, or None if there are none.
    """
    if labels_csv is None:
        return stored_mids
    entries = read_labels_csv(labels_csv)
    if stored_mids is not None:
        check_mids([mid for mid, _ in entries], stored_mids, str(labels_csv))
    elif len(entries) != num_labels:
        raise LabelsError(f"{labels_csv} has {len(entries)} classes but the classifier has {num_labels} outputs.")
    return [name for _, name in entries]


def label_maps(names: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    """`id2label` and `label2id` for a list of class names."""
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise LabelsError(f"class names must be unique; repeated: {duplicates[:5]}")
    return dict(enumerate(names)), {name: index for index, name in enumerate(names)}


__all__ = ["LabelsError", "check_mids", "label_maps", "read_labels_csv", "resolve_label_names"]
