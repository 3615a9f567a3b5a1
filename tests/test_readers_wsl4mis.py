"""WSL4MIS HDF5 reader against the NIfTI ACDC subset it was derived from."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from helpnet.data.readers.acdc import read_acdc
from helpnet.data.readers.wsl4mis import read_wsl4mis

CLASSES = ["RV", "Myo", "LV"]


@pytest.fixture(scope="session")
def h5_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "acdc_wsl4mis_h5"


@pytest.fixture(scope="session")
def acdc_cases(shared_dir: Path, scribble_dir: Path) -> dict:
    result = read_acdc({"images": shared_dir / "data" / "acdc", "scribbles": scribble_dir}, {"allow_extra_scribbles": True}, CLASSES)
    return {case.case_id: case for case in result.cases}


def test_wsl4mis_equals_acdc_arrays(shared_dir: Path, h5_dir: Path, acdc_cases: dict) -> None:
    result = read_wsl4mis({"volumes": h5_dir, "spacing_reference": shared_dir / "data" / "acdc"}, {}, CLASSES)
    cases = {case.case_id: case for case in result.cases}
    assert sorted(cases) == sorted(acdc_cases)
    for case_id, case in cases.items():
        reference = acdc_cases[case_id]
        np.testing.assert_array_equal(case.scribble, reference.scribble, err_msg=case_id)
        np.testing.assert_array_equal(case.label, reference.label, err_msg=case_id)
        assert case.image.shape == reference.image.shape
        assert case.spacing == reference.spacing
        assert case.subject == reference.subject
        assert case.frame == reference.frame
        np.testing.assert_allclose(case.header.get_best_affine(), reference.header.get_best_affine())
    assert "min-max scaled" in result.notes
    assert "ED/ES from Info.cfg" in result.notes


def test_wsl4mis_image_is_transposed_h5(shared_dir: Path, h5_dir: Path) -> None:
    result = read_wsl4mis({"volumes": h5_dir, "spacing_reference": shared_dir / "data" / "acdc"}, {}, CLASSES)
    case = next(c for c in result.cases if c.case_id == "patient024_frame09")
    with h5py.File(h5_dir / "patient024_frame09.h5", "r") as handle:
        image = handle["image"][()]
    assert image.shape == (8, 256, 208)
    assert case.image.shape == (208, 256, 8)
    np.testing.assert_array_equal(case.image, image.transpose(2, 1, 0))
    assert case.image.dtype == np.float32
    assert float(case.image.min()) >= 0.0
    assert float(case.image.max()) <= 1.0


def test_wsl4mis_spacing_from_scribbles(h5_dir: Path, scribble_dir: Path, acdc_cases: dict) -> None:
    result = read_wsl4mis({"volumes": h5_dir, "spacing_reference": scribble_dir}, {}, CLASSES)
    cases = {case.case_id: case for case in result.cases}
    for case_id, case in cases.items():
        scribble_header = nib.load(scribble_dir / "acdc_scribbles" / f"{case_id}_scribble.nii.gz").header
        assert case.spacing == tuple(float(z) for z in scribble_header.get_zooms())
        assert case.frame == acdc_cases[case_id].frame
    assert "inferred from frame order" in result.notes


def test_wsl4mis_missing_reference(h5_dir: Path, scribble_dir: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    for path in (scribble_dir / "acdc_scribbles").glob("patient0[0-5]*_scribble.nii.gz"):
        shutil.copy(path, reference / path.name)
    expected = (
        r"no spacing reference NIfTI for 6 WSL4MIS case\(s\): patient060_frame01, patient060_frame14, "
        r"patient064_frame01, patient064_frame12, patient072_frame01, patient072_frame11; provide as source 'spacing_reference'"
    )
    with pytest.raises(ValueError, match=expected):
        read_wsl4mis({"volumes": h5_dir, "spacing_reference": reference}, {}, CLASSES)


def test_wsl4mis_missing_h5_key(h5_dir: Path, shared_dir: Path, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    with h5py.File(h5_dir / "patient041_frame01.h5", "r") as source, h5py.File(volumes / "patient041_frame01.h5", "w") as target:
        target["image"] = source["image"][()]
        target["label"] = source["label"][()]
    result = read_wsl4mis({"volumes": volumes, "spacing_reference": shared_dir / "data" / "acdc"}, {}, CLASSES)
    with pytest.raises(ValueError, match=r"patient041_frame01\.h5: missing HDF5 dataset\(s\) \['scribble'\]"):
        list(result.cases)


def test_wsl4mis_ignores_slice_files(h5_dir: Path, shared_dir: Path, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    shutil.copy(h5_dir / "patient041_frame01.h5", volumes)
    # Per-slice files of ACDC_training_slices are not volumes; this one is not even HDF5.
    (volumes / "patient041_frame01_slice_1.h5").write_bytes(b"slice")
    result = read_wsl4mis({"volumes": volumes, "spacing_reference": shared_dir / "data" / "acdc"}, {}, CLASSES)
    assert [case.case_id for case in result.cases] == ["patient041_frame01"]
