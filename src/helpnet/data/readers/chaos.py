"""Reader for the CHAOS MR training set (T1-DUAL and T2-SPIR) with PacingPseudo scribbles.

Sources:

- ``images``: the ``Train_Sets`` directory of ``CHAOS_Train_Sets.zip`` or a directory above it;
  the reader looks for ``MR/<id>/`` below it;
- ``scribbles`` (optional): the ``scribble_data`` directory, holding
  ``<id>/patient<id>_t1_scb.nii.gz`` and ``<id>/patient<id>_t2_scb.nii.gz``.

Array layout. A series becomes a float32 array (X, Y, Z): X is the DICOM column index, Y the
DICOM row index and Z the slice index in geometric order, so ``image[x, y, k]`` is pixel
(row y, column x) of slice k. This is ``sitk.GetArrayFromImage(series).transpose(2, 1, 0)``
and the array nibabel returns for a NIfTI file written by SimpleITK, which is the grid the
PacingPseudo scribbles are stored on. Ground-truth PNGs are read the same way, assuming that
PNG pixel (row, column) is DICOM pixel (row, column).
NOTE: that assumption and the scribble layout have not been checked on the real release. The
scribble-versus-label agreement check of each case would catch a transposed in-plane pair.

Geometric order. Slices are sorted by ImagePositionPatient projected on the slice normal
(row direction x column direction of ImageOrientationPatient), ascending, as GDCM sorts a
series for SimpleITK. File names and InstanceNumber are not used for ordering.

Header. Zooms are (column spacing, row spacing, slice spacing): the X step is DICOM
PixelSpacing[1], the Y step PixelSpacing[0], and the slice step comes from the sorted
positions, not from SliceThickness. The affine maps (x, y, k) to RAS mm: DICOM gives LPS, so
its first two rows are negated.

Encodings. Ground PNG grey values are decoded by range (:data:`GROUND_RANGES`). PacingPseudo
scribbles use 0 for unannotated and 5 for background; they become 255 and 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image

from helpnet.data.cases import IGNORE_INDEX, CanonicalCase
from helpnet.data.readers.common import (
    ReaderResult,
    check_class_count,
    check_options,
    check_same_shape,
    check_swapped_axes,
    enforce_unmatched_policy,
    find_files,
    is_hidden,
    load_volume,
    mapping_for_json,
    pair_by_case_id,
    remap_values,
    require_sources,
)

logger = logging.getLogger(__name__)

READER = "chaos"
CHAOS_CLASSES = ("liver", "right kidney", "left kidney", "spleen")
"""Foreground classes in the order of the canonical values 1..4."""

GROUND_RANGES = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))
"""(low, high, class): a Ground PNG grey value in (low, high] decodes to class.

