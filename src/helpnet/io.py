"""Atomic file output and NIfTI helpers shared by every stage."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and rename it onto ``path`` on success.

    A crash or an exception leaves no partial file at ``path``. The temporary name keeps the
    final suffixes (``.nii.gz``, ``.csv``) so that libraries which infer the format from the
    name still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file with mode 0600; give it the mode a plain open() would, so that
    # colleagues on a shared file system can read the results.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def make_header(spacing: tuple[float, float, float], affine: np.ndarray | None = None) -> nib.Nifti1Header:
    """Build a NIfTI header whose zooms are ``spacing`` (mm) and whose sform is ``affine``.

    Without an affine the header gets ``diag(spacing)`` with a zero origin.
    """
    if affine is None:
        affine = np.diag([*map(float, spacing), 1.0])
    header = nib.Nifti1Header()
    header.set_data_shape((1, 1, 1))
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    header.set_zooms(tuple(float(s) for s in spacing))
    return header


def save_nifti(path: str | os.PathLike, array: np.ndarray, header: nib.Nifti1Header) -> None:
    """Save ``array`` atomically with a copy of ``header`` (affine, zooms and codes kept as they are).

    The header's zooms, not its affine, define the voxel spacing: ACDC images have an sform
    without voxel size, so nibabel must not rebuild the zooms from the affine.
    """
    header = header.copy()
    zooms = header.get_zooms()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    header.set_zooms(tuple(zooms[: array.ndim]) + (1.0,) * (array.ndim - len(zooms)))
    # Rescaling would turn integer label maps into floats on read.
    header.set_slope_inter(None, None)
    image = nib.Nifti1Image(array, None, header=header)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def load_nifti(path: str | os.PathLike, dtype: type | None = None) -> tuple[np.ndarray, nib.Nifti1Header]:
    """Load a NIfTI file with its header scaling applied; cast to ``dtype`` when given."""
    image = nib.load(str(path))
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        raw = np.asanyarray(image.dataobj)
        array = np.asarray(raw)
    else:
        array = np.asarray(image.get_fdata(dtype=np.float32) if dtype is None else image.get_fdata(dtype=np.float64))
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return array, image.header.copy()


def spacing_of(header: nib.Nifti1Header) -> tuple[float, float, float]:
    """Return the voxel spacing (mm) of the first three axes from the header zooms."""
    zooms = header.get_zooms()
    return tuple(float(z) for z in zooms[:3])  # type: ignore[return-value]
