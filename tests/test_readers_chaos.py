"""Tests of the CHAOS MR reader on the synthetic tree of ``chaos_fixture``.

Expected values come from the fixture's stated conventions (its module docstring) and are
worked out by hand here; the SimpleITK comparison is an independent check of the ordering and
the affine.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import chaos_fixture as cf
from helpnet.data.align import align_dataset
from helpnet.data.readers.chaos import decode_ground_png, read_chaos, read_dicom_series

CLASSES = ["liver", "right kidney", "left kidney", "spleen"]
T1_VOXELS = 40 * 32 * 5


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> cf.ChaosFixture:
    """Read-only tree shared by the tests that do not modify files."""
    return cf.build_chaos_tree(tmp_path_factory.mktemp("chaos"))


@pytest.fixture
def own_tree(tmp_path) -> cf.ChaosFixture:
    """One-patient tree that a test may modify."""
    return cf.build_chaos_tree(tmp_path, patients=(1,))


def read_cases(fixture: cf.ChaosFixture, options: dict, classes: list[str] = CLASSES) -> dict:
    result = read_chaos({"images": fixture.train_sets, "scribbles": fixture.scribble_dir}, options, classes)
    return {case.case_id: case for case in result.cases}


# --- slice order and geometry ----------------------------------------------------------------------


def test_series_order_follows_geometry(tree):
    series = read_dicom_series(tree.in_phase[5].directory)

    names = [file.name for file in series.files]
    # FILE_ORDER (3, 0, 4, 1, 2) puts geometric slice k at file number 2 * (FILE_ORDER[k] + 1).
    assert names == ["IMG-0004-00008.dcm", "IMG-0004-00002.dcm", "IMG-0004-00010.dcm", "IMG-0004-00004.dcm", "IMG-0004-00006.dcm"]
    assert names != sorted(names)
    # Patient 5's slice normal is -z, so the geometric order is descending z.
    assert series.positions[:, 2].tolist() == [50.0, 44.0, 38.0, 32.0, 26.0]
    # Slice k stores 2000 * (k + 1) at row 0, column 0 (no rescale for patient 5).
    assert series.image[0, 0, :].tolist() == [2000.0, 4000.0, 6000.0, 8000.0, 10000.0]


def test_series_order_ignores_instance_number(tree):
    series = read_dicom_series(tree.in_phase[2].directory)

    instance_numbers = [int(pydicom.dcmread(file).InstanceNumber) for file in series.files]
    assert instance_numbers == [2, 5, 1, 4, 3]
    assert series.image[0, 0, :].tolist() == [2000.0, 4000.0, 6000.0, 8000.0, 10000.0]


def test_series_matches_simpleitk(tree):
    sitk = pytest.importorskip("SimpleITK")
    for patient in tree.patients:
        directory = tree.t2[patient].directory
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
        reference = reader.Execute()

        series = read_dicom_series(directory)

        assert np.array_equal(series.image, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(reference.GetDirection()).reshape(3, 3) * np.asarray(reference.GetSpacing())
        lps[:3, 3] = reference.GetOrigin()
        assert np.allclose(series.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


def test_image_layout_and_rescale(tree):
    image = read_dicom_series(tree.in_phase[1].directory).image

    assert image.dtype == np.float32
    assert image.shape == (40, 32, 5)
    # Stored value 2000 * (k + 1) + 40 * row + column, RescaleSlope 2, RescaleIntercept -1000.
    assert image[0, 0, 0] == 3000.0
    assert image[1, 0, 0] == 3002.0
    assert image[0, 1, 0] == 3080.0
    assert image[39, 31, 4] == 21558.0


def test_header_spacing_and_affine(tree):
    expected = {
        1: [[-1.25, 0, 0, 100], [0, -1.5, 0, 80], [0, 0, 6, 20], [0, 0, 0, 1]],
        2: [[-1.25, 0, 0, 90], [0, -1.2, -3.6, 70], [0, -0.9, 4.8, 10], [0, 0, 0, 1]],
        5: [[-1.25, 0, 0, 110], [0, 1.5, 0, -60], [0, 0, -6, 50], [0, 0, 0, 1]],
    }
    for patient, affine in expected.items():
        series = read_dicom_series(tree.in_phase[patient].directory)

        assert series.header.get_zooms() == (1.25, 1.5, 6.0)
        assert np.allclose(series.affine, affine)
        assert np.allclose(series.header.get_sform(), affine, atol=1e-5)


def test_duplicate_slice_position_rejected(own_tree):
    directory = own_tree.in_phase[1].directory
    shutil.copy(directory / "IMG-0004-00002.dcm", directory / "IMG-0004-00012.dcm")

    with pytest.raises(ValueError, match="same slice position") as error:
        read_dicom_series(directory)
    assert "IMG-0004-00012.dcm" in str(error.value)


def test_missing_slice_rejected(own_tree):
    # Geometric slice 2 is file IMG-0004-00010.dcm; without it one step is twice the others.
    (own_tree.in_phase[1].directory / "IMG-0004-00010.dcm").unlink()

    with pytest.raises(ValueError, match="irregular slice spacing"):
        read_dicom_series(own_tree.in_phase[1].directory)


# --- ground truth ------------------------------------------------------------------------------------


def test_ground_png_decoding(tmp_path):
    grey = np.array([[0, 56, 63, 70, 111, 126, 135, 176, 189, 200, 241, 252, 255]], dtype=np.uint8)
    path = tmp_path / "slice.png"
    cf.write_png(path, grey)

    label = decode_ground_png(path, (13, 1))

    assert label.dtype == np.uint8
    assert label.shape == (13, 1)
    assert label[:, 0].tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


@pytest.mark.parametrize("value", [1, 55, 71, 110, 136, 175, 201, 240])
def test_ground_png_invalid_value(tmp_path, value):
    path = tmp_path / "IMG-0004-00002.png"
    cf.write_png(path, np.array([[0, 63, value]], dtype=np.uint8))

    with pytest.raises(ValueError) as error:
        decode_ground_png(path, (3, 1))
    message = str(error.value)
    assert str(path) in message
    assert f"grey value {value} " in message


def test_label_counts_in_geometric_order(tree):
    case = read_cases(tree, {"modality": "T1", "patients": [5]})["patient5_t1in"]

    counts = {value: int(np.count_nonzero(case.label == value)) for value in range(5)}
    # Liver 8 x (k + 1) over k = 0..4, kidneys 4 x 4 on 5 and 4 slices, spleen 6 x 4 on 2 slices.
    assert counts == {0: T1_VOXELS - 312, 1: 120, 2: 80, 3: 64, 4: 48}
    liver_per_slice = [int(np.count_nonzero(case.label[:, :, k] == 1)) for k in range(5)]
    assert liver_per_slice == [8, 16, 24, 32, 40]
    assert case.label[2, 2, 0] == 1
    assert case.label[2, 3, 0] == 0


def test_bad_ground_value_names_png(own_tree):
    png = own_tree.ground_dir(1, "T1") / "IMG-0004-00004.png"
    with Image.open(png) as handle:
        grey = np.asarray(handle).copy()
    grey[0, 0] = 100
    cf.write_png(png, grey)

    with pytest.raises(ValueError) as error:
        read_cases(own_tree, {"modality": "T1"})
    assert str(png) in str(error.value)
    assert "grey value 100 " in str(error.value)


def test_missing_ground_png(own_tree):
    png = own_tree.ground_dir(1, "T1") / "IMG-0004-00006.png"
    png.unlink()

    with pytest.raises(FileNotFoundError) as error:
        read_cases(own_tree, {"modality": "T1"})
    assert str(png) in str(error.value)


def test_unpaired_ground_png(own_tree):
    ground = own_tree.ground_dir(1, "T1")
    extra = ground / "IMG-0004-00001.png"
    shutil.copy(ground / "IMG-0004-00002.png", extra)

    with pytest.raises(ValueError) as error:
        read_cases(own_tree, {"modality": "T1"})
    assert str(extra) in str(error.value)


# --- scribbles ---------------------------------------------------------------------------------------


def test_scribble_remapping_counts(tree):
    raw = np.asarray(nib.load(tree.scribble_path(1, "T1")).dataobj)
    assert int(np.count_nonzero(raw == 0)) == 6179
    assert int(np.count_nonzero(raw == 5)) == 160

    case = read_cases(tree, {"modality": "T1", "patients": [1]})["patient1_t1in"]

    counts = {int(v): int(n) for v, n in zip(*np.unique(case.scribble, return_counts=True))}
    # Background column x == 0 (32 x 5), liver 5 x 5, right kidney 4 x 5, left kidney 2 x 4, spleen 4 x 2.
    assert counts == {0: 160, 1: 25, 2: 20, 3: 8, 4: 8, 255: 6179}
    assert case.scribble.dtype == np.uint8
    assert case.scribble[0, 7, 3] == 0
    assert case.scribble[1, 7, 3] == 255


def test_scribble_invalid_value(own_tree):
    path = own_tree.scribble_path(1, "T1")
    image = nib.load(path)
    raw = np.asarray(image.dataobj).copy()
    raw[10, 10, 1] = 7
    nib.save(nib.Nifti1Image(raw, image.affine, image.header), str(path))

    with pytest.raises(ValueError) as error:
        read_cases(own_tree, {"modality": "T1"})
    assert str(path) in str(error.value)
    assert "value 7 " in str(error.value)


def test_scribble_shape_mismatch(own_tree):
    path = own_tree.scribble_path(1, "T1")
    nib.save(nib.Nifti1Image(np.zeros((40, 32, 4), dtype=np.uint8), np.eye(4)), str(path))

    with pytest.raises(ValueError) as error:
        read_cases(own_tree, {"modality": "T1"})
    message = str(error.value)
    assert str(path) in message
    assert str(own_tree.in_phase[1].directory) in message
    assert "(40, 32, 4)" in message
    assert "(40, 32, 5)" in message


def test_scribble_in_zyx_order_rejected(own_tree):
    path = own_tree.scribble_path(1, "T1")
    raw = cf.raw_scribble(cf.T1_SHAPE).transpose(2, 1, 0)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(path))

    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        read_cases(own_tree, {"modality": "T1"})


def test_missing_scribble_needs_policy_option(own_tree):
    path = own_tree.scribble_path(1, "T1")
    path.unlink()

    with pytest.raises(ValueError, match="label but no scribble"):
        read_cases(own_tree, {"modality": "T1"})

    cases = read_cases(own_tree, {"modality": "T1", "allow_unscribbled_labelled": True})
    assert list(cases) == ["patient1_t1in"]
    assert cases["patient1_t1in"].scribble is None
    assert cases["patient1_t1in"].label is not None


# --- options and cases -------------------------------------------------------------------------------


def test_t1_in_phase_cases(tree):
    cases = read_cases(tree, {"modality": "T1"})

    assert sorted(cases) == ["patient1_t1in", "patient2_t1in", "patient5_t1in"]
    case = cases["patient2_t1in"]
    assert case.subject == "patient2"
    assert case.frame == "t1in"
    assert case.image[0, 0, 0] == 2000.0
    assert case.sources["image"] == str(tree.in_phase[2].directory)
    assert case.sources["label"] == str(tree.ground_dir(2, "T1"))
    assert case.sources["scribble"] == str(tree.scribble_path(2, "T1"))


def test_t1_out_phase_cases(tree):
    cases = read_cases(tree, {"modality": "T1", "t1_phase": "out"})

    assert sorted(cases) == ["patient1_t1out", "patient2_t1out", "patient5_t1out"]
    case = cases["patient1_t1out"]
    # The out-phase series adds 500 and has no rescale.
    assert case.image[0, 0, 0] == 2500.0
    assert case.image[0, 0, 4] == 10500.0
    assert int(np.count_nonzero(case.label == 1)) == 120


def test_t1_both_phases_share_label_and_scribble(tree):
    cases = read_cases(tree, {"modality": "T1", "t1_phase": "both"})

    assert sorted(cases) == [f"patient{p}_t1{phase}" for p in (1, 2, 5) for phase in ("in", "out")]
    inside, outside = cases["patient5_t1in"], cases["patient5_t1out"]
    assert inside.subject == outside.subject == "patient5"
    assert (inside.frame, outside.frame) == ("t1in", "t1out")
    assert np.array_equal(inside.label, outside.label)
    assert np.array_equal(inside.scribble, outside.scribble)
    assert outside.image[0, 0, 0] - inside.image[0, 0, 0] == 500.0


def test_t2_cases(tree):
    cases = read_cases(tree, {"modality": "T2"})

    assert sorted(cases) == ["patient1_t2", "patient2_t2", "patient5_t2"]
    case = cases["patient1_t2"]
    assert case.image.shape == (36, 28, 4)
    assert case.spacing == pytest.approx((1.6, 1.4, 7.5))
    # T2 liver 8 x (k + 1) over k = 0..3; background column x == 0 is 28 x 4.
    assert int(np.count_nonzero(case.label == 1)) == 80
    assert int(np.count_nonzero(case.scribble == 0)) == 112


def test_images_source_may_be_parent_directory(tree, tmp_path):
    nested = tmp_path / "CHAOS_Train_Sets"
    nested.mkdir()
    (nested / "Train_Sets").symlink_to(tree.train_sets, target_is_directory=True)

    for images in (tree.train_sets, tree.root, tmp_path):
        options = {"modality": "T2", "patients": [1], "allow_unscribbled_labelled": True}
        result = read_chaos({"images": images}, options, CLASSES)
        assert [case.case_id for case in result.cases] == ["patient1_t2"]


def test_patients_option_selects_scribbles(tree):
    result = read_chaos(
        {"images": tree.train_sets, "scribbles": tree.scribble_dir}, {"modality": "T1", "patients": ["2"]}, CLASSES
    )

    assert result.num_cases == 1
    assert result.unmatched["scribbles_without_image"] == []
    assert [case.case_id for case in result.cases] == ["patient2_t1in"]


@pytest.mark.parametrize(
    ("options", "classes", "match"),
    [
        ({"modality": "T3"}, CLASSES, "use T1 or T2"),
        ({"t1_phase": "mid"}, CLASSES, "use in, out or both"),
        ({"phase": "in"}, CLASSES, "unknown reader option"),
        ({"patients": [4]}, CLASSES, r"patient\(s\) \[4\]"),
        ({}, ["liver", "kidney", "spleen"], "4 classes"),
    ],
)
def test_invalid_options(tree, options, classes, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        read_cases(tree, options, classes)


def test_label_mapping_and_notes(tree):
    result = read_chaos({"images": tree.train_sets, "scribbles": tree.scribble_dir}, {"modality": "T2"}, CLASSES)

    assert result.label_mapping["scribble"] == {"0": 255, "1": 1, "2": 2, "3": 3, "4": 4, "5": 0}
    assert result.label_mapping["label"]["(55,70]"] == 1
    assert "connectivity" in result.notes
    assert "adaptation" in result.notes


# --- full alignment ------------------------------------------------------------------------------------


def test_align_dataset_writes_manifest(tree, tmp_path):
    output = tmp_path / "chaos_t1"

    align_dataset(
        "chaos",
        {"images": tree.root, "scribbles": tree.scribble_dir},
        {"modality": "T1", "t1_phase": "both"},
        CLASSES,
        output,
    )

    with open(output / "cases.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["case"] for row in rows] == [f"patient{p}_t1{phase}" for p in (1, 2, 5) for phase in ("in", "out")]
    for row in rows:
        assert row["subject"] == row["case"].split("_")[0]
        assert row["frame"] == row["case"].split("_")[1]
        assert row["shape"] == "40x32x5"
        assert row["spacing"] == "1.25x1.5x6"
        assert row["has_scribble"] == "true"
        assert row["has_label"] == "true"

    image = nib.load(output / "cases" / "patient5_t1out" / "image.nii.gz")
    assert image.header.get_zooms() == (1.25, 1.5, 6.0)
    assert np.allclose(image.affine, [[-1.25, 0, 0, 110], [0, 1.5, 0, -60], [0, 0, -6, 50], [0, 0, 0, 1]])
    scribble = np.asarray(nib.load(output / "cases" / "patient5_t1out" / "scribble.nii.gz").dataobj)
    assert int(np.count_nonzero(scribble == 255)) == 6179

    info = json.loads((output / "dataset.json").read_text())
    assert info["classes"] == ["background", *CLASSES]
    assert info["source_label_mapping"]["scribble"]["5"] == 0