The nominal values are 63, 126, 189 and 252. Decoding by range, not by exact value, accepts
masks whose grey levels were shifted slightly by a resampling or an image editor.
"""

SCRIBBLE_MAPPING = {0: IGNORE_INDEX, 1: 1, 2: 2, 3: 3, 4: 4, 5: 0}
"""PacingPseudo scribble value -> canonical value (0 is unannotated there, 5 background)."""

T1_PHASES = {"in": ("InPhase",), "out": ("OutPhase",), "both": ("InPhase", "OutPhase")}
PHASE_FRAME = {"InPhase": "t1in", "OutPhase": "t1out"}

SLICE_SPACING_WARN = 0.01
"""Relative spread of the slice steps above which a warning is logged."""
SLICE_SPACING_MAX = 0.1
"""Relative spread of the slice steps above which the series is rejected (a gap or a duplicate)."""
ORIENTATION_ATOL = 1e-4

NOTES = (
    "CHAOS MR training set read from DICOM. Slices are ordered by ImagePositionPatient along the "
    "slice normal (the order SimpleITK/GDCM uses). Ground PNG grey values decoded by range: "
    "(55,70] liver, (110,135] right kidney, (175,200] left kidney, (240,255] spleen. PacingPseudo "
    "scribbles remapped 0 -> 255 (unannotated) and 5 -> 0 (background). T1 in-phase and "
    "out-phase share the in-phase ground truth and one scribble. The SPR connectivity target for "
    "CHAOS keeps the largest component of each organ and skips the single-foreground-blob step, "
    "because the abdominal organs are separate; this is this project's adaptation, since "
    "HELPNet's CHAOS variant is not published."
)

_DICOM_PATTERN = re.compile(r"(.+)\.dcm", re.IGNORECASE)
_PNG_PATTERN = re.compile(r"(.+)\.png", re.IGNORECASE)


@dataclass
class DicomSeries:
    """One DICOM series stacked in geometric order."""

    directory: Path
    files: list[Path]
    """DICOM files in geometric order: ``files[k]`` is slice ``k`` of :attr:`image`."""
    image: np.ndarray
    """float32 (X, Y, Z) after RescaleSlope/RescaleIntercept."""
    positions: np.ndarray
    """ImagePositionPatient (LPS, mm) per slice in geometric order, shape (Z, 3)."""
    header: nib.Nifti1Header
    affine: np.ndarray
    """Voxel (x, y, k) -> RAS mm."""


# --- DICOM series --------------------------------------------------------------------------------


def _float_list(ds: pydicom.Dataset, keyword: str, length: int, file: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise ValueError(f"{file}: DICOM attribute {keyword} is missing; the slice geometry cannot be derived without it")
    values = np.atleast_1d(np.asarray(value, dtype=float))
    if values.size != length:
        raise ValueError(f"{file}: DICOM attribute {keyword} has {values.size} values {values.tolist()}, expected {length}")
    return values


def _slice_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """Return the rescaled pixel data of one slice as float32 (X, Y)."""
    pixels = ds.pixel_array.astype(np.float32)
    if pixels.ndim != 2:
        raise ValueError(
            f"{ds.filename}: pixel data has shape {pixels.shape}; expected one 2D slice per file as in the CHAOS release"
        )
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        pixels = pixels * np.float32(slope) + np.float32(intercept)
    return pixels.T


def _slice_spacing(positions: np.ndarray, files: list[Path], directory: Path, fallback: float | None) -> float:
    """Return the slice step (mm) from the projected positions of a sorted series."""
    if len(positions) < 2:
        if fallback is None:
            raise ValueError(
                f"{directory}: single-slice series without SpacingBetweenSlices or SliceThickness; the slice "
                "spacing is undefined"
            )
        logger.warning("%s: single-slice series; slice spacing %.4g mm taken from the DICOM header", directory, fallback)
        return fallback
    steps = np.diff(positions)
    duplicates = np.nonzero(steps <= 1e-6)[0]
    if duplicates.size:
        i = int(duplicates[0])
        raise ValueError(
            f"{directory}: {files[i].name} and {files[i + 1].name} have the same slice position {positions[i]:.4f} mm "
            "along the slice normal; the directory must contain exactly one series (remove duplicates or other series)"
        )
    spacing = float(np.mean(steps))
    spread = float(np.max(np.abs(steps - spacing)) / spacing)
    if spread > SLICE_SPACING_MAX:
        i = int(np.argmax(np.abs(steps - spacing)))
        raise ValueError(
            f"{directory}: irregular slice spacing: step {steps[i]:.4f} mm between {files[i].name} and "
            f"{files[i + 1].name}, mean {spacing:.4f} mm; a slice is missing or the directory mixes series"
        )
    if spread > SLICE_SPACING_WARN:
        logger.warning("%s: slice steps vary by up to %.1f%% around %.4f mm", directory, 100 * spread, spacing)
    return spacing


def _series_header(shape: tuple[int, ...], spacing: tuple[float, float, float], affine: np.ndarray) -> nib.Nifti1Header:
    """Build the NIfTI header of a series: zooms ``spacing`` (mm), sform and qform ``affine``."""
    # NOTE: helpnet.io.make_header calls set_zooms on a header without a data shape, which
    # nibabel 5 rejects, so the shape is set here first.
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    header.set_zooms(spacing)
    return header


def read_dicom_series(directory: Path) -> DicomSeries:
    """Read every ``*.dcm`` file of ``directory`` as one series in geometric slice order."""
    directory = Path(directory)
    files = sorted(find_files(directory, _DICOM_PATTERN, recursive=False).values())
    if not files:
        raise FileNotFoundError(f"{directory}: no .dcm files found; check the CHAOS directory layout")

    datasets = [pydicom.dcmread(file) for file in files]
    first, first_file = datasets[0], files[0]
    orientation = _float_list(first, "ImageOrientationPatient", 6, first_file)
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    row_spacing, column_spacing = _float_list(first, "PixelSpacing", 2, first_file)
    rows, columns = int(first.Rows), int(first.Columns)

    positions = []
    for ds, file in zip(datasets, files):
        if not np.allclose(_float_list(ds, "ImageOrientationPatient", 6, file), orientation, atol=ORIENTATION_ATOL):
            raise ValueError(
                f"{file}: ImageOrientationPatient differs from {first_file.name} in the same directory; "
                "the directory must contain exactly one series"
            )
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise ValueError(
                f"{file}: slice size {int(ds.Rows)}x{int(ds.Columns)} differs from {rows}x{columns} of {first_file.name}; "
                "the directory must contain exactly one series"
            )
        if not np.allclose(_float_list(ds, "PixelSpacing", 2, file), (row_spacing, column_spacing), rtol=1e-4):
            raise ValueError(f"{file}: PixelSpacing differs from {first_file.name}; the directory must contain exactly one series")
        positions.append(_float_list(ds, "ImagePositionPatient", 3, file))

    positions_lps = np.stack(positions)
    projections = positions_lps @ normal
    order = np.argsort(projections, kind="stable")
    files = [files[i] for i in order]
    datasets = [datasets[i] for i in order]
    positions_lps = positions_lps[order]

    header_spacing = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    slice_spacing = _slice_spacing(
        projections[order], files, directory, float(header_spacing) if header_spacing is not None else None
    )
    spacing_between = first.get("SpacingBetweenSlices")
    if spacing_between is not None and not np.isclose(float(spacing_between), slice_spacing, rtol=0.01):
        logger.warning(
            "%s: SpacingBetweenSlices %.4g mm differs from the spacing of the positions %.4g mm; using the positions",
            directory, float(spacing_between), slice_spacing,
        )

    image = np.stack([_slice_pixels(ds) for ds in datasets], axis=2)
    lps = np.eye(4)
    lps[:3, 0] = row_direction * column_spacing
    lps[:3, 1] = column_direction * row_spacing
    lps[:3, 2] = normal * slice_spacing
    lps[:3, 3] = positions_lps[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    header = _series_header(image.shape, (float(column_spacing), float(row_spacing), slice_spacing), affine)
    return DicomSeries(directory, files, image, positions_lps, header, affine)


# --- ground truth and scribbles ------------------------------------------------------------------


def _ground_lookup() -> dict[int, int]:
    lookup = {0: 0}
    for low, high, value in GROUND_RANGES:
        lookup.update({grey: value for grey in range(low + 1, high + 1)})
    return lookup


GROUND_LOOKUP = _ground_lookup()
"""Every valid Ground PNG grey value -> canonical class (the ranges of :data:`GROUND_RANGES` plus 0)."""


def decode_ground_png(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Decode one Ground PNG into a canonical uint8 (X, Y) label; ``shape`` is (X, Y) of the image."""
    with Image.open(path) as png:
        grey = np.asarray(png)
    if grey.ndim == 3:
        # Some tools save greyscale masks as RGB(A); accept them only when the colour channels agree.
        if not (np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])):
            raise ValueError(f"{path}: Ground PNG has differing colour channels; expected a greyscale mask")
        grey = grey[..., 0]
    label_shape = grey.shape[::-1]
    if label_shape != tuple(shape):
        raise ValueError(
            f"{path}: Ground PNG is {grey.shape[0]} rows x {grey.shape[1]} columns but its DICOM slice is "
            f"{shape[1]} rows x {shape[0]} columns; the PNG does not belong to this series"
        )
    invalid = sorted({int(v) for v in np.unique(grey)} - set(GROUND_LOOKUP))
    if invalid:
        ranges = ", ".join(f"({low},{high}]" for low, high, _ in GROUND_RANGES)
        raise ValueError(
            f"{path}: Ground PNG contains grey value {invalid[0]} outside the CHAOS ranges {ranges} and 0 "
            f"(all invalid values: {invalid[:10]}); the file is not a CHAOS MR ground-truth mask"
        )
    return remap_values(grey.T, GROUND_LOOKUP, path, "label")


