"""Prediction of whole volumes with the upstream test protocol, batched over slices.

Per volume: z-score the volume, rescale each slice to the target spacing (bilinear with
anti-aliasing), centre crop/pad to the patch, z-score the crop, and run the network. The class
probabilities go into a zero canvas of the rescaled slice size, so argmax is background outside
the window. They are resized back to the original slice size and averaged over the models of an
ensemble before the argmax. The prediction is saved with the image's header.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize
from tqdm import tqdm

from helpnet.data.cases import CaseFiles
from helpnet.io import load_nifti, save_nifti, spacing_of
from helpnet.training.checkpoint import load_model_for_inference
from helpnet.training.data import center_crop_or_pad, zscore_slice
from helpnet.training.preprocess import in_plane_scale, resample_slice, zscore
from helpnet.training.runtime import autocast_context, resolve_device, resolve_precision

logger = logging.getLogger(__name__)


def _paste_window(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Invert :func:`center_crop_or_pad` for a (C, P, P) probability window into a (C, *shape) canvas."""
    channels, size, _ = probs.shape
    canvas = np.zeros((channels, *shape), dtype=np.float32)
    src = [slice(None), slice(None)]
    dst = [slice(None), slice(None)]
    for axis, length in enumerate(shape):
        if length >= size:
            start = (length - size) // 2
            dst[axis] = slice(start, start + size)
            src[axis] = slice(0, size)
        else:
            before = (size - length) // 2
            dst[axis] = slice(0, length)
            src[axis] = slice(before, before + length)
    canvas[:, dst[0], dst[1]] = probs[:, src[0], src[1]]
    return canvas


def prepare_volume(image: np.ndarray, spacing: tuple[float, float, float], target_spacing: float,
                   patch_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Return the network input (Z, 1, P, P) and the rescaled slice shape of a volume (X, Y, Z)."""
    volume = zscore(image)
    scale = in_plane_scale(spacing, target_spacing)
    windows = []
    rescaled_shape = None
    for z in range(volume.shape[2]):
        rescaled = resample_slice(volume[:, :, z], scale, order=1)
        rescaled_shape = rescaled.shape
        windows.append(zscore_slice(center_crop_or_pad(rescaled, patch_size, 0.0)))
    return np.stack(windows)[:, None], rescaled_shape  # type: ignore[return-value]


@torch.no_grad()
def predict_probabilities(models: list[torch.nn.Module], windows: np.ndarray, device: torch.device,
                          precision: str, batch_size: int = 32, channels_last: bool = True) -> np.ndarray:
    """Return the ensemble-mean class probabilities (Z, C, P, P) of the prepared windows."""
    total = None
    inputs = torch.from_numpy(windows)
    for model in models:
        outputs = []
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start:start + batch_size].to(device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, precision):
                probs = model(batch)
            outputs.append(probs.float().cpu())
        stacked = torch.cat(outputs).numpy()
        total = stacked if total is None else total + stacked
    return total / len(models)


def probabilities_to_labels(probs: np.ndarray, rescaled_shape: tuple[int, int],
                            original_shape: tuple[int, int]) -> np.ndarray:
    """Map window probabilities (Z, C, P, P) back to a label volume (X, Y, Z) of the original grid."""
    labels = np.zeros((*original_shape, probs.shape[0]), dtype=np.uint8)
    for z in range(probs.shape[0]):
        canvas = _paste_window(probs[z], rescaled_shape)
        restored = resize(canvas, (canvas.shape[0], *original_shape), order=1, preserve_range=True,
                          anti_aliasing=True, mode="constant")
        labels[:, :, z] = np.argmax(restored, axis=0).astype(np.uint8)
    return labels


def predict_cases(checkpoints: list[str | Path], cases_dir: str | Path, case_ids: list[str],
                  output_dir: str | Path, device: str = "auto", batch_size: int = 32,
                  precision: str = "checkpoint") -> list[Path]:
    """Predict every case with the (ensemble of) checkpoint(s); write ``{case}.nii.gz`` files.

    ``precision`` is ``checkpoint`` (the precision the first model was trained in), ``auto``
    (bf16 where the device computes it natively, else fp32), ``fp32``, ``bf16`` or ``fp16``
    (CUDA only).
    """
    torch_device = resolve_device(device)
    loaded = [load_model_for_inference(path, torch_device) for path in checkpoints]
    models = [model for model, _ in loaded]
    settings = [meta for _, meta in loaded]
    first = settings[0]
    for other, path in zip(settings[1:], checkpoints[1:]):
        for key in ("target_spacing", "patch_size", "num_classes"):
            if other[key] != first[key]:
                raise ValueError(f"{path}: {key}={other[key]} differs from {checkpoints[0]} ({first[key]}); ensemble only models of one setup")
    chosen_precision = first["precision"] if precision == "checkpoint" else resolve_precision(precision, torch_device)
    logger.info("predicting on %s in %s", torch_device, chosen_precision)
    written = []
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for case_id in tqdm(case_ids, desc="predict", unit="case"):
        files = CaseFiles.from_dir(Path(cases_dir) / case_id)
        image, header = load_nifti(files.image)
        windows, rescaled_shape = prepare_volume(image, spacing_of(header), first["target_spacing"], first["patch_size"])
        probs = predict_probabilities(models, windows, torch_device, chosen_precision, batch_size,
                                      first.get("channels_last", True))
        labels = probabilities_to_labels(probs, rescaled_shape, image.shape[:2])
        path = output_dir / f"{case_id}.nii.gz"
        save_nifti(path, labels, header)
        written.append(path)
    logger.info("wrote %d predictions to %s", len(written), output_dir)
    return written
