"""Metric functions: hand-computed values on small masks, the empty-mask rule, and agreement with medpy 0.5.2."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy.ndimage import binary_dilation, binary_erosion, generate_binary_structure

from helpnet.evaluation.metrics import (
    assd,
    check_same_geometry,
    dice,
    empty_state,
    hd95,
    image_diagonal_mm,
    score_case,
    surface_distances,
)
from helpnet.io import make_header, save_nifti


def cube(shape: tuple[int, ...], start: int, stop: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(start, stop) for _ in shape)] = True
    return mask


# Dice ---------------------------------------------------------------------------------------


def test_dice_overlapping_cubes():
    # 4^3 cubes offset by one voxel on each axis overlap in a 3^3 cube: 2 * 27 / (64 + 64).
    first = cube((8, 8, 8), 2, 6)
    second = cube((8, 8, 8), 3, 7)
    assert dice(first, second) == pytest.approx(54 / 128, abs=1e-12)
    assert dice(second, first) == pytest.approx(54 / 128, abs=1e-12)


def test_dice_identical_and_disjoint():
    first = cube((6, 6, 6), 0, 2)
    second = cube((6, 6, 6), 4, 6)
    assert dice(first, first) == 1.0
    assert dice(first, second) == 0.0


def test_dice_empty_masks():
    empty = np.zeros((4, 4, 4), dtype=bool)
    full = cube((4, 4, 4), 1, 3)
    assert dice(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert dice(full, empty) == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="shape"):
        hd95(np.ones((4, 4, 4)), np.ones((4, 5, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        score_case(np.zeros((3, 3, 3), int), np.zeros((3, 3, 2), int), (1, 1, 1), {1: "A"})


def test_invalid_spacing_raises():
    mask = cube((4, 4, 4), 1, 3)
    with pytest.raises(ValueError, match="3 axes"):
        hd95(mask, mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        hd95(mask, mask, (1.0, 0.0, 1.0))


# Surface distances --------------------------------------------------------------------------


def test_single_voxels_distance_with_spacing():
    pred = np.zeros((5, 6, 2), dtype=bool)
    ref = np.zeros((5, 6, 2), dtype=bool)
    pred[0, 0, 0] = True
    ref[3, 4, 1] = True
    d_pred, d_ref = surface_distances(pred, ref, (2.0, 1.0, 3.0))
    expected = math.sqrt(6.0**2 + 4.0**2 + 3.0**2)
    np.testing.assert_allclose(d_pred, [expected], atol=1e-12)
    np.testing.assert_allclose(d_ref, [expected], atol=1e-12)
    assert hd95(pred, ref, (2.0, 1.0, 3.0)) == pytest.approx(expected, abs=1e-12)


def test_nested_cubes_distances():
    # A 3^3 cube centred in a 5^3 cube. The inner cube's 26 surface voxels each touch the outer
    # surface across one face (1.0). Of the outer cube's 98 surface voxels, 54 face voxels are
    # 1.0 from the inner surface, 36 edge voxels sqrt(2) and 8 corners sqrt(3).
    outer = cube((9, 9, 9), 2, 7)
    inner = cube((9, 9, 9), 3, 6)
    d_inner, d_outer = surface_distances(inner, outer, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(np.sort(d_inner), np.ones(26), atol=1e-12)
    expected_outer = np.sort(np.concatenate([np.ones(54), np.full(36, math.sqrt(2)), np.full(8, math.sqrt(3))]))
    np.testing.assert_allclose(np.sort(d_outer), expected_outer, atol=1e-12)

    # Pooled: 80 ones, 36 sqrt(2), 8 sqrt(3); the 95th percentile sits at rank 116.85 of 0..123,
    # between two sqrt(3) values.
    assert hd95(inner, outer, 1.0) == pytest.approx(math.sqrt(3), abs=1e-12)
    assert hd95(inner, outer, 1.0, definition="max_directed") == pytest.approx(math.sqrt(3), abs=1e-12)
    expected_assd = (80 * 1.0 + 36 * math.sqrt(2) + 8 * math.sqrt(3)) / 124
    assert assd(inner, outer, 1.0) == pytest.approx(expected_assd, abs=1e-12)


def test_missing_slice_at_10mm_gives_10mm():
    # The prediction lacks the top slice of a 6x6x5 block with 10 mm slices. Reference surface:
    # 36 top voxels at 10 mm, 96 shared with the prediction at 0. Prediction surface: 112 voxels,
    # of which the 16 inner voxels of its new top are 1 or 2 mm from the reference's side wall.
    ref = np.zeros((10, 10, 7), dtype=bool)
    ref[2:8, 2:8, 1:6] = True
    pred = ref.copy()
    pred[:, :, 5] = False
    spacing = (1.0, 1.0, 10.0)

    d_pred, d_ref = surface_distances(pred, ref, spacing)
    assert d_pred.size == 112
    assert d_ref.size == 132
    np.testing.assert_allclose(np.sort(d_ref)[-36:], np.full(36, 10.0))
    assert np.count_nonzero(d_ref) == 36
    np.testing.assert_allclose(np.sort(d_pred)[-16:], [1.0] * 12 + [2.0] * 4)

    assert hd95(pred, ref, spacing) == 10.0
    assert hd95(pred, ref, spacing, definition="max_directed") == 10.0
    assert assd(pred, ref, spacing) == pytest.approx((12 * 1.0 + 4 * 2.0 + 36 * 10.0) / 244, abs=1e-12)
    assert medpy_binary.hd95(pred, ref, voxelspacing=spacing) == 10.0


def test_hd95_definitions_differ_on_distant_blob():
    # A 30x30 square and a prediction that adds a 3x3 blob diagonally beyond its corner. The 8
    # blob surface voxels are 3.3% of the 240 pooled distances, so the pooled 95th percentile is 0.
    # Directed from the prediction they are 8 of 124 values. Rank 116.85 then lies between the
    # blob's two nearest voxels, sqrt(21^2 + 21^2) and sqrt(21^2 + 22^2) from the corner (39, 39).
    ref = np.zeros((110, 110), dtype=bool)
    ref[10:40, 10:40] = True
    pred = ref.copy()
    pred[60:63, 60:63] = True
    nearest, second = math.sqrt(882), math.sqrt(925)
    expected_directed = nearest + 0.85 * (second - nearest)

    assert hd95(pred, ref, (1.0, 1.0)) == 0.0
    assert hd95(pred, ref, (1.0, 1.0), definition="max_directed") == pytest.approx(expected_directed, abs=1e-9)
    assert expected_directed == pytest.approx(30.3065, abs=1e-4)
    assert medpy_binary.hd95(pred, ref) == 0.0


def test_unknown_definition_raises():
    mask = cube((4, 4), 1, 3)
    with pytest.raises(ValueError, match="max_directed"):
        hd95(mask, mask, 1.0, definition="mean")


# Empty masks --------------------------------------------------------------------------------


def test_empty_both_gives_zero_distances():
    empty = np.zeros((5, 5, 5), dtype=bool)
    d_pred, d_ref = surface_distances(empty, empty, (1, 1, 1))
    assert d_pred.size == 0
    assert d_ref.size == 0
    assert hd95(empty, empty, (1, 1, 1)) == 0.0
    assert assd(empty, empty, (1, 1, 1)) == 0.0
    assert empty_state(empty, empty) == "both"


def test_empty_one_gives_nan_or_penalty():
    empty = np.zeros((5, 5, 5), dtype=bool)
    mask = cube((5, 5, 5), 1, 4)
    for pred, ref, state in ((empty, mask, "pred"), (mask, empty, "ref")):
        assert empty_state(pred, ref) == state
        assert math.isnan(hd95(pred, ref, (1, 1, 1)))
        assert math.isnan(hd95(pred, ref, (1, 1, 1), definition="max_directed"))
        assert math.isnan(assd(pred, ref, (1, 1, 1)))
        assert hd95(pred, ref, (1, 1, 1), empty_penalty=123.0) == 123.0
        assert assd(pred, ref, (1, 1, 1), empty_penalty=123.0) == 123.0
    # The 3x3x3 cube has 26 surface voxels; they carry the fill value, the empty side has none.
    d_pred, d_ref = surface_distances(mask, empty, (1, 1, 1))
    assert d_pred.size == 26
    assert np.all(np.isnan(d_pred))
    assert d_ref.size == 0


def test_image_diagonal():
    assert image_diagonal_mm((3, 4, 12), (1.0, 1.0, 1.0)) == 13.0
    assert image_diagonal_mm((10, 10, 2), (0.3, 0.4, 0.0 + 1.0)) == pytest.approx(math.sqrt(9 + 16 + 4))


def test_score_case_rows():
    # Class 1 matches exactly; class 2 is missed; class 3 is predicted but absent from the reference;
    # class 4 is absent from both.
    ref = np.zeros((6, 6, 3), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 1:3, :] = 1
    pred[1:3, 1:3, :] = 1
    ref[4:6, 4:6, 1] = 2
    pred[4, 0, 0] = 3
    rows = score_case(pred, ref, (1.0, 2.0, 5.0), {1: "A", 2: "B", 3: "C", 4: "D"})

    assert [row["class"] for row in rows] == ["A", "B", "C", "D"]
    assert [row["class_index"] for row in rows] == [1, 2, 3, 4]
    assert [row["empty"] for row in rows] == ["none", "pred", "ref", "both"]
    assert [row["dice"] for row in rows] == [1.0, 0.0, 0.0, 1.0]
    assert [row["pred_voxels"] for row in rows] == [12, 0, 1, 0]
    assert [row["ref_voxels"] for row in rows] == [12, 4, 0, 0]
    assert rows[0]["hd95"] == 0.0
    assert rows[0]["assd"] == 0.0
    assert math.isnan(rows[1]["hd95"])
    assert math.isnan(rows[2]["assd"])
    assert rows[3]["hd95"] == 0.0

    penalised = score_case(pred, ref, (1.0, 2.0, 5.0), {2: "B"}, empty_penalty=50.0)
    assert penalised[0]["hd95"] == 50.0
    assert penalised[0]["assd"] == 50.0


# Agreement with medpy 0.5.2 ------------------------------------------------------------------


def assert_matches_medpy(pred: np.ndarray, ref: np.ndarray, spacing) -> None:
    assert dice(pred, ref) == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-12)
    assert hd95(pred, ref, spacing) == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), abs=1e-6)
    assert assd(pred, ref, spacing) == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), abs=1e-6)


def perturbations(ref: np.ndarray) -> list[np.ndarray]:
    structure = generate_binary_structure(ref.ndim, 1)
    return [
        np.roll(ref, 1, axis=0),
        np.roll(ref, -2, axis=1),
        binary_erosion(ref, structure=structure),
        binary_dilation(ref, structure=structure),
    ]


def test_matches_medpy_on_acdc(shared_dir):
    image = nib.load(shared_dir / "data/acdc/training/patient005/patient005_frame01_gt.nii.gz")
    labels = np.asarray(image.dataobj)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    for class_index in (1, 2, 3):
        ref = labels == class_index
        for pred in perturbations(ref)[class_index - 1 :: 3]:
            assert pred.any()
            assert_matches_medpy(pred, ref, spacing)


def test_matches_medpy_on_mscmr(shared_dir):
    image = nib.load(shared_dir / "data/mscmr/val/labels/subject41_DE_manual.nii.gz")
    labels = np.asarray(image.dataobj)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    # The 400x400 slices are cut to the heart with a 10-voxel margin to keep medpy fast.
    rows, cols = np.nonzero(labels.any(axis=2))
    labels = labels[rows.min() - 10 : rows.max() + 11, cols.min() - 10 : cols.max() + 11]
    for class_index in (1, 2, 3):
        ref = labels == class_index
        for pred in perturbations(ref)[class_index - 1 :: 2]:
            assert_matches_medpy(pred, ref, spacing)


def test_matches_medpy_on_random_blobs():
    rng = np.random.default_rng(7)
    spacing = (0.7, 1.3, 4.0)
    for _ in range(5):
        noise = rng.random((24, 20, 8))
        pred = binary_dilation(noise > 0.97, iterations=2)
        ref = binary_dilation(noise > 0.96, iterations=1)
        assert_matches_medpy(pred, ref, spacing)


def test_matches_medpy_at_array_border():
    # Voxels outside the array count as background, so a mask touching the edge has surface there.
    ref = np.zeros((12, 10, 4), dtype=bool)
    ref[0:7, 3:10, 0:4] = True
    pred = np.zeros_like(ref)
    pred[2:12, 0:6, 1:4] = True
    assert_matches_medpy(pred, ref, (1.5, 1.5, 6.0))
    assert_matches_medpy(np.ones((5, 5, 3), bool), ref[:5, :5, :3], (1.0, 2.0, 3.0))


def test_score_case_matches_medpy_on_acdc(shared_dir):
    image = nib.load(shared_dir / "data/acdc/training/patient010/patient010_frame13_gt.nii.gz")
    labels = np.asarray(image.dataobj).astype(np.int32)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    pred = np.roll(labels, 1, axis=1)
    rows = score_case(pred, labels, spacing, {1: "RV", 2: "Myo", 3: "LV"})
    for row in rows:
        p = pred == row["class_index"]
        r = labels == row["class_index"]
        assert row["dice"] == pytest.approx(medpy_binary.dc(p, r), abs=1e-12)
        assert row["hd95"] == pytest.approx(medpy_binary.hd95(p, r, voxelspacing=spacing), abs=1e-6)
        assert row["assd"] == pytest.approx(medpy_binary.assd(p, r, voxelspacing=spacing), abs=1e-6)


# Geometry check -----------------------------------------------------------------------------


def test_check_same_geometry(tmp_path):
    array = np.zeros((4, 5, 3), dtype=np.uint8)
    reference = tmp_path / "ref.nii.gz"
    save_nifti(reference, array, make_header((1.5, 1.5, 10.0)))

    same = tmp_path / "same.nii.gz"
    save_nifti(same, array, make_header((1.5 + 5e-5, 1.5, 10.0)))
    check_same_geometry(same, reference)

    shape = tmp_path / "shape.nii.gz"
    save_nifti(shape, np.zeros((4, 5, 2), np.uint8), make_header((1.5, 1.5, 10.0)))
    with pytest.raises(ValueError, match=r"shape of .*shape\.nii\.gz is \(4, 5, 2\).*ref\.nii\.gz is \(4, 5, 3\)"):
        check_same_geometry(shape, reference)

    zooms = tmp_path / "zooms.nii.gz"
    save_nifti(zooms, array, make_header((1.5, 1.5, 5.0)))
    with pytest.raises(ValueError, match=r"zooms\.nii\.gz.*5\.0.*ref\.nii\.gz.*10\.0"):
        check_same_geometry(zooms, reference)

    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    affine[0, 3] = 4.0
    moved = tmp_path / "moved.nii.gz"
    save_nifti(moved, array, make_header((1.5, 1.5, 10.0), affine))
    with pytest.raises(ValueError, match=r"affine of .*moved\.nii\.gz.*ref\.nii\.gz"):
        check_same_geometry(moved, reference)

    with pytest.raises(FileNotFoundError, match="missing"):
        check_same_geometry(tmp_path / "missing.nii.gz", reference)


# helpnet evaluate ---------------------------------------------------------------------------


def write_evaluation_inputs(root, prediction_zooms=(1.5, 1.5, 10.0)):
    """Two cases of an 8x8x3 volume: c1 with a half-found RV, c2 with the RV missed."""
    from helpnet.data.cases import write_dataset_info

    write_dataset_info(root / "dataset.json", ["RV", "Myo", "LV"], {})
    header = make_header((1.5, 1.5, 10.0))
    label = np.zeros((8, 8, 3), dtype=np.uint8)
    label[0:2, 0:2, 0] = 1
    label[4:6, 4:6, 0:2] = 2
    prediction = np.zeros_like(label)
    prediction[0:2, 0:1, 0] = 1
    prediction[4:6, 4:6, 0:2] = 2
    prediction[7, 7, 2] = 3
    save_nifti(root / "cases" / "c1" / "label.nii.gz", label, header)
    save_nifti(root / "predictions" / "c1.nii.gz", prediction, make_header(prediction_zooms))
    save_nifti(root / "cases" / "c2" / "label.nii.gz", label, header)
    save_nifti(root / "predictions" / "c2.nii.gz", np.where(label == 1, 0, label).astype(np.uint8), header)


def evaluate_args(root, *extra):
    return [
        "evaluate",
        "--predictions-dir", str(root / "predictions"),
        "--cases-dir", str(root / "cases"),
        "--cases", "c1", "c2",
        "--dataset-info", str(root / "dataset.json"),
        "--fold", "2",
        "--output", str(root / "metrics.csv"),
        *extra,
    ]


def test_evaluate_cli_writes_metrics(tmp_path):
    from helpnet.cli import main

    write_evaluation_inputs(tmp_path)
    assert main(evaluate_args(tmp_path)) == 0
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "case,fold,class_index,class,dice,hd95,assd,pred_voxels,ref_voxels,empty"
    assert len(lines) == 7

    table = {(row.split(",")[0], row.split(",")[3]): row.split(",") for row in lines[1:]}
    # RV of c1: 2 of 4 voxels found, Dice 4/6. Two reference surface voxels lie 1.5 mm from the
    # prediction; pooled distances [0, 0, 0, 0, 1.5, 1.5] give HD95 1.5 and ASSD 0.5.
    rv = table[("c1", "RV")]
    assert rv[1:4] == ["2", "1", "RV"]
    assert float(rv[4]) == pytest.approx(4 / 6)
    assert float(rv[5]) == pytest.approx(1.5)
    assert float(rv[6]) == pytest.approx(0.5)
    assert rv[7:] == ["2", "4", "none"]
    assert table[("c1", "Myo")][4:7] == ["1.0", "0.0", "0.0"]
    assert table[("c1", "LV")][4:] == ["0.0", "nan", "nan", "1", "0", "ref"]
    assert table[("c2", "RV")][4:] == ["0.0", "nan", "nan", "0", "4", "pred"]


def test_evaluate_cli_diagonal_penalty(tmp_path):
    from helpnet.cli import main

    write_evaluation_inputs(tmp_path)
    assert main(evaluate_args(tmp_path, "--empty-penalty", "diagonal", "--hd95-definition", "max_directed")) == 0
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    missed = next(line for line in lines if line.startswith("c2,2,1,RV")).split(",")
    diagonal = math.sqrt(12.0**2 + 12.0**2 + 30.0**2)
    assert float(missed[5]) == pytest.approx(diagonal)
    assert float(missed[6]) == pytest.approx(diagonal)


def test_evaluate_cli_geometry_mismatch(tmp_path, caplog):
    from helpnet.cli import main

    write_evaluation_inputs(tmp_path, prediction_zooms=(1.5, 1.5, 5.0))
    assert main(evaluate_args(tmp_path)) == 1
    assert str(tmp_path / "predictions" / "c1.nii.gz") in caplog.text
    assert str(tmp_path / "cases" / "c1" / "label.nii.gz") in caplog.text
    assert "(1.5, 1.5, 5.0) mm" in caplog.text
    assert "(1.5, 1.5, 10.0) mm" in caplog.text
    assert not (tmp_path / "metrics.csv").exists()


def test_evaluate_cli_case_without_label(tmp_path, caplog):
    from helpnet.cli import main

    write_evaluation_inputs(tmp_path)
    (tmp_path / "cases" / "c2" / "label.nii.gz").unlink()
    assert main(evaluate_args(tmp_path)) == 1
    assert "case c2 has no dense label" in caplog.text
    assert not (tmp_path / "metrics.csv").exists()


def test_evaluate_rejects_unknown_label_values(tmp_path):
    from helpnet.evaluation.evaluate import evaluate_case

    header = make_header((1.0, 1.0, 1.0))
    label = np.zeros((4, 4, 2), dtype=np.uint8)
    label[0, 0, 0] = 7
    save_nifti(tmp_path / "label.nii.gz", label, header)
    save_nifti(tmp_path / "pred.nii.gz", np.zeros_like(label), header)
    with pytest.raises(ValueError, match=r"label .*label\.nii\.gz contains values \[7\]"):
        evaluate_case(tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz", {1: "A", 2: "B"})
