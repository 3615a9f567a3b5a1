"""Quality-control figure: a few slices of a few cases with their edge maps drawn over the image."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the workflow runs headless; select the backend before pyplot loads
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpnet.edges.extract import edge_description, is_constant_slice  # noqa: E402
from helpnet.io import atomic_path, load_nifti  # noqa: E402

logger = logging.getLogger(__name__)

EDGE_CMAP = "autumn"
EDGE_ALPHA = 0.9
"""Opacity of an edge value of 255; lower values are proportionally more transparent."""
EDGE_DISPLAY_MIN = 0.25
"""Edge values below this fraction of 255 are left transparent so the image stays readable."""


@dataclass
class QCPanel:
    """One panel of the figure: a slice of an image and its edge map."""

    case_id: str
    slice_index: int
    method: str
    image: np.ndarray
    edges: np.ndarray
    """Edge values 0..255, same shape as ``image``."""


def edge_overlay(edges: np.ndarray) -> np.ndarray:
    """Colour uint8 edges as RGBA whose opacity grows with the edge value, so weak responses stay faint."""
    strength = edges.astype(np.float32) / 255.0
    rgba = matplotlib.colormaps[EDGE_CMAP](strength)
    rgba[..., 3] = np.where(strength >= EDGE_DISPLAY_MIN, EDGE_ALPHA * strength, 0.0)
    return rgba


def pick_slices(volume: np.ndarray, count: int) -> list[int]:
    """Pick up to ``count`` non-constant slices evenly spread over axis 2, avoiding the outermost ones."""
    candidates = [k for k in range(volume.shape[2]) if not is_constant_slice(volume[:, :, k])]
    if len(candidates) <= count:
        return candidates
    positions = np.linspace(0, len(candidates) - 1, count + 2)[1:-1]
    return sorted({candidates[int(round(p))] for p in positions})


def collect_panels(
    cases_dir: str | os.PathLike,
    edges_dir: str | os.PathLike,
    case_ids: list[str] | None = None,
    max_cases: int = 3,
    slices_per_case: int = 3,
) -> list[QCPanel]:
    """Load the panels for the QC figure; without ``case_ids`` the first ``max_cases`` cases that have edges are used."""
    cases_dir, edges_dir = Path(cases_dir), Path(edges_dir)
    if case_ids:
        chosen = list(case_ids)
    else:
        if not edges_dir.is_dir():
            raise FileNotFoundError(f"edge folder not found: {edges_dir}; run `helpnet edges` first")
        available = sorted(p.name[: -len(".nii.gz")] for p in edges_dir.glob("*.nii.gz"))
        chosen = [c for c in available if (cases_dir / c / "image.nii.gz").is_file()][:max_cases]
        if not chosen:
            raise FileNotFoundError(
                f"no case has both {cases_dir}/<case>/image.nii.gz and {edges_dir}/<case>.nii.gz; run `helpnet edges` first"
            )

    panels = []
    for case_id in chosen:
        image_path = cases_dir / case_id / "image.nii.gz"
        edge_path = edges_dir / f"{case_id}.nii.gz"
        for path in (image_path, edge_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found for case {case_id!r}; check --cases or run `helpnet edges`")
        image, _ = load_nifti(image_path)
        edges, _ = load_nifti(edge_path, dtype=np.uint8)
        if image.shape != edges.shape:
            raise ValueError(f"{edge_path}: shape {edges.shape} differs from {image_path} {image.shape}; regenerate the edges")
        method = edge_description(edge_path) or "unknown method"
        for k in pick_slices(image, slices_per_case):
            panels.append(QCPanel(case_id, k, method, image[:, :, k], edges[:, :, k]))
    return panels


def render_qc(panels: list[QCPanel], output: str | os.PathLike, columns: int = 3) -> None:
    """Draw the panels (image in grey, edges in a colour map with alpha) into a PNG written atomically."""
    if not panels:
        raise ValueError(f"no slices to show in {output}: every selected image is constant")
    rows = int(np.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.4 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel in zip(axes.ravel(), panels):
        axis.imshow(panel.image, cmap="gray", interpolation="nearest")
        axis.imshow(edge_overlay(panel.edges), interpolation="nearest")
        share = float(np.mean(panel.edges > 127))
        axis.set_title(f"{panel.case_id} z={panel.slice_index}\n{panel.method}\nE>0.5: {share:.1%}", fontsize=8)
    figure.tight_layout(rect=(0, 0, 0.93, 1))
    # One colour scale for all panels: the edge value E in 0..1. The edge loss uses pixels with E > 0.5.
    bar_axis = figure.add_axes((0.945, 0.15, 0.015, 0.7))
    scale = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=EDGE_CMAP)
    bar = figure.colorbar(scale, cax=bar_axis)
    bar.set_label("edge value E (edge loss: E > 0.5)")
    bar.ax.axhline(0.5, color="black", linewidth=1)
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    logger.info("wrote edge QC figure with %d panels to %s", len(panels), output)
