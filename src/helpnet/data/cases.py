"""The canonical case: the one on-disk form every dataset reader produces.

Layout under ``results/{dataset}/``::

    cases.tsv                      manifest, one row per case (columns: MANIFEST_COLUMNS)
    dataset.json                   class names, ignore value, label mapping of the source
    cases/{case}/image.nii.gz      float32 image, array (X, Y, Z), slices along axis 2
    cases/{case}/scribble.nii.gz   uint8, 0 background, 1..K classes, 255 not annotated
    cases/{case}/label.nii.gz      uint8 dense label 0..K (only when the source has one)

All three files of a case share the image's header (affine, zooms), because scribbles and labels
are aligned to the image in voxel space. The spacing in mm is the header zooms.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from helpnet.io import atomic_path, load_nifti, save_nifti, spacing_of, write_json

IGNORE_INDEX = 255
"""Canonical value of a voxel that no scribble annotates."""

MANIFEST_COLUMNS = (
    "case",
    "subject",
    "frame",
    "shape",
    "spacing",
    "has_scribble",
    "has_label",
    "image_source",
    "scribble_source",
    "label_source",
)


@dataclass
class CanonicalCase:
    """One image with its scribble and dense label, already in the canonical encoding."""

    case_id: str
    subject: str
    frame: str
    image: np.ndarray
    """float32 array (X, Y, Z); slices along axis 2."""
    header: nib.Nifti1Header
    """Header whose zooms are the voxel spacing in mm; written unchanged with every array."""
    scribble: np.ndarray | None = None
    """uint8, same shape as ``image``: 0 background, 1..K classes, IGNORE_INDEX not annotated."""
    label: np.ndarray | None = None
    """uint8 dense label 0..K, same shape as ``image``."""
    sources: dict[str, str] = field(default_factory=dict)
    """Source file per role (``image``, ``scribble``, ``label``)."""

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_of(self.header)


def _format_tuple(values) -> str:
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def write_case(case: CanonicalCase, case_dir: str | os.PathLike) -> dict[str, str]:
    """Write one case's NIfTI files into ``case_dir`` and return its manifest row."""
    case_dir = Path(case_dir)
    save_nifti(case_dir / "image.nii.gz", case.image.astype(np.float32, copy=False), case.header)
    if case.scribble is not None:
        save_nifti(case_dir / "scribble.nii.gz", case.scribble.astype(np.uint8, copy=False), case.header)
    if case.label is not None:
        save_nifti(case_dir / "label.nii.gz", case.label.astype(np.uint8, copy=False), case.header)
    return {
        "case": case.case_id,
        "subject": case.subject,
        "frame": case.frame,
        "shape": _format_tuple(case.image.shape),
        "spacing": _format_tuple(tuple(round(s, 6) for s in case.spacing)),
        "has_scribble": str(case.scribble is not None).lower(),
        "has_label": str(case.label is not None).lower(),
        "image_source": case.sources.get("image", ""),
        "scribble_source": case.sources.get("scribble", ""),
        "label_source": case.sources.get("label", ""),
    }


def write_manifest(path: str | os.PathLike, rows: list[dict[str, str]]) -> None:
    """Write ``cases.tsv`` atomically, rows sorted by case id."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
            writer.writeheader()
            for row in sorted(rows, key=lambda r: r["case"]):
                writer.writerow(row)


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read ``cases.tsv`` into a list of rows (strings, as written)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    missing = [c for c in MANIFEST_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {missing}; rerun the align stage to rewrite it")
    return rows


def write_dataset_info(path: str | os.PathLike, classes: list[str], label_mapping: dict, notes: str = "") -> None:
    """Write ``dataset.json``: class names (index 1..K), the ignore value and the source mapping."""
    write_json(
        path,
        {
            "classes": ["background", *classes],
            "num_classes": len(classes) + 1,
            "ignore_index": IGNORE_INDEX,
            "source_label_mapping": label_mapping,
            "notes": notes,
        },
    )


@dataclass
class CaseFiles:
    """Paths of one canonical case on disk."""

    case_id: str
    image: Path
    scribble: Path | None
    label: Path | None

    @classmethod
    def from_dir(cls, case_dir: str | os.PathLike) -> "CaseFiles":
        case_dir = Path(case_dir)
        scribble = case_dir / "scribble.nii.gz"
        label = case_dir / "label.nii.gz"
        return cls(
            case_id=case_dir.name,
            image=case_dir / "image.nii.gz",
            scribble=scribble if scribble.exists() else None,
            label=label if label.exists() else None,
        )


def load_case(case_dir: str | os.PathLike) -> CanonicalCase:
    """Load a canonical case written by :func:`write_case`."""
    files = CaseFiles.from_dir(case_dir)
    image, header = load_nifti(files.image)
    scribble = load_nifti(files.scribble, np.uint8)[0] if files.scribble else None
    label = load_nifti(files.label, np.uint8)[0] if files.label else None
    return CanonicalCase(files.case_id, "", "", image, header, scribble, label)
