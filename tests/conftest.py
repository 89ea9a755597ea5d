import csv
import os
from pathlib import Path

import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """The CI machines are small and shared: keep every test on one intra-op thread."""
    torch.set_num_threads(1)


def shared_folder(variable: str, default: Path, what: str) -> Path:
    """The folder named by env `variable` (else `default`); missing -> skip with a message, or fail under CI=true."""
    path = Path(os.environ.get(variable, default))
    if not path.is_dir():
        message = f"{what} not found at {path}; set {variable} to the folder."
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the reference fixtures: env SSLAM_FIXTURES_DIR, else `<repo root>/../shared/fixtures`."""
    return shared_folder("SSLAM_FIXTURES_DIR", REPO_ROOT.parent / "shared" / "fixtures", "Reference fixtures")


@pytest.fixture(scope="session")
def reference_data_dir() -> Path:
    """`shared/reference/data` (labels.csv, the original repo's test clips): env SSLAM_REFERENCE_DATA_DIR, else
    `<repo root>/../shared/reference/data`."""
    return shared_folder(
        "SSLAM_REFERENCE_DATA_DIR", REPO_ROOT.parent / "shared" / "reference" / "data", "Reference data"
    )


FINETUNED_CHECKPOINT = "checkpoints/sslam_finetuned_tiny.pt"


def read_label_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return [row for row in csv.reader(handle) if row]


@pytest.fixture(scope="session")
def finetuned_label_rows(reference_data_dir, fixtures_dir) -> list[list[str]]:
    """The AudioSet CSV rows of the fine-tuned fixture checkpoint's classes, in its head order and indexed 0 .. n-1
    (the whole `labels.csv` when the checkpoint has all AudioSet classes)."""
    rows_by_mid = {row[1]: row for row in read_label_rows(reference_data_dir / "labels.csv")}
    checkpoint = torch.load(fixtures_dir / FINETUNED_CHECKPOINT, map_location="cpu", weights_only=True)
    labels = checkpoint["task_state"]["labels"]
    mids = sorted(labels, key=lambda mid: int(labels[mid]))
    return [[str(index), mid, rows_by_mid[mid][2]] for index, mid in enumerate(mids)]


@pytest.fixture(scope="session")
def finetuned_labels_csv(finetuned_label_rows, reference_data_dir, tmp_path_factory) -> Path:
    """A labels CSV for `--labels_csv` of the fine-tuned fixture checkpoint: `labels.csv` itself, or (a checkpoint with
    a subset of the AudioSet classes) the matching rows written to a temporary CSV."""
    labels_csv = reference_data_dir / "labels.csv"
    if finetuned_label_rows == read_label_rows(labels_csv):
        return labels_csv
    subset = tmp_path_factory.mktemp("labels") / "labels.csv"
    with subset.open("w", newline="") as handle:
        csv.writer(handle).writerows([["index", "mid", "display_name"], *finetuned_label_rows])
    return subset
