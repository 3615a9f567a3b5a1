"""Reader for ACDC cine MRI (official layout) with the Valvano et al. scribbles.

Sources:

- ``images``: a directory containing, at any depth, the patient folders ``patientXXX/`` with
  ``Info.cfg``, ``patientXXX_frameYY.nii.gz`` and the dense ground truth ``patientXXX_frameYY_gt.nii.gz``;
- ``scribbles`` (optional): a directory containing ``patientXXX_frameYY_scribble.nii.gz`` at any depth
  (the extracted ``acdc_scribbles.zip``; ``__MACOSX`` and ``._*`` entries are skipped).

The ED and ES frame numbers come from each ``Info.cfg`` (patient090's ED is frame 4, not 1).
Scribbles store their pixel size in the affine while the image's sform is diag(-1, -1, 1); the
two are aligned in voxel space, never resampled by affine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from helpnet.data.cases import CanonicalCase
from helpnet.data.readers.common import (
    ReaderResult,
    check_class_count,
    check_options,
    default_scribble_mapping,
    enforce_unmatched_policy,
    find_files,
    identity_mapping,
    is_hidden,
    load_nifti_case,
    mapping_for_json,
    pair_by_case_id,
    require_sources,
)

logger = logging.getLogger(__name__)

PATIENT_DIR = re.compile(r"patient\d{3}")
SCRIBBLE_FILE = re.compile(r"(patient\d{3}_frame\d{2})_scribble\.nii\.gz")
FRAMES = ("ED", "ES")
SCRIBBLE_UNANNOTATED = 4


def read_acdc(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult:
    """Read ACDC ED/ES frames with their dense labels and (optional) Valvano scribbles."""
    options = check_options(options, (), "acdc")
    paths = require_sources(sources, ["images"], ["scribbles"], "acdc")
    check_class_count(classes, 3, "acdc", "RV, Myo, LV")

    patients = find_patient_dirs(paths["images"])
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    frames: dict[str, tuple[str, str]] = {}
    for patient, folder in sorted(patients.items()):
        for phase, number in read_info_cfg(folder / "Info.cfg").items():
            case_id = f"{patient}_frame{number:02d}"
            image = folder / f"{case_id}.nii.gz"
            if not image.is_file():
                raise FileNotFoundError(
                    f"{folder / 'Info.cfg'}: {phase} is frame {number} but {image} not found; restore the frame file "
                    "or correct Info.cfg"
                )
            images[case_id] = image
            frames[case_id] = (patient, phase)
            label = folder / f"{case_id}_gt.nii.gz"
            if label.is_file():
                labels[case_id] = label

    scribbles = find_files(paths["scribbles"], SCRIBBLE_FILE) if "scribbles" in paths else {}
    pairing = pair_by_case_id(images, scribbles, labels)
    pairs = enforce_unmatched_policy(pairing, options)
    scribble_mapping = default_scribble_mapping(3, SCRIBBLE_UNANNOTATED)
    label_mapping = identity_mapping(3)
    logger.info("ACDC: %d patients, %d frames, %d with scribbles", len(patients), len(pairs), sum(p.scribble is not None for p in pairs))

    def cases() -> Iterator[CanonicalCase]:
        for case_paths in pairs:
            patient, phase = frames[case_paths.case_id]
            yield load_nifti_case(case_paths, patient, phase, scribble_mapping, label_mapping)

    return ReaderResult(
        cases=cases(),
        unmatched=pairing.unmatched,
        label_mapping={"scribble": mapping_for_json(scribble_mapping), "label": mapping_for_json(label_mapping)},
        notes="ACDC ED and ES frames (from Info.cfg); scribbles by Valvano et al., aligned in voxel space.",
        num_cases=len(pairs),
    )


def find_patient_dirs(root: Path) -> dict[str, Path]:
    """Find every ``patientXXX`` directory that holds an ``Info.cfg`` under ``root`` (``root`` included)."""
    candidates = [root, *sorted(p for p in root.rglob("patient*") if p.is_dir() and not is_hidden(p.relative_to(root)))]
    patients: dict[str, Path] = {}
    for folder in candidates:
        if not PATIENT_DIR.fullmatch(folder.name) or not (folder / "Info.cfg").is_file():
            continue
        if folder.name in patients:
            raise ValueError(f"patient {folder.name} found twice: {patients[folder.name]} and {folder}; keep one copy")
        patients[folder.name] = folder
    if not patients:
        raise FileNotFoundError(
            f"no ACDC patient folders (patientXXX/ with Info.cfg) found under {root}; pass the extracted ACDC "
            "database (or its training/ folder) as source 'images'"
        )
    return patients


def read_info_cfg(path: Path) -> dict[str, int]:
    """Return the ED and ES frame numbers of an ACDC ``Info.cfg`` (``key: value`` lines)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    frames: dict[str, int] = {}
    for phase in FRAMES:
        if phase not in values:
            raise ValueError(f"{path}: missing line '{phase}: <frame number>'; add the {phase} frame number")
        try:
            frames[phase] = int(values[phase])
        except ValueError:
            raise ValueError(f"{path}: {phase} value {values[phase]!r} is not a frame number") from None
    if frames["ED"] == frames["ES"]:
        raise ValueError(f"{path}: ED and ES are both frame {frames['ED']}; correct Info.cfg")
    return frames


__all__ = ["find_patient_dirs", "read_acdc", "read_info_cfg"]
