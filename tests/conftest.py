"""Shared fixtures: paths to the reference data beside the checkout."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("HELPNET_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only folder of real test data and weights (``HELPNET_SHARED_DIR`` or ``../shared``)."""
    path = _shared_dir()
    if not (path / "data").is_dir():
        pytest.skip(f"reference data not found at {path}; set HELPNET_SHARED_DIR")
    return path


@pytest.fixture(scope="session")
def scribble_dir(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 200 Valvano scribbles, extracted without the macOS metadata entries."""
    target = tmp_path_factory.mktemp("acdc_scribbles")
    with zipfile.ZipFile(shared_dir / "data" / "acdc_scribbles.zip") as archive:
        members = [name for name in archive.namelist() if not name.startswith("__MACOSX/")]
        archive.extractall(target, members)
    return target
