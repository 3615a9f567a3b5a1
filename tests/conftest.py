"""Shared fixtures: paths to the reference data beside the checkout."""

from __future__ import annotations

import os
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
