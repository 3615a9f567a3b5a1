"""Builder of a tiny synthetic CHAOS MR training tree with PacingPseudo-style scribbles.

The tree mimics the layout of ``CHAOS_Train_Sets.zip``::

    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/InPhase/IMG-0004-<even>.dcm
    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/OutPhase/IMG-0004-<odd>.dcm
    Train_Sets/MR/<id>/T1DUAL/Ground/IMG-0004-<even>.png     (named after the in-phase file)
    Train_Sets/MR/<id>/T2SPIR/DICOM_anon/IMG-0002-<n>.dcm
    Train_Sets/MR/<id>/T2SPIR/Ground/IMG-0002-<n>.png
    scribble_data/<id>/patient<id>_t1_scb.nii.gz, patient<id>_t2_scb.nii.gz

Conventions, chosen so that tests can state expected values by hand:

- Slice ``k`` is the k-th slice in geometric order, that is by ImagePositionPatient projected
  on the slice normal (row direction x column direction), ascending. File names and
  InstanceNumber follow two other permutations (``FILE_ORDER``, ``INSTANCE_NUMBERS``), so that
  sorting by either gives a wrong stack.
- Arrays in (X, Y, Z) layout: X is the DICOM column index, Y the DICOM row index, Z the
  geometric slice index. ``volume[x, y, k] == pixel_array_of_slice_k[y, x]``, which is what
  ``sitk.GetArrayFromImage(image).transpose(2, 1, 0)`` returns for a SimpleITK series read and
  what nibabel returns for a NIfTI file written by SimpleITK.
- Stored pixel value of slice ``k`` at row ``r``, column ``c``:
  ``2000 * (k + 1) + r * columns + c``, plus 500 for the out-phase series
  (see :func:`stored_value`). Patient 1's in-phase series carries RescaleSlope 2 and
  RescaleIntercept -1000; the other series have no rescale attributes.
- Ground truth per geometric slice ``k`` (see :func:`label_slice`): liver ``x in [2, 10)``,
  ``y in [2, 3 + k)``; right kidney ``x in [12, 16)``, ``y in [20, 24)``; left kidney
  ``x in [20, 24)``, ``y in [20, 24)`` for ``k >= 1``; spleen ``x in [30, 36)``, ``y in [5, 9)``
  for ``k in (2, 3)``. The PNG grey values include the edges of each decoding range
  (56 and 70, 111 and 135, 176 and 200, 241 and 255).
- Scribbles in the PacingPseudo encoding (0 unannotated, 5 background, 1..4 organs) per
  geometric slice ``k`` (see :func:`scribble_slice`): background column ``x == 0``; liver
  ``x in [3, 8)``, ``y == 2``; right kidney ``x == 13``, ``y in [20, 24)``; left kidney
  ``x == 21``, ``y in [21, 23)`` for ``k >= 1``; spleen ``x in [31, 35)``, ``y == 6`` for
  ``k in (2, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENTS = (1, 2, 5)
"""Patient ids of the fixture, taken from the real CHAOS MR training list."""

T1_SHAPE = (40, 32, 5)
"""(columns, rows, slices) of every T1 series, that is the (X, Y, Z) array shape."""
T1_PIXEL_SPACING = (1.5, 1.25)
"""DICOM PixelSpacing of the T1 series: (row spacing, column spacing) in mm."""
T1_SLICE_SPACING = 6.0
T1_SLICE_THICKNESS = 5.5
"""Differs from the slice spacing on purpose: the spacing must come from the positions."""

T2_SHAPE = (36, 28, 4)
T2_PIXEL_SPACING = (1.4, 1.6)
T2_SLICE_SPACING = 7.5
T2_SLICE_THICKNESS = 7.0

# FILE_ORDER[k] is the position of geometric slice k in the sorted file names, and
# INSTANCE_NUMBERS[k] its InstanceNumber. Neither equals the geometric order.
FILE_ORDER = {5: (3, 0, 4, 1, 2), 4: (2, 0, 3, 1)}
INSTANCE_NUMBERS = {5: (2, 5, 1, 4, 3), 4: (4, 2, 1, 3)}

OUT_PHASE_OFFSET = 500
IN_PHASE_RESCALE = {1: (2.0, -1000.0)}
"""Patient id -> (RescaleSlope, RescaleIntercept) of the T1 in-phase series."""

# Row direction, column direction and first slice position (LPS, mm) per patient. Patient 2 is
# oblique; patient 5's slice normal points to -z, so that ascending z is the reverse order.
ORIENTATIONS = {
    1: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (-100.0, -80.0, 20.0)),
    2: ((1.0, 0.0, 0.0), (0.0, 0.8, -0.6), (-90.0, -70.0, 10.0)),
    5: ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (-110.0, 60.0, 50.0)),
}

GREY_LIVER = 63
GREY_RIGHT_KIDNEY = 126
GREY_LEFT_KIDNEY = 189
GREY_SPLEEN = 252


@dataclass
class SeriesInfo:
    """Geometry and files of one synthetic DICOM series."""

    directory: Path
    files: list[Path]
    """Files in geometric order (index k is geometric slice k)."""
    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray
    positions: np.ndarray
    """ImagePositionPatient (LPS, mm) per geometric slice, shape (slices, 3)."""
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    shape: tuple[int, int, int]
    """(X, Y, Z) = (columns, rows, slices)."""

    def ras_affine(self) -> np.ndarray:
        """Return the voxel (x, y, k) -> RAS mm affine that the geometry implies."""
        row_spacing, column_spacing = self.pixel_spacing
        lps = np.eye(4)
        lps[:3, 0] = self.row_direction * column_spacing
        lps[:3, 1] = self.column_direction * row_spacing
        lps[:3, 2] = self.normal * self.slice_spacing
        lps[:3, 3] = self.positions[0]
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@dataclass
class ChaosFixture:
    """Paths and geometry of a synthetic CHAOS tree."""

    root: Path
    train_sets: Path
    scribble_dir: Path
    patients: tuple[int, ...]
    in_phase: dict[int, SeriesInfo] = field(default_factory=dict)
    out_phase: dict[int, SeriesInfo] = field(default_factory=dict)
    t2: dict[int, SeriesInfo] = field(default_factory=dict)

    def patient_dir(self, patient: int) -> Path:
        return self.train_sets / "MR" / str(patient)

    def ground_dir(self, patient: int, modality: str) -> Path:
        sub = "T1DUAL" if modality == "T1" else "T2SPIR"
        return self.patient_dir(patient) / sub / "Ground"

    def scribble_path(self, patient: int, modality: str) -> Path:
        return self.scribble_dir / str(patient) / f"patient{patient}_{modality.lower()}_scb.nii.gz"


def stored_value(k: int, row: int, column: int, columns: int, out_phase: bool = False) -> int:
    """Return the raw stored pixel value of geometric slice ``k`` at (row, column)."""
    return 2000 * (k + 1) + row * columns + column + (OUT_PHASE_OFFSET if out_phase else 0)


def expected_image(shape: tuple[int, int, int], out_phase: bool = False, rescale: tuple[float, float] | None = None) -> np.ndarray:
    """Return the float32 (X, Y, Z) image a correct reader produces for one series."""
    nx, ny, nz = shape
    x, y, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    values = 2000.0 * (k + 1) + y * nx + x + (OUT_PHASE_OFFSET if out_phase else 0)
    if rescale is not None:
        slope, intercept = rescale
        values = values * slope + intercept
    return values.astype(np.float32)


def label_slice(k: int, nx: int, ny: int) -> np.ndarray:
    """Return the canonical (X, Y) label of geometric slice ``k`` (0 background, 1..4 organs)."""
    label = np.zeros((nx, ny), dtype=np.uint8)
    label[2:10, 2 : 3 + k] = 1
    label[12:16, 20:24] = 2
    if k >= 1:
        label[20:24, 20:24] = 3
    if k in (2, 3):
        label[30:36, 5:9] = 4
    return label


def grey_slice(k: int, nx: int, ny: int) -> np.ndarray:
    """Return the CHAOS PNG grey values (rows, columns) of geometric slice ``k``."""
    label = label_slice(k, nx, ny)
    grey = np.zeros((nx, ny), dtype=np.uint8)
    grey[label == 1] = GREY_LIVER
    grey[label == 2] = GREY_RIGHT_KIDNEY
    grey[label == 3] = GREY_LEFT_KIDNEY
    grey[label == 4] = GREY_SPLEEN
    # Values at both ends of each decoding range, on the first two columns of each organ.
    for value, (first_grey, second_grey) in ((1, (70, 56)), (2, (111, 135)), (3, (176, 200)), (4, (241, 255))):
        present = np.nonzero((label == value).any(axis=1))[0]
        if present.size:
            x = present[0]
            grey[x][label[x] == value] = first_grey
            grey[x + 1][label[x + 1] == value] = second_grey
    return np.ascontiguousarray(grey.T)


def expected_label(shape: tuple[int, int, int]) -> np.ndarray:
    nx, ny, nz = shape
    return np.stack([label_slice(k, nx, ny) for k in range(nz)], axis=2)


def scribble_slice(k: int, nx: int, ny: int) -> np.ndarray:
    """Return the PacingPseudo-encoded (X, Y) scribble of geometric slice ``k``."""
    scribble = np.zeros((nx, ny), dtype=np.uint8)
    scribble[0, :] = 5
    scribble[3:8, 2] = 1
    scribble[13, 20:24] = 2
    if k >= 1:
        scribble[21, 21:23] = 3
    if k in (2, 3):
        scribble[31:35, 6] = 4
    return scribble


def raw_scribble(shape: tuple[int, int, int]) -> np.ndarray:
    nx, ny, nz = shape
    return np.stack([scribble_slice(k, nx, ny) for k in range(nz)], axis=2)


def write_png(path: Path, grey: np.ndarray) -> None:
    """Write an 8-bit greyscale PNG whose pixel (row, column) is ``grey[row, column]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(grey, dtype=np.uint8), mode="L").save(path)


