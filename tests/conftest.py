import os
from pathlib import Path

import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """The CI machines are small and shared: keep every test on one intra-op thread."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the reference fixtures: env SSLAM_FIXTURES_DIR, else `<repo root>/../shared/fixtures`."""
    path = Path(os.environ.get("SSLAM_FIXTURES_DIR", REPO_ROOT.parent / "shared" / "fixtures"))
    if not path.is_dir():
        message = f"Reference fixtures not found at {path}; set SSLAM_FIXTURES_DIR to the fixture folder."
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