def read_ground_stack(ground_dir: Path, series: DicomSeries) -> tuple[np.ndarray, list[Path]]:
    """Stack the Ground PNGs of ``series`` in its geometric order, pairing each PNG with its DICOM by base name.

    Returns the uint8 (X, Y, Z) label and the PNG files in slice order.
    """
    pngs = find_files(ground_dir, _PNG_PATTERN, recursive=False)
    dicom_names = {file.stem for file in series.files}
    unpaired = sorted(name for name in pngs if name not in dicom_names)
    if unpaired:
        raise ValueError(
            f"{pngs[unpaired[0]]}: Ground PNG has no DICOM slice named {unpaired[0]}.dcm in {series.directory} "
            f"(unpaired PNGs: {unpaired[:10]}); each PNG must carry the base name of its DICOM slice"
        )
    missing = [file for file in series.files if file.stem not in pngs]
    if missing:
        raise FileNotFoundError(
            f"{ground_dir / (missing[0].stem + '.png')}: Ground PNG for DICOM slice {missing[0]} not found "
            f"({len(missing)} of {len(series.files)} slices lack one); restore the missing PNGs from the CHAOS archive"
        )
    ordered = [pngs[file.stem] for file in series.files]
    shape = series.image.shape[:2]
    label = np.stack([decode_ground_png(png, shape) for png in ordered], axis=2)
    return label, ordered