def _ds_decimal(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray,
    position: np.ndarray,
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    slice_spacing: float,
    instance_number: int,
    series_uid: str,
    study_uid: str,
    patient: int,
    series_description: str,
    rescale: tuple[float, float] | None = None,
) -> None:
    """Write one MR slice with the geometry attributes a series reader needs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = f"CHAOS-{patient}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame of reference"])
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [_ds_decimal(v) for v in position]
    ds.ImageOrientationPatient = [_ds_decimal(v) for v in (*row_direction, *column_direction)]
    ds.PixelSpacing = [_ds_decimal(v) for v in pixel_spacing]
    ds.SliceThickness = _ds_decimal(slice_thickness)
    ds.SpacingBetweenSlices = _ds_decimal(slice_spacing)
    if rescale is not None:
        ds.RescaleSlope = _ds_decimal(rescale[0])
        ds.RescaleIntercept = _ds_decimal(rescale[1])
    ds.set_pixel_data(np.ascontiguousarray(pixels, dtype=np.uint16), "MONOCHROME2", 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_series(
    directory: Path,
    name_of: Callable[[int], str],
    patient: int,
    shape: tuple[int, int, int],
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    slice_thickness: float,
    out_phase: bool,
    rescale: tuple[float, float] | None,
    description: str,
    study_uid: str,
) -> SeriesInfo:
    nx, ny, nz = shape
    row_direction, column_direction, origin = (np.asarray(v, dtype=float) for v in ORIENTATIONS[patient])
    normal = np.cross(row_direction, column_direction)
    positions = np.stack([origin + k * slice_spacing * normal for k in range(nz)])
    series_uid = generate_uid()
    files = []
    for k in range(nz):
        path = directory / name_of(FILE_ORDER[nz][k])
        rows, columns = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        pixels = stored_value(k, rows, columns, nx, out_phase)
        write_dicom_slice(
            path,
            pixels,
            positions[k],
            row_direction,
            column_direction,
            pixel_spacing,
            slice_thickness,
            slice_spacing,
            INSTANCE_NUMBERS[nz][k],
            series_uid,
            study_uid,
            patient,
            description,
            rescale,
        )
        files.append(path)
    return SeriesInfo(directory, files, row_direction, column_direction, normal, positions, pixel_spacing, slice_spacing, shape)


def _write_ground(series: SeriesInfo, ground_dir: Path) -> None:
    nx, ny, nz = series.shape
    for k, dicom in enumerate(series.files):
        write_png(ground_dir / (dicom.stem + ".png"), grey_slice(k, nx, ny))


def _write_scribble(path: Path, series: SeriesInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(raw_scribble(series.shape), series.ras_affine())
    image.header.set_zooms((series.pixel_spacing[1], series.pixel_spacing[0], series.slice_spacing))
    nib.save(image, str(path))


def build_chaos_tree(root: Path, patients: tuple[int, ...] = PATIENTS) -> ChaosFixture:
    """Write the synthetic CHAOS tree and scribbles under ``root`` and describe what was written."""
    root = Path(root)
    fixture = ChaosFixture(root, root / "Train_Sets", root / "scribble_data", tuple(patients))
    for patient in patients:
        study_uid = generate_uid()
        t1_dir = fixture.patient_dir(patient) / "T1DUAL" / "DICOM_anon"
        t1 = dict(shape=T1_SHAPE, pixel_spacing=T1_PIXEL_SPACING, slice_spacing=T1_SLICE_SPACING,
                  slice_thickness=T1_SLICE_THICKNESS, patient=patient, study_uid=study_uid)
        # The phases share one file numbering (even in-phase, odd out-phase), so that a Ground PNG
        # name matches an in-phase file only.
        fixture.in_phase[patient] = _write_series(
            t1_dir / "InPhase", lambda i: f"IMG-0004-{2 * (i + 1):05d}.dcm", out_phase=False,
            rescale=IN_PHASE_RESCALE.get(patient), description="T1 in-phase", **t1,
        )
        fixture.out_phase[patient] = _write_series(
            t1_dir / "OutPhase", lambda i: f"IMG-0004-{2 * (i + 1) - 1:05d}.dcm", out_phase=True,
            rescale=None, description="T1 out-phase", **t1,
        )
        fixture.t2[patient] = _write_series(
            fixture.patient_dir(patient) / "T2SPIR" / "DICOM_anon", lambda i: f"IMG-0002-{i + 1:05d}.dcm",
            patient=patient, shape=T2_SHAPE, pixel_spacing=T2_PIXEL_SPACING, slice_spacing=T2_SLICE_SPACING,
            slice_thickness=T2_SLICE_THICKNESS, out_phase=False, rescale=None, description="T2 SPIR",
            study_uid=study_uid,
        )
        _write_ground(fixture.in_phase[patient], fixture.ground_dir(patient, "T1"))
        _write_ground(fixture.t2[patient], fixture.ground_dir(patient, "T2"))
        _write_scribble(fixture.scribble_path(patient, "T1"), fixture.in_phase[patient])
        _write_scribble(fixture.scribble_path(patient, "T2"), fixture.t2[patient])
    return fixture
