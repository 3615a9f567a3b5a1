"""Training batches: augmentation, crop/pad and per-slice normalisation of preprocessed slices.

Randomness is a pure function of ``(seed, step)``: the batch of step ``s`` is the same whichever
DataLoader worker builds it and whether the run was restarted before ``s``. This is what makes a
resumed run reach the same result as an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from helpnet.data.cases import IGNORE_INDEX
from helpnet.training.preprocess import load_preprocessed

logger = logging.getLogger(__name__)


@dataclass
class SliceStore:
    """All training slices of one fold, in memory, as lists of 2D arrays."""

    images: list[np.ndarray]
    scribbles: list[np.ndarray]
    edges: list[np.ndarray] | None
    case_of_slice: list[str]
    target_spacing: float | None = None

    @classmethod
    def from_cases(cls, preprocessed_dir: str | Path, case_ids: list[str], need_edges: bool) -> "SliceStore":
        images, scribbles, edges, owners = [], [], [], []
        target_spacing = None
        for case_id in case_ids:
            path = Path(preprocessed_dir) / f"{case_id}.npz"
            data = load_preprocessed(path)
            spacing = float(data["target_spacing"])
            if target_spacing is None:
                target_spacing = spacing
            elif spacing != target_spacing:
                raise ValueError(
                    f"{path}: resampled to {spacing} mm but {case_ids[0]} to {target_spacing} mm. "
                    "Rerun the preprocess rule so that all cases share the dataset's target_spacing."
                )
            if "scribble" not in data:
                raise ValueError(f"{path}: training case {case_id} has no scribble; fix the split so only scribbled cases train")
            if need_edges and "edge" not in data:
                raise ValueError(f"{path}: no edge map for {case_id}, but the experiment uses the edge prior; rerun preprocess with --edge")
            for z in range(data["image"].shape[0]):
                images.append(data["image"][z])
                scribbles.append(data["scribble"][z])
                if need_edges:
                    edges.append(data["edge"][z])
                owners.append(case_id)
        if not images:
            raise ValueError(f"no training slices found for cases {case_ids} in {preprocessed_dir}")
        return cls(images, scribbles, edges if need_edges else None, owners, target_spacing)

    def __len__(self) -> int:
        return len(self.images)


def center_crop_or_pad(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """Centre-crop or pad each of the two axes of ``array`` independently to ``size``."""
    out = array
    for axis in (0, 1):
        length = out.shape[axis]
        if length > size:
            start = (length - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif length < size:
            before = (size - length) // 2
            pad = [(0, 0), (0, 0)]
            pad[axis] = (before, size - length - before)
            out = np.pad(out, pad, mode="constant", constant_values=fill)
    return out


def zscore_slice(array: np.ndarray) -> np.ndarray:
    std = float(array.std())
    if std == 0.0:
        return np.zeros_like(array, dtype=np.float32)
    return ((array - float(array.mean())) / std).astype(np.float32)


def augment_sample(
    image: np.ndarray,
    scribble: np.ndarray,
    edge: np.ndarray | None,
    rng: np.random.Generator,
    patch_size: int,
    label_fill: int,
    flip_rot90: bool = True,
    rotate: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Apply the training augmentation to one slice and return (image, scribble, edge) at ``patch_size``.

    Steps: with probability 0.5 random flips of each axis and a rotation by k·90°, then a free
    rotation by U(0°, 360°) with nearest-neighbour interpolation for all maps, centre crop/pad,
    and a z-score of the image crop. New pixels get 0 (image, edge) and ``label_fill`` (scribble).
    """
    maps = [image, scribble] + ([edge] if edge is not None else [])
    if flip_rot90 and rng.random() < 0.5:
        flips = [axis for axis in (0, 1) if rng.random() < 0.5]
        k = int(rng.integers(0, 4))
        maps = [np.rot90(np.flip(m, axis=tuple(flips)) if flips else m, k) for m in maps]
    if rotate:
        angle = float(rng.uniform(0.0, 360.0))
        fills = [0.0, label_fill, 0.0]
        maps = [
            ndimage.rotate(m, angle, reshape=False, order=0, mode="constant", cval=fill, prefilter=False)
            for m, fill in zip(maps, fills)
        ]
    fills = [0.0, label_fill, 0.0]
    maps = [center_crop_or_pad(np.ascontiguousarray(m), patch_size, fill) for m, fill in zip(maps, fills)]
    image_out = zscore_slice(maps[0].astype(np.float32))
    edge_out = maps[2] if edge is not None else None
    return image_out, maps[1], edge_out


class StepBatches(torch.utils.data.Dataset):
    """Dataset whose item ``i`` is the whole batch of optimizer step ``first_step + i``.

    The slice order of each epoch is a permutation drawn from ``(seed, epoch)``; the augmentation
    of each sample from ``(seed, step, position)``.
    """

    def __init__(self, store: SliceStore, batch_size: int, seed: int, first_step: int, total_steps: int,
                 patch_size: int, label_fill: int, flip_rot90: bool = True, rotate: bool = True):
        if len(store) < batch_size:
            raise ValueError(
                f"only {len(store)} training slices for batch size {batch_size}; lower training.batch_size"
            )
        self.store = store
        self.batch_size = batch_size
        self.seed = seed
        self.first_step = first_step
        self.total_steps = total_steps
        self.patch_size = patch_size
        self.label_fill = label_fill
        self.flip_rot90 = flip_rot90
        self.rotate = rotate
        self.steps_per_epoch = len(store) // batch_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.first_step)

    def slice_indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.store))
        return order[position * self.batch_size:(position + 1) * self.batch_size]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        step = self.first_step + index
        images, scribbles, edges = [], [], []
        for position, slice_index in enumerate(self.slice_indices(step)):
            rng = np.random.default_rng([self.seed, 2, step, position])
            edge = self.store.edges[slice_index] if self.store.edges is not None else None
            image, scribble, edge = augment_sample(
                self.store.images[slice_index], self.store.scribbles[slice_index], edge, rng,
                self.patch_size, self.label_fill, self.flip_rot90, self.rotate,
            )
            images.append(image)
            scribbles.append(scribble)
            if edge is not None:
                edges.append(edge)
        batch = {
            "step": torch.tensor(step),
            "image": torch.from_numpy(np.stack(images))[:, None],
            "scribble": torch.from_numpy(np.stack(scribbles).astype(np.int64)),
        }
        if edges:
            # Edge maps are stored as 0..255; the loss compares against values in [0, 1].
            batch["edge"] = torch.from_numpy(np.stack(edges).astype(np.float32) / 255.0)
        return batch


def label_fill_value(mode: str) -> int:
    """Return the scribble fill for new pixels: the ignore value, or background as upstream does."""
    return IGNORE_INDEX if mode == "ignore" else 0
