"""The align stage end to end: real ACDC and MSCMRseg files through `helpnet align`."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpnet.cli import main
from helpnet.data.align import align_dataset
from helpnet.data.cases import MANIFEST_COLUMNS, read_manifest

CLASSES = ["RV", "Myo", "LV"]


@pytest.fixture(scope="session")
def acdc_output(shared_dir: Path, scribble_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("align") / "acdc"
    status = main(
        [
            "align",
            "--reader", "acdc",
            "--source", f"images={shared_dir / 'data' / 'acdc'}",
            "--source", f"scribbles={scribble_dir}",
            "--classes", *CLASSES,
            "--options", '{"allow_extra_scribbles": true}',
            "--output-dir", str(output),
        ]
    )  # fmt: skip
    assert status == 0
    return output


def test_align_acdc_manifest(acdc_output: Path) -> None:
    rows = read_manifest(acdc_output / "cases.tsv")
    assert len(rows) == 20
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    by_case = {row["case"]: row for row in rows}
    row = by_case["patient005_frame01"]
    assert row["subject"] == "patient005"
    assert row["frame"] == "ED"
    assert row["shape"] == "256x216x10"
    assert row["spacing"] == "1.40625x1.40625x10"
    assert row["has_scribble"] == "true"
    assert row["has_label"] == "true"
    assert row["scribble_source"].endswith("patient005_frame01_scribble.nii.gz")
    assert by_case["patient041_frame11"]["shape"] == "154x224x6"
    assert by_case["patient041_frame11"]["frame"] == "ES"
    assert len({row["subject"] for row in rows}) == 10


def test_align_acdc_case_files(acdc_output: Path, shared_dir: Path, scribble_dir: Path) -> None:
    case_dir = acdc_output / "cases" / "patient010_frame13"
    image = nib.load(case_dir / "image.nii.gz")
    scribble = nib.load(case_dir / "scribble.nii.gz")
    label = nib.load(case_dir / "label.nii.gz")
    source = nib.load(shared_dir / "data" / "acdc" / "training" / "patient010" / "patient010_frame13.nii.gz")
    raw_scribble = np.asarray(nib.load(scribble_dir / "acdc_scribbles" / "patient010_frame13_scribble.nii.gz").dataobj)

    assert image.get_data_dtype() == np.float32
    assert scribble.get_data_dtype() == np.uint8
    assert label.get_data_dtype() == np.uint8
    # All three files carry the image geometry: zooms 1.5625 mm and the image's sform.
    for written in (image, scribble, label):
        assert written.header.get_zooms() == pytest.approx((1.5625, 1.5625, 10.0))
        np.testing.assert_allclose(written.affine, source.affine)
    np.testing.assert_array_equal(image.get_fdata(dtype=np.float32), source.get_fdata(dtype=np.float32))
    written_scribble = np.asarray(scribble.dataobj)
    assert np.array_equal(written_scribble == 255, raw_scribble == 4)


def test_align_acdc_report(acdc_output: Path, scribble_dir: Path) -> None:
    report = json.loads((acdc_output / "alignment_report.json").read_text())
    totals = report["totals"]
    assert report["num_cases"] == 20
    assert totals["annotated_voxels_with_label"] == 86_200
    assert totals["disagreeing_voxels"] == 16
    assert totals["disagreement_fraction"] < 0.001
    assert len(report["unmatched"]["scribbles_without_image"]) == 180
    assert report["unmatched"]["images_without_scribble"] == []

    entry = report["cases"]["patient005_frame01"]
    raw = np.asarray(nib.load(scribble_dir / "acdc_scribbles" / "patient005_frame01_scribble.nii.gz").dataobj)
    expected_counts = {name: int(np.count_nonzero(raw == value)) for value, name in enumerate(["background", *CLASSES])}
    expected_counts["unannotated"] = int(np.count_nonzero(raw == 4))
    assert entry["scribble_counts"] == expected_counts
    assert entry["annotated_voxels"] == int(np.count_nonzero(raw != 4))
    assert entry["annotated_fraction"] == pytest.approx(np.count_nonzero(raw != 4) / raw.size)
    assert entry["affine_differs"] == ["scribble"]


def test_align_acdc_dataset_json(acdc_output: Path) -> None:
    info = json.loads((acdc_output / "dataset.json").read_text())
    assert info["classes"] == ["background", "RV", "Myo", "LV"]
    assert info["ignore_index"] == 255
    assert info["source_label_mapping"]["scribble"] == {"0": 0, "1": 1, "2": 2, "3": 3, "4": 255}


def test_align_failure_removes_manifest(shared_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "acdc"
    output.mkdir()
    (output / "cases.tsv").write_text("stale\n")
    arguments = [
        "align",
        "--reader", "acdc",
        "--source", f"images={shared_dir / 'data' / 'acdc'}",
        "--source", f"scribbles={scribble_dir}",
        "--classes", *CLASSES,
        "--output-dir", str(output),
    ]  # fmt: skip
    # Without allow_extra_scribbles the 180 scribbles of other patients are an error.
    assert main(arguments) == 1
    assert not (output / "cases.tsv").exists()
    report = json.loads((output / "alignment_report.json").read_text())
    assert len(report["unmatched"]["scribbles_without_image"]) == 180
    assert "allow_extra_scribbles" in report["error"]


def test_align_mscmr_evaluation_only_cases(shared_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "mscmr"
    # A case folder left by an earlier run that the new run does not produce.
    (output / "cases" / "subject99").mkdir(parents=True)
    (output / "cases" / "subject99" / "image.nii.gz").write_bytes(b"old")
    rows = align_dataset(
        "mscmr",
        {"dataset": shared_dir / "data" / "mscmr", "scribbles": shared_dir / "data" / "mscmr_scribbles"},
        {"allow_extra_scribbles": True, "allow_unscribbled_labelled": True},
        CLASSES,
        output,
    )
    flags = {row["case"]: (row["has_scribble"], row["has_label"]) for row in rows}
    assert flags == {
        "subject26": ("true", "false"),
        "subject31": ("true", "false"),
        "subject41": ("false", "true"),
        "subject43": ("false", "true"),
    }
    assert not (output / "cases" / "subject41" / "scribble.nii.gz").exists()
    assert (output / "cases" / "subject41" / "label.nii.gz").exists()
    assert not (output / "cases" / "subject99").exists()
    report = json.loads((output / "alignment_report.json").read_text())
    assert report["totals"]["cases_with_differing_affine"] == ["subject43"]
    assert len(report["unmatched"]["scribbles_without_image"]) == 23
    assert report["num_with_scribble"] == 2
    assert report["num_with_label"] == 2


def test_align_cli_rejects_bad_source() -> None:
    with pytest.raises(SystemExit):
        main(["align", "--reader", "acdc", "--source", "images", "--classes", "RV", "--output-dir", "x"])


def test_align_cli_unknown_reader(tmp_path: Path) -> None:
    status = main(["align", "--reader", "nope", "--source", f"images={tmp_path}", "--classes", "RV", "--output-dir", str(tmp_path / "o")])
    assert status == 1
