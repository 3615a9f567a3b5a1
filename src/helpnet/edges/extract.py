"""Per-slice PiDiNet edge extraction for MR volumes, plus writing, checking and reading edge maps.

Each 2-D slice ``volume[:, :, k]`` (H = array axis 0, W = axis 1, no transpose) is rendered as an
8-bit grey image by min-max scaling, copied to three channels and normalised with the ImageNet
statistics, which is what the official PiDiNet loader computes for an 8-bit grey PNG. The fused
(last) output, times 255, is stored as uint8 on the image grid.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import nibabel as nib
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from helpnet.io import load_nifti, save_nifti

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Default PiDiNet form per variant. In benchmarks/bench_pidinet.py (2-core AMD EPYC, torch
# 2.13.0+cpu, shared machine, see BENCHMARKS.md) converted was never reliably
# slower than vanilla, and it skips the per-call kernel assembly. Both give the same maps to ~3e-6.
DEFAULT_CONVERTED: dict[str, bool] = {
    "pidinet": True,
    "pidinet_small": True,
    "pidinet_tiny": True,
}

# Sanity limits on a finished edge volume. On the PiDiNet (3 released checkpoints) and Sobel maps
# of 20 ACDC cine and 4 MSCMRseg LGE volumes (BENCHMARKS.md), every non-constant
# slice had a maximum >= 229, at most 1.2 % of a volume's pixels were >= 250 and at most 26 % were
# > 127. An untrained PiDiNet gives ~0.5 everywhere, so 100 % of its pixels are > 127.
BLANK_MAX = 127
"""A slice is blank when no value exceeds this, i.e. the edge-loss mask E > 0.5 is empty."""
SATURATED_VALUE = 250
SATURATED_FRACTION = 0.25
"""A volume with more than this fraction of pixels >= SATURATED_VALUE is saturated."""
FLOODED_FRACTION = 0.6
"""A volume with more than this fraction of pixels > BLANK_MAX marks nearly everything as edge."""


def default_converted(variant: str) -> bool:
    """Return whether the converted (re-parameterised) form is the default for ``variant``."""
    return DEFAULT_CONVERTED.get(variant, True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``auto`` to CUDA when available, else the CPU; pass other names to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return resolved


def is_constant_slice(slice_2d: np.ndarray) -> bool:
    """Return True when every pixel of the slice has the same value (min-max scaling is undefined)."""
    return bool(np.min(slice_2d) == np.max(slice_2d))


def render_slice(slice_2d: np.ndarray) -> np.ndarray:
    """Render a 2-D slice as the (H, W, 3) uint8 grey image that is fed to PiDiNet.

    Min-max over this slice in float64, ``np.rint`` (round half to even), three identical
    channels. A constant slice renders as all zeros.
    """
    values = np.asarray(slice_2d, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("slice contains NaN or infinite values; fix the image before extracting edges")
    low, high = values.min(), values.max()
    if low == high:
        grey = np.zeros(values.shape, dtype=np.uint8)
    else:
        # Same operation order as the reference rendering, so .5 ties round identically.
        grey = np.rint((values - low) * 255.0 / (high - low)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def rgb_to_input(rgb: np.ndarray) -> torch.Tensor:
    """Convert uint8 (H, W, 3) or (N, H, W, 3) images to the normalised float32 (N, 3, H, W) network input.

    Equal to torchvision ``ToTensor`` followed by ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {rgb.dtype}")
    if rgb.ndim == 3:
        rgb = rgb[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"expected images of shape (H, W, 3) or (N, H, W, 3), got {rgb.shape}")
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[None, :, None, None]
    return (x - mean) / std


def probability_to_uint8(probability: np.ndarray) -> np.ndarray:
    """Convert edge probabilities in [0, 1] to uint8 by truncating 255 * p, as upstream PiDiNet saves its PNGs.

    With truncation a stored value of 128 or more means p >= 128/255, as in files written by the
    official PiDiNet test code, so the edge-loss mask E > 0.5 selects the same pixels.
    """
    scaled = np.asarray(probability, dtype=np.float32) * np.float32(255.0)
    return np.clip(scaled, 0.0, 255.0).astype(np.uint8)


@contextlib.contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """Disable TF32 on CUDA for the duration, because TF32 convolutions change outputs by ~1e-3."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def check_volume(volume: np.ndarray, source: str = "volume") -> np.ndarray:
    """Return ``volume`` as a float array after checking it is 3-D and finite."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"{source}: expected a 3-D volume (X, Y, Z), got shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.number) or np.issubdtype(volume.dtype, np.complexfloating):
        raise ValueError(f"{source}: expected a real-valued image, got dtype {volume.dtype}")
    finite = np.isfinite(volume)
    if not finite.all():
        bad = sorted({int(k) for k in np.nonzero(~finite)[2]})
        raise ValueError(f"{source}: NaN or infinite values in slices {bad}; fix the image before extracting edges")
    return volume


