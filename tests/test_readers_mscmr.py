"""MSCMRseg reader on the four real subjects in the CycleMix layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpnet.data.readers.mscmr import read_mscmr

CLASSES = ["RV", "Myo", "LV"]
POLICY = {"allow_extra_scribbles": True, "allow_unscribbled_labelled": True}


@pytest.fixture(scope="session")
def mscmr_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "mscmr"


@pytest.fixture(scope="session")
def mscmr_scribbles(shared_dir: Path) -> Path:
    return shared_dir / "data" / "mscmr_scribbles"


def copy_dataset(mscmr_dir: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """Copy the CycleMix folder into ``target``, leaving out files whose name is in ``skip``."""
    shutil.copytree(mscmr_dir, target, ignore=lambda _dir, names: [n for n in names if n in skip])
    return target


def test_mscmr_four_subjects(mscmr_dir: Path, mscmr_scribbles: Path) -> None:
    result = read_mscmr({"dataset": mscmr_dir, "scribbles": mscmr_scribbles}, POLICY, CLASSES)
    cases = {case.case_id: case for case in result.cases}
    assert sorted(cases) == ["subject26", "subject31", "subject41", "subject43"]
    assert {c for c, case in cases.items() if case.scribble is not None} == {"subject26", "subject31"}
    assert {c for c, case in cases.items() if case.label is not None} == {"subject41", "subject43"}
    assert cases["subject26"].image.shape == (480, 480, 10)
    assert cases["subject31"].image.shape == (480, 480, 12)
    assert cases["subject41"].image.shape == (400, 400, 15)
    assert cases["subject43"].image.shape == (480, 480, 16)
    assert cases["subject41"].spacing[:2] == pytest.approx((0.75, 0.75))
    assert cases["subject26"].spacing[2] == pytest.approx(5.0, abs=1e-5)
    assert all(case.subject == case.case_id for case in cases.values())

    assert len(result.unmatched["scribbles_without_image"]) == 23
    assert [Path(p).name for p in result.unmatched["images_without_scribble"]] == ["subject41_DE.nii.gz", "subject43_DE.nii.gz"]
    assert result.label_mapping["label_official"] == {"0": 0, "200": 2, "500": 3, "600": 1}


def test_mscmr_scribble_remapped(mscmr_dir: Path) -> None:
    result = read_mscmr({"dataset": mscmr_dir}, POLICY, CLASSES)
    case = next(c for c in result.cases if c.case_id == "subject31")
    raw = np.asarray(nib.load(mscmr_dir / "train" / "labels" / "subject31_DE_scribble.nii.gz").dataobj)
    assert raw.dtype == np.uint16
    assert np.array_equal(case.scribble == 255, raw == 4)
    annotated = raw != 4
    np.testing.assert_array_equal(case.scribble[annotated], raw[annotated])


def test_mscmr_subject26_scaling(mscmr_dir: Path) -> None:
    result = read_mscmr({"dataset": mscmr_dir}, POLICY, CLASSES)
    case = next(c for c in result.cases if c.case_id == "subject26")
    source = nib.load(mscmr_dir / "train" / "images" / "subject26_DE.nii.gz")
    raw = np.asarray(source.dataobj.get_unscaled())
    assert raw.dtype == np.int16
    assert source.dataobj.slope == pytest.approx(5.158, abs=1e-3)
    expected = (raw.astype(np.float64) * source.dataobj.slope + source.dataobj.inter).astype(np.float32)
    assert case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image, expected)
    # The stored image is already scaled, so the header must not scale it again.
    assert case.header.get_slope_inter() == (None, None)


def test_mscmr_subject43_affine_quirk(mscmr_dir: Path) -> None:
    result = read_mscmr({"dataset": mscmr_dir}, POLICY, CLASSES)
    case = next(c for c in result.cases if c.case_id == "subject43")
    image = nib.load(mscmr_dir / "TestSet" / "images" / "subject43_DE.nii.gz")
    label = nib.load(mscmr_dir / "TestSet" / "labels" / "subject43_DE_manual.nii.gz")
    assert not np.allclose(image.affine, label.affine, atol=1e-3)
    assert case.sources["affine_differs"] == "label"
    # The canonical case keeps the oblique image geometry, not the label's axis-aligned one.
    np.testing.assert_allclose(case.header.get_best_affine(), image.affine, atol=1e-4)
    np.testing.assert_array_equal(case.label, np.asarray(label.dataobj))


def test_mscmr_unscribbled_rejected_by_default(mscmr_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"2 image\(s\) have a label but no scribble: .*subject41_DE\.nii\.gz, .*subject43_DE\.nii\.gz"):
        read_mscmr({"dataset": mscmr_dir}, {}, CLASSES)


def test_mscmr_official_labels_remapped(mscmr_dir: Path, tmp_path: Path) -> None:
    dataset = copy_dataset(mscmr_dir, tmp_path / "dataset", skip=("subject41_DE_manual.nii.gz",))
    official = tmp_path / "official"
    official.mkdir()
    source = nib.load(mscmr_dir / "val" / "labels" / "subject41_DE_manual.nii.gz")
    canonical = np.asarray(source.dataobj)
    encoded = np.zeros(canonical.shape, dtype=np.uint16)
    encoded[canonical == 1] = 600
    encoded[canonical == 2] = 200
    encoded[canonical == 3] = 500
    nib.save(nib.Nifti1Image(encoded, source.affine, source.header), official / "subject41_DE_manual.nii.gz")
    # Official labels of subjects without an image in the dataset are allowed only on request.
    shutil.copy(official / "subject41_DE_manual.nii.gz", official / "subject1_DE_manual.nii.gz")

    with pytest.raises(ValueError, match=r"1 label\(s\) have no image: .*subject1_DE_manual\.nii\.gz.*allow_extra_labels"):
        read_mscmr({"dataset": dataset, "labels": official}, POLICY, CLASSES)

    result = read_mscmr({"dataset": dataset, "labels": official}, {**POLICY, "allow_extra_labels": True}, CLASSES)
    case = next(c for c in result.cases if c.case_id == "subject41")
    np.testing.assert_array_equal(case.label, canonical)
    assert case.sources["label"] == str(official / "subject41_DE_manual.nii.gz")


def test_mscmr_conflicting_scribbles(mscmr_dir: Path, tmp_path: Path) -> None:
    extra = tmp_path / "scribbles"
    extra.mkdir()
    source = nib.load(mscmr_dir / "train" / "labels" / "subject26_DE_scribble.nii.gz")
    changed = np.asarray(source.dataobj).copy()
    changed[0, 0, 0] = 1 if changed[0, 0, 0] != 1 else 2
    nib.save(nib.Nifti1Image(changed, source.affine, source.header), extra / "subject26_DE_scribble.nii.gz")
    with pytest.raises(ValueError, match=r"subject26_DE_scribble\.nii\.gz: scribble differs from .*train/labels/subject26"):
        read_mscmr({"dataset": mscmr_dir, "scribbles": extra}, POLICY, CLASSES)


def test_mscmr_label_value_outside_set(mscmr_dir: Path, tmp_path: Path) -> None:
    dataset = copy_dataset(mscmr_dir, tmp_path / "dataset", skip=("subject43_DE_manual.nii.gz",))
    source = nib.load(mscmr_dir / "TestSet" / "labels" / "subject43_DE_manual.nii.gz")
    label = np.asarray(source.dataobj).copy()
    label[10, 10, 0] = 7
    nib.save(nib.Nifti1Image(label, source.affine, source.header), dataset / "TestSet" / "labels" / "subject43_DE_manual.nii.gz")
    result = read_mscmr({"dataset": dataset}, POLICY, CLASSES)
    with pytest.raises(ValueError, match=r"subject43_DE_manual\.nii\.gz: label contains value 7 outside the declared set \[0, 1, 2, 3\]"):
        list(result.cases)
