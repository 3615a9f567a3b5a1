"""ACDC reader on the real ACDC subset and the original Valvano scribble archive."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpnet.data.readers import get_reader
from helpnet.data.readers.acdc import read_acdc

CLASSES = ["RV", "Myo", "LV"]

# Patient -> (ED frame, ES frame, shape, in-plane spacing), from the dataset description of the subset.
EXPECTED = {
    "patient005": (1, 13, (256, 216, 10), 1.40625),
    "patient010": (1, 13, (208, 256, 10), 1.5625),
    "patient024": (1, 9, (208, 256, 8), 1.5625),
    "patient030": (1, 12, (216, 256, 10), 1.44531),
    "patient036": (1, 12, (216, 256, 8), 1.44531),
    "patient039": (1, 10, (208, 256, 9), 1.64062),
    "patient041": (1, 11, (154, 224, 6), 1.78571),
    "patient060": (1, 14, (216, 256, 9), 1.5625),
    "patient064": (1, 12, (216, 256, 10), 1.44531),
    "patient072": (1, 11, (216, 256, 8), 1.5625),
}


@pytest.fixture(scope="session")
def acdc_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "acdc"


@pytest.fixture(scope="module")
def subset_cases(acdc_dir: Path, scribble_dir: Path) -> dict:
    """All 20 cases of the subset, read once for the tests that only inspect them."""
    cases, _ = read_all(acdc_dir, scribble_dir, allow_extra_scribbles=True)
    return {case.case_id: case for case in cases}


def copy_patient(acdc_dir: Path, scribble_dir: Path, target: Path, patient: str = "patient005") -> tuple[Path, Path]:
    """Copy one patient (images, GT, Info.cfg) and its two scribbles into ``target``."""
    images = target / "database" / "training" / patient
    scribbles = target / "scribbles"
    shutil.copytree(acdc_dir / "training" / patient, images)
    scribbles.mkdir(parents=True)
    for path in (scribble_dir / "acdc_scribbles").glob(f"{patient}_*"):
        shutil.copy(path, scribbles / path.name)
    return target / "database", scribbles


def read_all(images: Path, scribbles: Path, **options) -> tuple[list, dict]:
    result = read_acdc({"images": images, "scribbles": scribbles}, options, CLASSES)
    return list(result.cases), result.unmatched


def test_acdc_cases_match_subset(subset_cases: dict) -> None:
    cases = list(subset_cases.values())
    expected_ids = sorted(f"{p}_frame{f:02d}" for p, (ed, es, _, _) in EXPECTED.items() for f in (ed, es))
    assert sorted(c.case_id for c in cases) == expected_ids
    assert len(cases) == 20
    for case in cases:
        ed, es, shape, spacing = EXPECTED[case.subject]
        frame_number = int(case.case_id[-2:])
        assert case.frame == ("ED" if frame_number == ed else "ES")
        assert frame_number in (ed, es)
        assert case.image.shape == shape
        assert case.image.dtype == np.float32
        assert case.scribble.dtype == np.uint8
        assert case.label.dtype == np.uint8
        assert case.spacing[:2] == pytest.approx((spacing, spacing), abs=1e-5)
        assert case.spacing[2] == pytest.approx(10.0)


def test_acdc_arrays_equal_source_files(subset_cases: dict, acdc_dir: Path, scribble_dir: Path) -> None:
    case = subset_cases["patient041_frame11"]
    source = nib.load(acdc_dir / "training" / "patient041" / "patient041_frame11.nii.gz")
    raw_scribble = np.asarray(nib.load(scribble_dir / "acdc_scribbles" / "patient041_frame11_scribble.nii.gz").dataobj)
    raw_label = np.asarray(nib.load(acdc_dir / "training" / "patient041" / "patient041_frame11_gt.nii.gz").dataobj)

    np.testing.assert_array_equal(case.image, source.get_fdata().astype(np.float32))
    np.testing.assert_array_equal(case.label, raw_label)
    assert np.array_equal(case.scribble == 255, raw_scribble == 4)
    annotated = raw_scribble != 4
    np.testing.assert_array_equal(case.scribble[annotated], raw_scribble[annotated])
    # The image header is kept, so its sform (diag(-1, -1, 1), no voxel size) survives.
    np.testing.assert_allclose(case.header.get_best_affine(), source.affine)
    assert case.sources["scribble"].endswith("patient041_frame11_scribble.nii.gz")


def test_acdc_scribbles_disagree_on_16_voxels(subset_cases: dict) -> None:
    cases = list(subset_cases.values())
    annotated = sum(int(np.count_nonzero(c.scribble != 255)) for c in cases)
    disagreeing = sum(int(np.count_nonzero((c.scribble != 255) & (c.scribble != c.label))) for c in cases)
    assert annotated == 86_200
    assert disagreeing == 16


def test_acdc_extra_scribbles_reported(acdc_dir: Path, scribble_dir: Path) -> None:
    result = get_reader("acdc")({"images": acdc_dir, "scribbles": scribble_dir}, {"allow_extra_scribbles": True}, CLASSES)
    extra = result.unmatched["scribbles_without_image"]
    assert len(extra) == 180
    patients = {re.search(r"patient\d{3}", Path(p).name).group(0) for p in extra}
    assert len(patients) == 90
    assert not patients & set(EXPECTED)
    assert result.unmatched["images_without_scribble"] == []
    assert result.unmatched["labels_without_image"] == []


def test_acdc_extra_scribbles_rejected_by_default(acdc_dir: Path, scribble_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"180 scribble\(s\) have no image.*allow_extra_scribbles"):
        read_all(acdc_dir, scribble_dir)


def test_acdc_frames_read_from_info_cfg(acdc_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    images, scribbles = copy_patient(acdc_dir, scribble_dir, tmp_path)
    folder = images / "training" / "patient005"
    # Move the ED frame to frame 4, as ACDC does for patient090.
    (folder / "patient005_frame01.nii.gz").rename(folder / "patient005_frame04.nii.gz")
    (folder / "patient005_frame01_gt.nii.gz").rename(folder / "patient005_frame04_gt.nii.gz")
    (scribbles / "patient005_frame01_scribble.nii.gz").rename(scribbles / "patient005_frame04_scribble.nii.gz")
    (folder / "Info.cfg").write_text("ED: 4\nES: 13\nGroup: DCM\nNbFrame: 30\n")

    cases, unmatched = read_all(images, scribbles)
    frames = {c.case_id: c.frame for c in cases}
    assert frames == {"patient005_frame04": "ED", "patient005_frame13": "ES"}
    assert all(not files for files in unmatched.values())


def test_acdc_missing_frame_file(acdc_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    images, scribbles = copy_patient(acdc_dir, scribble_dir, tmp_path)
    (images / "training" / "patient005" / "Info.cfg").write_text("ED: 2\nES: 13\n")
    with pytest.raises(FileNotFoundError, match=r"ED is frame 2 but .*patient005_frame02\.nii\.gz not found"):
        read_all(images, scribbles)


def test_acdc_info_cfg_without_es(acdc_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    images, scribbles = copy_patient(acdc_dir, scribble_dir, tmp_path)
    (images / "training" / "patient005" / "Info.cfg").write_text("ED: 1\nGroup: DCM\n")
    with pytest.raises(ValueError, match=r"Info\.cfg: missing line 'ES: <frame number>'"):
        read_all(images, scribbles)


def test_acdc_skips_macosx_and_4d(shared_dir: Path, acdc_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    images, scribbles = copy_patient(acdc_dir, scribble_dir, tmp_path)
    # A cine file that is not a valid NIfTI proves that 4D files are never opened.
    (images / "training" / "patient005" / "patient005_4d.nii.gz").write_bytes(b"not a volume")
    with zipfile.ZipFile(shared_dir / "data" / "acdc_scribbles.zip") as archive:
        archive.extract("__MACOSX/acdc_scribbles/._patient005_frame01_scribble.nii.gz", scribbles)
    (scribbles / "._patient005_frame13_scribble.nii.gz").write_bytes(b"AppleDouble")

    cases, unmatched = read_all(images, scribbles)
    assert sorted(c.case_id for c in cases) == ["patient005_frame01", "patient005_frame13"]
    assert all(not files for files in unmatched.values())


def test_acdc_image_without_scribble(acdc_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    images, scribbles = copy_patient(acdc_dir, scribble_dir, tmp_path)
    (scribbles / "patient005_frame13_scribble.nii.gz").unlink()

    with pytest.raises(ValueError, match=r"1 image\(s\) have a label but no scribble: .*patient005_frame13\.nii\.gz"):
        read_all(images, scribbles)

    cases, unmatched = read_all(images, scribbles, allow_unscribbled_labelled=True)
    by_id = {c.case_id: c for c in cases}
    assert by_id["patient005_frame13"].scribble is None
    assert by_id["patient005_frame13"].label is not None
    assert by_id["patient005_frame01"].scribble is not None
    assert [Path(p).name for p in unmatched["images_without_scribble"]] == ["patient005_frame13.nii.gz"]


def test_acdc_rejects_wrong_class_count(acdc_dir: Path, scribble_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"3 classes \(RV, Myo, LV\) but --classes gives 2"):
        read_acdc({"images": acdc_dir, "scribbles": scribble_dir}, {}, ["RV", "LV"])


def test_acdc_rejects_unknown_option(acdc_dir: Path, scribble_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown reader option\(s\) \['allow_extra_scribble'\]"):
        read_acdc({"images": acdc_dir, "scribbles": scribble_dir}, {"allow_extra_scribble": True}, CLASSES)


def test_acdc_no_patient_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no ACDC patient folders"):
        read_acdc({"images": tmp_path}, {}, CLASSES)
