"""Tests of the synthetic cardiac MR generator and the files `helpnet demo` writes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from helpnet.cli import main
from helpnet.data.demo import UNANNOTATED, generate_demo, generate_subject, write_demo

BACKGROUND, RV, MYO, LV = 0, 1, 2, 3

# The ACDC scribbles annotate 1.07% of all voxels. The demo volumes are small crops around the
# heart, so the same strokes cover a somewhat larger share of each volume.
ANNOTATED_FRACTION_RANGE = (0.005, 0.03)


@pytest.fixture(scope="module")
def cases():
    return generate_demo(subjects=6, seed=0)


def test_case_ids_and_frames(cases):
    ids = [c.case_id for c in cases]
    assert ids == [f"subject{i:02d}_{f}" for i in range(1, 7) for f in ("ED", "ES")]
    assert {c.frame for c in cases} == {"ED", "ES"}
    assert cases[0].subject == "subject01"


def test_same_seed_is_byte_identical():
    first = generate_subject(seed=5, index=2)
    second = generate_subject(seed=5, index=2)
    for a, b in zip(first, second):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.label.tobytes() == b.label.tobytes()
        assert a.scribble.tobytes() == b.scribble.tobytes()
        assert a.spacing == b.spacing


def test_other_seed_differs():
    first = generate_subject(seed=5, index=2)[0]
    other = generate_subject(seed=6, index=2)[0]
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)
    assert first.spacing != other.spacing


def test_subject_independent_of_count(cases):
    # Subject 3 draws from its own stream, so it does not depend on how many subjects are made.
    alone = generate_subject(seed=0, index=3)
    assert np.array_equal(alone[0].image, cases[4].image)
    assert np.array_equal(alone[1].scribble, cases[5].scribble)


def test_dtypes_and_value_sets(cases):
    for case in cases:
        assert case.image.dtype == np.float32
        assert case.label.dtype == np.uint8
        assert case.scribble.dtype == np.uint8
        assert set(np.unique(case.label)) == {BACKGROUND, RV, MYO, LV}, case.case_id
        assert set(np.unique(case.scribble)) == {BACKGROUND, RV, MYO, LV, UNANNOTATED}, case.case_id
        assert case.image.shape == case.label.shape == case.scribble.shape


def test_geometry_ranges(cases):
    for case in cases:
        nx, ny, nz = case.image.shape
        sx, sy, sz = case.spacing
        assert 96 <= nx <= 128, case.image.shape
        assert 96 <= ny <= 128, case.image.shape
        assert 6 <= nz <= 12, case.image.shape
        assert 1.3 <= sx <= 1.8, case.spacing
        assert sx == sy, case.spacing
        assert 5.0 <= sz <= 10.0, case.spacing
    for ed, es in zip(cases[0::2], cases[1::2]):
        assert ed.image.shape == es.image.shape
        assert ed.spacing == es.spacing


def test_annotated_fraction_in_range(cases):
    low, high = ANNOTATED_FRACTION_RANGE
    for case in cases:
        fraction = np.count_nonzero(case.scribble != UNANNOTATED) / case.scribble.size
        assert low <= fraction <= high, (case.case_id, fraction)


def test_scribbles_agree_with_labels(cases):
    for case in cases:
        annotated = case.scribble != UNANNOTATED
        disagreement = np.count_nonzero(case.scribble[annotated] != case.label[annotated])
        assert disagreement == 0, case.case_id


def test_scribbles_on_most_slices(cases):
    for case in cases:
        annotated_slices = np.any(case.scribble != UNANNOTATED, axis=(0, 1))
        assert annotated_slices.mean() >= 0.6, (case.case_id, annotated_slices)


def test_strokes_are_thin(cases):
    # A stroke of width 1-2 voxels has no voxel whose whole 3x3 neighbourhood is annotated.
    square = np.ones((3, 3), dtype=bool)
    for case in cases:
        for z in range(case.scribble.shape[2]):
            for value in (BACKGROUND, RV, MYO, LV):
                stroke = case.scribble[..., z] == value
                assert not ndimage.binary_erosion(stroke, structure=square).any(), (case.case_id, z, value)


def test_es_cavity_smaller_than_ed(cases):
    for ed, es in zip(cases[0::2], cases[1::2]):
        assert np.count_nonzero(es.label == LV) < 0.8 * np.count_nonzero(ed.label == LV), ed.subject
        assert np.count_nonzero(es.label == RV) < np.count_nonzero(ed.label == RV), ed.subject


def test_apical_slices_lose_rv(cases):
    rv_missing = 0
    for case in cases:
        for z in range(case.label.shape[2]):
            present = set(np.unique(case.label[..., z]))
            if MYO in present and RV not in present:
                rv_missing += 1
        # The basal slice shows all three structures.
        assert {RV, MYO, LV} <= set(np.unique(case.label[..., 0])), case.case_id
    assert rv_missing >= 1


def test_heart_shrinks_towards_apex(cases):
    for case in cases:
        heart = np.count_nonzero(case.label > 0, axis=(0, 1))
        assert heart[0] > heart[-1] > 0, (case.case_id, heart)


def test_blood_brighter_than_myocardium(cases):
    for case in cases:
        blood = case.image[case.label == LV].mean()
        muscle = case.image[case.label == MYO].mean()
        assert blood > 1.5 * muscle, (case.case_id, blood, muscle)


def test_cli_writes_nifti_folder(tmp_path):
    output = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(output), "--subjects", "2", "--seed", "3"]) == 0

    expected = [generate_subject(3, 1), generate_subject(3, 2)]
    for case in (c for pair in expected for c in pair):
        image = nib.load(output / "images" / f"{case.case_id}.nii.gz")
        label = nib.load(output / "labels" / f"{case.case_id}.nii.gz")
        scribble = nib.load(output / "scribbles" / f"{case.case_id}.nii.gz")
        assert image.get_data_dtype() == np.float32
        assert label.get_data_dtype() == np.uint8
        assert scribble.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), case.image)
        np.testing.assert_array_equal(np.asanyarray(label.dataobj), case.label)
        np.testing.assert_array_equal(np.asanyarray(scribble.dataobj), case.scribble)
        for loaded in (image, label, scribble):
            np.testing.assert_allclose(loaded.header.get_zooms(), case.spacing, rtol=1e-6)
            np.testing.assert_allclose(loaded.affine, np.diag([*case.spacing, 1.0]), rtol=1e-6)

    assert sorted(p.name for p in (output / "images").iterdir()) == [
        "subject01_ED.nii.gz", "subject01_ES.nii.gz", "subject02_ED.nii.gz", "subject02_ES.nii.gz",
    ]
    assert (output / "demo.json").is_file()
    # The temporary directory was renamed, so nothing else is left beside the output.
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_rewrite_replaces_earlier_demo(tmp_path):
    output = tmp_path / "demo"
    write_demo(output, subjects=1, seed=0)
    write_demo(output, subjects=2, seed=0)
    assert len(list((output / "labels").iterdir())) == 4


def test_refuses_foreign_directory(tmp_path):
    output = tmp_path / "data"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        write_demo(output, subjects=1, seed=0)
    assert (output / "notes.txt").read_text() == "keep me"


def test_zero_subjects_rejected(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        write_demo(tmp_path / "demo", subjects=0)


def test_demo_reader_reads_output(tmp_path: Path):
    from helpnet.data.readers import get_reader

    output = write_demo(tmp_path / "demo", subjects=1, seed=1)
    result = get_reader("demo")({"synthetic": output}, {}, ["RV", "Myo", "LV"])
    cases = {c.case_id: c for c in result.cases}
    assert sorted(cases) == ["subject01_ED", "subject01_ES"]
    expected = generate_subject(1, 1)[0]
    loaded = cases["subject01_ED"]
    assert loaded.subject == "subject01"
    assert loaded.frame == "ED"
    # The reader maps the unannotated value 4 to the canonical 255.
    np.testing.assert_array_equal(loaded.scribble == 255, expected.scribble == UNANNOTATED)
    np.testing.assert_array_equal(loaded.label, expected.label)