def read_scribble(path: Path, series: DicomSeries) -> np.ndarray:
    """Load a PacingPseudo scribble on the grid of ``series`` and return it in the canonical encoding."""
    raw, header, affine = load_volume(path)
    image_shape = series.image.shape
    if raw.shape == image_shape[::-1] and raw.shape != image_shape:
        raise ValueError(
            f"{path}: scribble shape {raw.shape} is the reverse of image shape {image_shape} of {series.directory}; "
            "the array looks like (Z, Y, X) as SimpleITK's GetArrayFromImage returns it; store it in (X, Y, Z) order"
        )
    check_same_shape(series.directory, path, image_shape, raw.shape, "scribble")
    # NOTE: the header of the published scribbles has not been inspected; alignment is by voxel
    # index, so differing zooms are reported but not rejected.
    image_zooms = np.asarray(series.header.get_zooms()[:3], dtype=float)
    scribble_zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    if not np.allclose(image_zooms, scribble_zooms, rtol=1e-3):
        logger.warning(
            "%s: scribble zooms %s differ from the DICOM spacing %s of %s; aligned by voxel index",
            path, tuple(np.round(scribble_zooms, 4)), tuple(np.round(image_zooms, 4)), series.directory,
        )
    elif not np.allclose(affine, series.affine, atol=1e-2):
        logger.info("%s: scribble affine differs from the DICOM geometry of %s; aligned by voxel index", path, series.directory)
    return remap_values(raw, SCRIBBLE_MAPPING, path, "scribble")


# --- directory discovery -------------------------------------------------------------------------


def find_mr_root(images: Path) -> Path:
    """Return the ``MR`` directory of a CHAOS training tree given ``Train_Sets`` or a directory above it."""
    candidates = [images / "MR", images / "Train_Sets" / "MR"]
    candidates += sorted(images.glob("*/Train_Sets/MR")) + sorted(images.glob("*/MR"))
    found = []
    for candidate in candidates:
        if candidate.is_dir() and not is_hidden(candidate) and candidate.resolve() not in found:
            found.append(candidate.resolve())
    if not found:
        raise FileNotFoundError(
            f"{images}: no MR directory found at {images}/MR, {images}/Train_Sets/MR or one level below; "
            "pass the extracted CHAOS Train_Sets directory (or its parent) as source 'images'"
        )
    if len(found) > 1:
        raise ValueError(f"{images}: several CHAOS MR directories found: {[str(p) for p in found]}; pass one of them")
    return found[0]


