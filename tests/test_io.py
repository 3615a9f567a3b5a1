"""Atomic output helpers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from helpnet.io import write_text


def test_atomic_write_uses_umask_mode(tmp_path: Path):
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
    assert (tmp_path / "out.txt").read_text() == "x"
