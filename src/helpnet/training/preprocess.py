"""Resample every slice of a case to the target in-plane spacing once, before training.

The output ``{case}.npz`` contains per-slice arrays so the data loader never resamples:

- ``image``: float32, z-scored over the whole 3D volume, then resampled (bilinear);
- ``scribble``, ``edge``, ``label``: uint8, resampled with nearest neighbour (``edge`` and
  ``label`` only when present);
- ``spacing``: the original (x, y, z) spacing in mm; ``target_spacing``: the in-plane target.

Slices keep their own resampled size; cropping to the patch happens in the data loader.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from skimage.transform import rescale

from helpnet.data.cases import CaseFiles
from helpnet.io import atomic_path, load_nifti, spacing_of

logger = logging.getLogger(__name__)


def zscore(array: np.ndarray) -> np.ndarray:
    """Return ``(array - mean) / std`` in float32; a constant array becomes zeros."""
    array = array.astype(np.float32, copy=False)
    std = float(array.std())
    if std == 0.0:
        return np.zeros_like(array, dtype=np.float32)
    return ((array - float(array.mean())) / std).astype(np.float32)


def in_plane_scale(spacing: tuple[float, float, float], target_spacing: float) -> tuple[float, float]:
    """Return the rescale factors of axes 0 and 1 that bring ``spacing`` to ``target_spacing`` mm."""
    return (spacing[0] / target_spacing, spacing[1] / target_spacing)


def resample_slice(slice2d: np.ndarray, scale: tuple[float, float], order: int) -> np.ndarray:
    """Rescale one 2D slice; order 1 (bilinear, range kept) for images, 0 for label maps."""
    if order == 0:
        out = rescale(slice2d, scale, order=0, preserve_range=True, anti_aliasing=False, mode="constant")
        return np.rint(out).astype(slice2d.dtype)
    return rescale(slice2d, scale, order=1, preserve_range=True, mode="constant").astype(np.float32)


def preprocess_case(
    case_dir: str | Path,
    output: str | Path,
    target_spacing: float,
    edge_path: str | Path | None = None,
) -> Path:
    """Write the resampled slices of one canonical case to ``output`` (``.npz``)."""
    files = CaseFiles.from_dir(case_dir)
    image, header = load_nifti(files.image)
    spacing = spacing_of(header)
    scale = in_plane_scale(spacing, target_spacing)
    volume = zscore(image)
    arrays: dict[str, list[np.ndarray]] = {"image": []}
    maps: dict[str, np.ndarray] = {}
    if files.scribble is not None:
        maps["scribble"] = load_nifti(files.scribble, np.uint8)[0]
    if files.label is not None:
        maps["label"] = load_nifti(files.label, np.uint8)[0]
    if edge_path is not None:
        edge, _ = load_nifti(edge_path, np.uint8)
        maps["edge"] = edge
    for name, array in maps.items():
        if array.shape != image.shape:
            raise ValueError(
                f"{case_dir}: {name} shape {array.shape} differs from image shape {image.shape}; "
                "rerun the align and edges stages"
            )
        arrays[name] = []
    for z in range(image.shape[2]):
        arrays["image"].append(resample_slice(volume[:, :, z], scale, order=1))
        for name, array in maps.items():
            arrays[name].append(resample_slice(array[:, :, z], scale, order=0))
    stacked = {name: np.stack(slices) for name, slices in arrays.items()}
    output = Path(output)
    with atomic_path(output) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                spacing=np.asarray(spacing, dtype=np.float64),
                target_spacing=np.float64(target_spacing),
                **stacked,
            )
    logger.info("%s: %d slices resampled to %.5f mm, shape %s", files.case_id, image.shape[2], target_spacing, stacked["image"].shape[1:])
    return output


def load_preprocessed(path: str | Path) -> dict[str, np.ndarray]:
    """Load a ``.npz`` written by :func:`preprocess_case` into memory."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