def _patient_dirs(mr_root: Path, selected: list[int] | None) -> dict[int, Path]:
    patients = {
        int(path.name): path
        for path in mr_root.iterdir()
        if path.is_dir() and path.name.isdigit() and not is_hidden(path)
    }
    if not patients:
        raise FileNotFoundError(f"{mr_root}: no patient directories (numeric names) found")
    if selected is None:
        return dict(sorted(patients.items()))
    missing = [p for p in selected if p not in patients]
    if missing:
        raise FileNotFoundError(
            f"{mr_root}: patient(s) {missing} of option 'patients' not found; available: {sorted(patients)}"
        )
    return {p: patients[p] for p in sorted(selected)}


def _parse_options(options: dict | None) -> tuple[dict, str, tuple[str, ...], list[int] | None]:
    options = check_options(options, ("modality", "t1_phase", "patients"), READER)
    modality = str(options.get("modality", "T1")).upper()
    if modality not in ("T1", "T2"):
        raise ValueError(f"reader {READER!r}: option modality is {options['modality']!r}; use T1 or T2")
    phase = str(options.get("t1_phase", "in")).lower()
    if phase not in T1_PHASES:
        raise ValueError(f"reader {READER!r}: option t1_phase is {options['t1_phase']!r}; use in, out or both")
    if modality == "T2" and "t1_phase" in options:
        logger.warning("reader %r: option t1_phase is ignored for modality T2", READER)
    patients = options.get("patients")
    if patients is not None:
        try:
            patients = sorted({int(p) for p in patients})
        except (TypeError, ValueError):
            raise ValueError(
                f"reader {READER!r}: option patients is {patients!r}; give a list of CHAOS patient ids, e.g. [1, 2, 5]"
            ) from None
    return options, modality, T1_PHASES[phase], patients


# --- cases ---------------------------------------------------------------------------------------


@dataclass
class _PatientFiles:
    patient: int
    series_dirs: dict[str, Path]
    """Frame (``t1in``, ``t1out``, ``t2``) -> DICOM directory of a case to emit."""
    reference_dir: Path
    """DICOM directory whose file names the Ground PNGs carry (in-phase for T1) and whose grid the scribble uses."""
    ground_dir: Path | None
    scribble: Path | None = None


def _case_id(patient: int, frame: str) -> str:
    return f"patient{patient}_{frame}"


def _patient_files(patient_dir: Path, patient: int, modality: str, phases: tuple[str, ...]) -> _PatientFiles:
    if modality == "T2":
        base = patient_dir / "T2SPIR"
        series_dirs = {"t2": base / "DICOM_anon"}
        reference_dir = series_dirs["t2"]
    else:
        base = patient_dir / "T1DUAL"
        series_dirs = {PHASE_FRAME[phase]: base / "DICOM_anon" / phase for phase in phases}
        reference_dir = base / "DICOM_anon" / "InPhase"
    for directory in {*series_dirs.values(), reference_dir}:
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: DICOM directory of CHAOS patient {patient} not found")
    ground = base / "Ground"
    return _PatientFiles(patient, series_dirs, reference_dir, ground if ground.is_dir() else None)


def _check_same_slices(reference: DicomSeries, other: DicomSeries) -> None:
    """Require that two T1 phases share the grid, because they share one label and one scribble."""
    check_same_shape(reference.directory, other.directory, reference.image.shape, other.image.shape, "out-phase image")
    offset = float(np.max(np.linalg.norm(reference.positions - other.positions, axis=1)))
    slice_step = float(reference.header.get_zooms()[2])
    if offset > 0.5 * slice_step:
        raise ValueError(
            f"{other.directory}: slice positions differ from {reference.directory} by up to {offset:.3f} mm, more than "
            "half a slice; the two T1 phases cannot share one label and one scribble"
        )
    if offset > 1e-3:
        logger.warning("%s: slice positions differ from %s by up to %.3f mm", other.directory, reference.directory, offset)


