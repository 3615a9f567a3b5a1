"""Reader for the WSL4MIS HDF5 form of ACDC (``ACDC_training_volumes/patientXXX_frameYY.h5``).

Each file holds ``image`` (float32, already clipped at the 99th percentile of its histogram and
min-max scaled to [0, 1] by WSL4MIS), ``label`` (ACDC GT) and ``scribble`` (Valvano scribble,
4 = unannotated), all as (Z, Y, X). The files store no spacing or affine, so the header comes
from the matching NIfTI in ``spacing_reference``: the ACDC image tree
(``patientXXX_frameYY.nii.gz``) or the Valvano scribble folder
(``patientXXX_frameYY_scribble.nii.gz``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from helpnet.data.cases import CanonicalCase
from helpnet.data.readers.acdc import find_patient_dirs, read_info_cfg
from helpnet.data.readers.common import (
    ReaderResult,
    check_case_id,
    check_class_count,
    check_options,
    check_same_shape,
    check_swapped_axes,
    default_scribble_mapping,
    find_files,
    identity_mapping,
    image_header,
    mapping_for_json,
    remap_values,
    require_sources,
)

logger = logging.getLogger(__name__)

VOLUME_FILE = re.compile(r"(patient\d{3}_frame\d{2})\.h5")
REFERENCE_IMAGE = re.compile(r"(patient\d{3}_frame\d{2})\.nii(?:\.gz)?")
REFERENCE_SCRIBBLE = re.compile(r"(patient\d{3}_frame\d{2})_scribble\.nii(?:\.gz)?")
H5_KEYS = ("image", "label", "scribble")
SCRIBBLE_UNANNOTATED = 4
# (Z, Y, X) in the HDF5 files -> canonical (X, Y, Z).
TO_CANONICAL = (2, 1, 0)

NOTES = (
    "WSL4MIS HDF5 volumes: images are already clipped at the 99th percentile of their intensity histogram and "
    "min-max scaled to [0, 1]; arrays transposed from (Z, Y, X); spacing and affine taken from the matching NIfTI."
)


def read_wsl4mis(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult:
    """Read WSL4MIS ACDC volumes, taking each header from the matching NIfTI in ``spacing_reference``."""
    options = check_options(options, (), "wsl4mis")
    paths = require_sources(sources, ["volumes", "spacing_reference"], [], "wsl4mis")
    check_class_count(classes, 3, "wsl4mis", "RV, Myo, LV")

    volumes = find_files(paths["volumes"], VOLUME_FILE)
    if not volumes:
        raise FileNotFoundError(
            f"no WSL4MIS volumes (patientXXX_frameYY.h5) found under {paths['volumes']}; pass the "
            "ACDC_training_volumes folder as source 'volumes'"
        )
    references = {
        **find_files(paths["spacing_reference"], REFERENCE_SCRIBBLE),
        # Images take precedence: their header is the one ACDC itself ships.
        **find_files(paths["spacing_reference"], REFERENCE_IMAGE),
    }
    missing = [case_id for case_id in sorted(volumes) if case_id not in references]
    if missing:
        raise ValueError(
            f"no spacing reference NIfTI for {len(missing)} WSL4MIS case(s): {', '.join(missing[:20])}; provide as "
            f"source 'spacing_reference' a folder containing patientXXX_frameYY.nii.gz (the ACDC image tree) or "
            f"patientXXX_frameYY_scribble.nii.gz (the Valvano scribbles) for each case (searched: {paths['spacing_reference']})"
        )
    phases, phase_note = _phases(paths["spacing_reference"], sorted(volumes))
    scribble_mapping = default_scribble_mapping(3, SCRIBBLE_UNANNOTATED)
    label_mapping = identity_mapping(3)
    case_ids = sorted(volumes)

    def cases() -> Iterator[CanonicalCase]:
        for case_id in case_ids:
            subject, _ = case_id.split("_")
            yield _load_case(case_id, subject, phases[case_id], volumes[case_id], references[case_id], scribble_mapping, label_mapping)

    return ReaderResult(
        cases=cases(),
        unmatched={"images_without_scribble": [], "scribbles_without_image": [], "labels_without_image": []},
        label_mapping={"scribble": mapping_for_json(scribble_mapping), "label": mapping_for_json(label_mapping)},
        notes=f"{NOTES} {phase_note}",
        num_cases=len(case_ids),
    )


def _phases(reference_root: Path, case_ids: list[str]) -> tuple[dict[str, str], str]:
    """Name each frame ED or ES, from Info.cfg where the reference tree has one.

    Without Info.cfg the lower frame number of a patient is taken as ED, which holds for every
    ACDC training patient because ED precedes ES in the cine (patient090: ED 4, ES 11).
    """
    try:
        info = {p: read_info_cfg(d / "Info.cfg") for p, d in find_patient_dirs(reference_root).items()}
    except FileNotFoundError:
        info = {}
    by_patient: dict[str, list[int]] = {}
    for case_id in case_ids:
        patient, frame = case_id.split("_")
        by_patient.setdefault(patient, []).append(int(frame.removeprefix("frame")))
    phases: dict[str, str] = {}
    guessed = 0
    for patient, numbers in by_patient.items():
        for number in numbers:
            case_id = f"{patient}_frame{number:02d}"
            if patient in info:
                frames = {v: k for k, v in info[patient].items()}
                if number not in frames:
                    raise ValueError(
                        f"{case_id}: frame {number} is neither ED nor ES in Info.cfg of {patient} "
                        f"(ED {info[patient]['ED']}, ES {info[patient]['ES']}); check the reference folder"
                    )
                phases[case_id] = frames[number]
            elif len(numbers) == 2:
                guessed += 1
                phases[case_id] = "ED" if number == min(numbers) else "ES"
            else:
                # One frame alone cannot be placed in the cycle without Info.cfg.
                guessed += 1
                phases[case_id] = ""
    note = "ED/ES from Info.cfg." if not guessed else f"ED/ES of {guessed} frame(s) inferred from frame order (no Info.cfg found)."
    return phases, note


def _load_case(
    case_id: str,
    subject: str,
    phase: str,
    volume: Path,
    reference: Path,
    scribble_mapping: dict[int, int],
    label_mapping: dict[int, int],
) -> CanonicalCase:
    check_case_id(case_id, volume)
    with h5py.File(volume, "r") as handle:
        missing = [key for key in H5_KEYS if key not in handle]
        if missing:
            raise ValueError(f"{volume}: missing HDF5 dataset(s) {missing}; expected keys {list(H5_KEYS)}")
        arrays = {key: np.asarray(handle[key][()]) for key in H5_KEYS}
    for key, array in arrays.items():
        if array.ndim != 3:
            raise ValueError(f"{volume}: dataset {key!r} has shape {array.shape}; expected a 3D (Z, Y, X) volume")
    image = arrays["image"].transpose(TO_CANONICAL).astype(np.float32)
    reference_image = nib.load(str(reference))
    check_same_shape(reference, volume, reference_image.shape[:3], image.shape, "image")
    header = image_header(reference_image.header)
    if len(reference_image.shape) != 3:
        raise ValueError(f"{reference}: spacing reference must be a 3D NIfTI, found shape {reference_image.shape}")

    case = CanonicalCase(
        case_id=case_id,
        subject=subject,
        frame=phase,
        image=np.ascontiguousarray(image),
        header=header,
        sources={"image": f"{volume}:image", "scribble": f"{volume}:scribble", "label": f"{volume}:label", "spacing": str(reference)},
    )
    scribble = arrays["scribble"].transpose(TO_CANONICAL)
    label = arrays["label"].transpose(TO_CANONICAL)
    check_same_shape(volume, volume, image.shape, scribble.shape, "scribble")
    check_same_shape(volume, volume, image.shape, label.shape, "label")
    case.scribble = np.ascontiguousarray(remap_values(scribble, scribble_mapping, f"{volume}:scribble", "scribble"))
    case.label = np.ascontiguousarray(remap_values(label, label_mapping, f"{volume}:label", "label"))
    check_swapped_axes(
        reference,
        header,
        f"{volume}:scribble",
        None,
        image.shape,
        "scribble",
        scribble=case.scribble,
        label=case.label,
        label_file=f"{volume}:label",
    )
    return case