def extract_edges(
    volume: np.ndarray,
    model: nn.Module,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    progress: bool = True,
    source: str = "volume",
) -> np.ndarray:
    """Run PiDiNet on every slice ``volume[:, :, k]`` and return the fused edge map as uint8 (X, Y, Z).

    Constant slices are not passed through the network, because their min-max rendering is
    undefined; they get an all-zero edge slice.
    """
    volume = check_volume(volume, source)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    model = model.to(device).eval()

    edges = np.zeros(volume.shape, dtype=np.uint8)
    slices = [k for k in range(volume.shape[2]) if not is_constant_slice(volume[:, :, k])]
    skipped = volume.shape[2] - len(slices)
    if skipped:
        logger.info("%s: %d constant slice(s) get blank edges", source, skipped)

    batches = [slices[i : i + batch_size] for i in range(0, len(slices), batch_size)]
    with torch.no_grad(), _exact_float32(device):
        for batch in tqdm(batches, desc=f"edges {source}", unit="batch", disable=not progress):
            rgb = np.stack([render_slice(volume[:, :, k]) for k in batch])
            fused = model(rgb_to_input(rgb).to(device))[-1]
            fused = fused[:, 0].float().cpu().numpy()
            for j, k in enumerate(batch):
                edges[:, :, k] = probability_to_uint8(fused[j])
    return edges


def validate_edges(edges: np.ndarray, volume: np.ndarray, source: str = "edge map") -> None:
    """Raise ValueError when an edge volume is blank on every non-constant slice, saturated or flooded.

    Either failure points to a broken rendering or model (for example wrong normalisation or
    weights), not to the image, so nothing should be written.
    """
    if edges.shape != volume.shape:
        raise ValueError(f"{source}: edge map shape {edges.shape} differs from the image shape {volume.shape}")
    slices = [k for k in range(volume.shape[2]) if not is_constant_slice(volume[:, :, k])]
    if not slices:
        logger.warning("%s: every slice of the image is constant; the edge map is all zero", source)
        return
    slice_max = [int(edges[:, :, k].max()) for k in slices]
    fix = "check the checkpoint, the variant flags and the image intensities"
    if max(slice_max) <= BLANK_MAX:
        raise ValueError(
            f"{source}: edge map is blank (maximum {max(slice_max)} <= {BLANK_MAX}, so the E > 0.5 mask is empty) "
            f"on all {len(slices)} non-constant slices; {fix}"
        )
    content = edges[:, :, slices]
    saturated = float(np.mean(content >= SATURATED_VALUE))
    if saturated > SATURATED_FRACTION:
        raise ValueError(
            f"{source}: edge map is saturated ({saturated:.1%} of pixels >= {SATURATED_VALUE}, limit "
            f"{SATURATED_FRACTION:.0%}); {fix}"
        )
    flooded = float(np.mean(content > BLANK_MAX))
    if flooded > FLOODED_FRACTION:
        raise ValueError(
            f"{source}: {flooded:.1%} of pixels have E > 0.5 (limit {FLOODED_FRACTION:.0%}), so the map marks "
            f"nearly everything as edge; {fix}"
        )


NIFTI_DESCRIP_BYTES = 79


def write_edges(path: str | os.PathLike, edges: np.ndarray, header: nib.Nifti1Header, description: str) -> None:
    """Write a uint8 edge volume with the image's header (same affine, zooms, shape) and ``description`` in ``descrip``."""
    if edges.dtype != np.uint8:
        raise ValueError(f"{path}: edge maps are stored as uint8 0..255, got {edges.dtype}")
    header = header.copy()
    header["descrip"] = description.encode("ascii", "replace")[:NIFTI_DESCRIP_BYTES]
    save_nifti(path, edges, header)


def edge_description(path: str | os.PathLike) -> str:
    """Return the ``descrip`` text that :func:`write_edges` stored (the method), or '' when absent."""
    raw = nib.load(str(path)).header["descrip"]
    return bytes(raw.item() if hasattr(raw, "item") else raw).decode("ascii", "replace").strip("\x00 ")


def load_edge_map(path: str | os.PathLike) -> np.ndarray:
    """Load an edge NIfTI as float32 E in [0, 1] (stored value / 255).

    Raises ValueError unless every stored value is an integer in 0..255, which rejects maps saved
    as probabilities in [0, 1] that an integer-casting loader would turn into zeros.
    """
    array, _ = load_nifti(path, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: edge map contains NaN or infinite values; regenerate it with `helpnet edges`")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255 or not np.array_equal(array, np.rint(array)):
        raise ValueError(
            f"{path}: edge map values must be integers in 0..255 (255 x probability), found range "
            f"[{low:g}, {high:g}] with non-integer or out-of-range values; regenerate it with `helpnet edges`"
        )
    if high <= 1:
        logger.warning("%s: edge map maximum is %g; a 0/1 mask gives E <= 1/255, which no edge-loss mask selects", path, high)
    return (array / 255.0).astype(np.float32)