def _patient_cases(files: _PatientFiles) -> Iterator[CanonicalCase]:
    """Yield the cases of one patient; the label and scribble are read once and shared by both T1 phases."""
    series = {frame: read_dicom_series(directory) for frame, directory in files.series_dirs.items()}
    reference = next((item for item in series.values() if item.directory == files.reference_dir), None)
    if reference is None:
        reference = read_dicom_series(files.reference_dir)
    for item in series.values():
        if item is not reference:
            _check_same_slices(reference, item)

    label = read_ground_stack(files.ground_dir, reference)[0] if files.ground_dir is not None else None
    scribble = read_scribble(files.scribble, reference) if files.scribble is not None else None

    for frame, item in series.items():
        case = CanonicalCase(
            case_id=_case_id(files.patient, frame),
            subject=f"patient{files.patient}",
            frame=frame,
            image=item.image,
            header=item.header,
            sources={"image": str(item.directory)},
        )
        if scribble is not None:
            case.scribble = scribble
            case.sources["scribble"] = str(files.scribble)
        if label is not None:
            case.label = label
            case.sources["label"] = str(files.ground_dir)
        if scribble is not None and label is not None:
            check_swapped_axes(item.directory, item.header, files.scribble, None, item.image.shape, "scribble", scribble, label)
        yield case


def read_chaos(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult:
    """Read CHAOS MR patients as canonical cases (see the module docstring for sources and layout).

    Options:

    - ``modality``: ``T1`` (default) or ``T2``;
    - ``t1_phase``: ``in`` (default), ``out`` or ``both``. With ``both``, each patient gives two
      cases of one subject that share the label and the scribble;
    - ``patients``: list of patient ids to read (default all);
    - the shared unmatched-file policy options of :mod:`helpnet.data.readers.common`.

    Case ids are ``patient<id>_t1in``, ``patient<id>_t1out`` or ``patient<id>_t2``, and the
    subject is ``patient<id>``. Files are read lazily while the cases are iterated.
    """
    check_class_count(list(classes), len(CHAOS_CLASSES), READER, ", ".join(CHAOS_CLASSES))
    paths = require_sources(sources, ["images"], ["scribbles"], READER)
    options, modality, phases, selected = _parse_options(options)

    mr_root = find_mr_root(paths["images"])
    patients = {
        patient: _patient_files(directory, patient, modality, phases)
        for patient, directory in _patient_dirs(mr_root, selected).items()
    }

    scribble_files: dict[int, Path] = {}
    if "scribbles" in paths:
        pattern = re.compile(rf"patient(\d+)_{modality.lower()}_scb\.nii(?:\.gz)?")
        for key, path in find_files(paths["scribbles"], pattern, recursive=True).items():
            if selected is None or int(key) in selected:
                scribble_files[int(key)] = path

    images: dict[str, Path] = {}
    scribbles: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for patient, files in patients.items():
        scribble = scribble_files.get(patient)
        files.scribble = scribble
        for frame, directory in files.series_dirs.items():
            case_id = _case_id(patient, frame)
            images[case_id] = directory
            if scribble is not None:
                scribbles[case_id] = scribble
            if files.ground_dir is not None:
                labels[case_id] = files.ground_dir
    frames = list(next(iter(patients.values())).series_dirs)
    for patient, path in scribble_files.items():
        if patient not in patients:
            # A scribble without a patient directory; one entry per case it would have served.
            scribbles.update({_case_id(patient, frame): path for frame in frames})

    pairing = pair_by_case_id(images, scribbles, labels)
    usable = {pair.case_id for pair in enforce_unmatched_policy(pairing, options)}
    kept = {
        patient: files
        for patient, files in patients.items()
        if any(_case_id(patient, frame) in usable for frame in files.series_dirs)
    }
    logger.info(
        "CHAOS %s: %d patients, %d cases (%s) from %s", modality, len(kept), len(usable), ", ".join(frames), mr_root
    )

    def cases() -> Iterator[CanonicalCase]:
        for files in kept.values():
            yield from _patient_cases(files)

    label_mapping = {
        "scribble": mapping_for_json(SCRIBBLE_MAPPING),
        "label": {f"({low},{high}]": value for low, high, value in GROUND_RANGES} | {"0": 0},
    }
    return ReaderResult(
        cases=cases(),
        unmatched=pairing.unmatched,
        label_mapping=label_mapping,
        notes=NOTES,
        num_cases=len(usable),
    )
