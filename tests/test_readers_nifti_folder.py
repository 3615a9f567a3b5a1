"""Generic NIfTI folder reader, the demo preset and the shared input checks, on cropped ACDC files."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpnet.data.readers import READERS, get_reader
from helpnet.data.readers.common import pair_by_case_id, remap_values
from helpnet.data.readers.nifti_folder import read_demo, read_nifti_folder

CLASSES = ["RV", "Myo", "LV"]
PATTERNS = {"subject_pattern": r"^(patient\d+)_", "frame_pattern": r"_(ED|ES)$"}


class Volume:
    """Arrays and headers of one real ACDC frame (image, GT, Valvano scribble)."""

    def __init__(self, shared_dir: Path, patient: str, frame: str) -> None:
        folder = shared_dir / "data" / "acdc" / "training" / patient
        image = nib.load(folder / f"{patient}_frame{frame}.nii.gz")
        label = nib.load(folder / f"{patient}_frame{frame}_gt.nii.gz")
        with zipfile.ZipFile(shared_dir / "data" / "acdc_scribbles.zip") as archive:
            data = archive.read(f"acdc_scribbles/{patient}_frame{frame}_scribble.nii.gz")
        scribble = nib.Nifti1Image.from_bytes(gzip.decompress(data))
        self.image = np.asarray(image.dataobj)
        self.label = np.asarray(label.dataobj)
        self.scribble = np.asarray(scribble.dataobj)
        self.image_header = image.header
        self.scribble_header = scribble.header
        self.image_affine = image.affine
        self.scribble_affine = scribble.affine

    def crop(self, x: slice, y: slice, z: slice) -> "Volume":
        cropped = object.__new__(Volume)
        cropped.__dict__.update(self.__dict__)
        cropped.image = self.image[x, y, z]
        cropped.label = self.label[x, y, z]
        cropped.scribble = self.scribble[x, y, z]
        return cropped


@pytest.fixture(scope="module")
def ed(shared_dir: Path) -> Volume:
    return Volume(shared_dir, "patient005", "01").crop(slice(None), slice(None), slice(3, 6))


@pytest.fixture(scope="module")
def es(shared_dir: Path) -> Volume:
    return Volume(shared_dir, "patient005", "13").crop(slice(None), slice(None), slice(3, 6))


def save(path: Path, array: np.ndarray, header: nib.Nifti1Header, affine: np.ndarray, zooms: tuple | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine, header.copy())
    image.header.set_data_dtype(array.dtype)
    if zooms is not None:
        image.header.set_zooms(zooms)
    nib.save(image, path)
    return path


def write_volume(root: Path, case_id: str, volume: Volume, roles: tuple[str, ...] = ("images", "scribbles", "labels")) -> None:
    if "images" in roles:
        save(root / "images" / f"{case_id}.nii.gz", volume.image, volume.image_header, volume.image_affine)
    if "scribbles" in roles:
        save(root / "scribbles" / f"{case_id}.nii.gz", volume.scribble, volume.scribble_header, volume.scribble_affine)
    if "labels" in roles:
        save(root / "labels" / f"{case_id}.nii.gz", volume.label, volume.image_header, volume.image_affine)


def sources(root: Path) -> dict[str, Path]:
    return {role: root / role for role in ("images", "scribbles", "labels") if (root / role).is_dir()}


def test_nifti_folder_reads_cases(ed: Volume, es: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "patient005_ED", ed)
    write_volume(tmp_path, "patient005_ES", es)
    result = read_nifti_folder(sources(tmp_path), PATTERNS, CLASSES)
    cases = {case.case_id: case for case in result.cases}

    assert sorted(cases) == ["patient005_ED", "patient005_ES"]
    assert cases["patient005_ED"].subject == "patient005"
    assert cases["patient005_ED"].frame == "ED"
    assert cases["patient005_ES"].frame == "ES"
    case = cases["patient005_ES"]
    assert case.image.shape == (256, 216, 3)
    np.testing.assert_array_equal(case.image, es.image.astype(np.float32))
    np.testing.assert_array_equal(case.label, es.label)
    assert np.array_equal(case.scribble == 255, es.scribble == 4)
    assert case.spacing == pytest.approx((1.40625, 1.40625, 10.0))
    assert result.label_mapping == {
        "scribble": {"0": 0, "1": 1, "2": 2, "3": 3, "4": 255},
        "label": {"0": 0, "1": 1, "2": 2, "3": 3},
    }
    assert all(not files for files in result.unmatched.values())


def test_nifti_folder_default_subject_is_case_id(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "case7", ed)
    case = next(iter(read_nifti_folder(sources(tmp_path), {}, CLASSES).cases))
    assert (case.case_id, case.subject, case.frame) == ("case7", "case7", "")


def test_nifti_folder_root_source(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "patient005_ED", ed)
    result = read_nifti_folder({"root": tmp_path}, PATTERNS, CLASSES)
    assert [case.case_id for case in result.cases] == ["patient005_ED"]


def test_nifti_folder_suffixes_in_one_directory(ed: Volume, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    save(folder / "p5.nii.gz", ed.image, ed.image_header, ed.image_affine)
    save(folder / "p5_scribble.nii.gz", ed.scribble, ed.scribble_header, ed.scribble_affine)
    save(folder / "p5_gt.nii.gz", ed.label, ed.image_header, ed.image_affine)
    options = {"scribble_suffix": "_scribble.nii.gz", "label_suffix": "_gt.nii.gz"}
    result = read_nifti_folder({"images": folder, "scribbles": folder, "labels": folder}, options, CLASSES)
    cases = list(result.cases)
    assert [case.case_id for case in cases] == ["p5"]
    assert cases[0].sources["scribble"].endswith("p5_scribble.nii.gz")
    assert cases[0].sources["label"].endswith("p5_gt.nii.gz")


def test_nifti_folder_scribble_mapping(ed: Volume, tmp_path: Path) -> None:
    # A scribble that already uses 255 for unannotated voxels and swaps the RV and LV codes.
    recoded = ed.scribble.astype(np.uint8)
    recoded[ed.scribble == 4] = 255
    recoded[ed.scribble == 1] = 3
    recoded[ed.scribble == 3] = 1
    write_volume(tmp_path, "p5", ed, roles=("images", "labels"))
    save(tmp_path / "scribbles" / "p5.nii.gz", recoded, ed.scribble_header, ed.scribble_affine)
    mapping = {"0": 0, "1": 3, "2": 2, "3": 1, "255": "ignore"}
    case = next(iter(read_nifti_folder(sources(tmp_path), {"scribble_mapping": mapping}, CLASSES).cases))
    expected = ed.scribble.astype(np.uint8)
    expected[ed.scribble == 4] = 255
    np.testing.assert_array_equal(case.scribble, expected)


def test_nifti_folder_mapping_target_outside_classes(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "p5", ed)
    with pytest.raises(ValueError, match=r"option 'scribble_mapping': canonical values \{4: 9\} are outside"):
        read_nifti_folder(sources(tmp_path), {"scribble_mapping": {"0": 0, "1": 1, "2": 2, "3": 3, "4": 9}}, CLASSES)


def test_nifti_folder_shape_mismatch(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "p5", ed, roles=("images", "labels"))
    save(tmp_path / "scribbles" / "p5.nii.gz", ed.scribble[:, :, :2], ed.scribble_header, ed.scribble_affine)
    result = read_nifti_folder(sources(tmp_path), {}, CLASSES)
    with pytest.raises(ValueError, match=r"scribbles/p5\.nii\.gz: scribble shape \(256, 216, 2\) differs from image shape \(256, 216, 3\)"):
        list(result.cases)


def test_nifti_folder_spacing_mismatch(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "p5", ed, roles=("images", "scribbles"))
    save(tmp_path / "labels" / "p5.nii.gz", ed.label, ed.image_header, ed.image_affine, zooms=(1.40625, 1.40625, 5.0))
    result = read_nifti_folder(sources(tmp_path), {}, CLASSES)
    with pytest.raises(ValueError, match=r"labels/p5\.nii\.gz: label voxel spacing \(1\.40625, 1\.40625, 5\.0\) mm differs"):
        list(result.cases)


def test_swapped_axes_from_header_zooms(ed: Volume, tmp_path: Path) -> None:
    square = ed.crop(slice(20, 236), slice(None), slice(None))
    save(tmp_path / "images" / "p5.nii.gz", square.image, ed.image_header, np.diag([-1.4, -1.6, 10.0, 1.0]))
    save(tmp_path / "scribbles" / "p5.nii.gz", square.scribble, ed.scribble_header, np.diag([-1.6, -1.4, 10.0, 1.0]))
    result = read_nifti_folder(sources(tmp_path), {}, CLASSES)
    with pytest.raises(ValueError, match=r"scribbles/p5\.nii\.gz: in-plane axes swapped relative to .*: scribble zooms \(1\.6, 1\.4\)"):
        list(result.cases)


def test_swapped_axes_from_label_content(shared_dir: Path, tmp_path: Path) -> None:
    # ES of patient005 is the weakest evidence among the ACDC subset: only 6.8% of its foreground
    # scribble voxels disagree with the transposed label.
    square = Volume(shared_dir, "patient005", "13").crop(slice(20, 236), slice(None), slice(None))
    write_volume(tmp_path / "aligned", "p5", square)
    aligned = list(read_nifti_folder(sources(tmp_path / "aligned"), {}, CLASSES).cases)
    assert aligned[0].image.shape == (216, 216, 10)

    write_volume(tmp_path / "swapped", "p5", square, roles=("images", "labels"))
    save(tmp_path / "swapped" / "scribbles" / "p5.nii.gz", square.scribble.transpose(1, 0, 2), square.scribble_header, square.scribble_affine)
    result = read_nifti_folder(sources(tmp_path / "swapped"), {}, CLASSES)
    with pytest.raises(ValueError, match=r"scribbles/p5\.nii\.gz: in-plane axes swapped: the foreground scribble disagrees with the label"):
        list(result.cases)


def test_label_value_outside_set(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "p5", ed, roles=("images", "scribbles"))
    label = ed.label.copy()
    label[100, 100, 1] = 7
    save(tmp_path / "labels" / "p5.nii.gz", label, ed.image_header, ed.image_affine)
    result = read_nifti_folder(sources(tmp_path), {}, CLASSES)
    with pytest.raises(ValueError, match=r"labels/p5\.nii\.gz: label contains value 7 outside the declared set \[0, 1, 2, 3\]"):
        list(result.cases)


def test_label_non_integral_value(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "p5", ed, roles=("images", "scribbles"))
    label = ed.label.astype(np.float32)
    label[100, 100, 1] = 1.5
    save(tmp_path / "labels" / "p5.nii.gz", label, ed.image_header, ed.image_affine)
    result = read_nifti_folder(sources(tmp_path), {}, CLASSES)
    with pytest.raises(ValueError, match=r"labels/p5\.nii\.gz: label contains non-integral value 1\.5"):
        list(result.cases)


def test_scribble_value_outside_set(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "p5", ed, roles=("images", "labels"))
    save(tmp_path / "scribbles" / "p5.nii.gz", ed.scribble, ed.scribble_header, ed.scribble_affine)
    # With 2 classes, scribble value 3 is neither a class nor the unannotated value (3 = K + 1 is; 4 is not).
    result = read_nifti_folder(sources(tmp_path), {"label_mapping": {"0": 0, "1": 1, "2": 2, "3": 2}}, ["RV", "Myo"])
    with pytest.raises(ValueError, match=r"scribbles/p5\.nii\.gz: scribble contains value 4 outside the declared set \[0, 1, 2, 3\]"):
        list(result.cases)


def test_unmatched_files_listed(ed: Volume, es: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "a", ed, roles=("images", "labels"))
    write_volume(tmp_path, "b", es)
    write_volume(tmp_path, "c", es, roles=("scribbles",))
    with pytest.raises(ValueError) as error:
        read_nifti_folder(sources(tmp_path), {}, CLASSES)
    message = str(error.value)
    assert "1 image(s) have a label but no scribble: " + str(tmp_path / "images" / "a.nii.gz") in message
    assert "1 scribble(s) have no image: " + str(tmp_path / "scribbles" / "c.nii.gz") in message

    options = {"allow_unscribbled_labelled": True, "allow_extra_scribbles": True}
    result = read_nifti_folder(sources(tmp_path), options, CLASSES)
    assert result.unmatched == {
        "images_without_scribble": [str(tmp_path / "images" / "a.nii.gz")],
        "scribbles_without_image": [str(tmp_path / "scribbles" / "c.nii.gz")],
        "labels_without_image": [],
    }
    assert {case.case_id: case.scribble is None for case in result.cases} == {"a": True, "b": False}


def test_image_without_scribble_or_label(ed: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "a", ed, roles=("images",))
    write_volume(tmp_path, "b", ed)
    with pytest.raises(ValueError, match=r"1 image\(s\) have neither a scribble nor a label: .*images/a\.nii\.gz"):
        read_nifti_folder(sources(tmp_path), {"allow_unscribbled_labelled": True}, CLASSES)


def test_pairing_ignores_list_position() -> None:
    # A missing scribble for "b" must not shift "c"'s scribble onto "b".
    pairing = pair_by_case_id(
        {"a": Path("i/a"), "b": Path("i/b"), "c": Path("i/c")},
        {"a": Path("s/a"), "c": Path("s/c")},
        {},
    )
    assert [(p.case_id, p.scribble) for p in pairing.pairs] == [("a", Path("s/a")), ("b", None), ("c", Path("s/c"))]
    assert pairing.unmatched["images_without_scribble"] == ["i/b"]


def test_remap_values_lookup() -> None:
    array = np.array([[0, 4], [3, 1]], dtype=np.uint16)
    remapped = remap_values(array, {0: 0, 1: 1, 2: 2, 3: 3, 4: 255}, "x.nii.gz", "scribble")
    assert remapped.dtype == np.uint8
    np.testing.assert_array_equal(remapped, [[0, 255], [3, 1]])
    official = remap_values(np.array([0, 200, 500, 600]), {0: 0, 200: 2, 500: 3, 600: 1}, "y.nii.gz", "label")
    np.testing.assert_array_equal(official, [0, 2, 3, 1])


def test_demo_reader_layout(ed: Volume, es: Volume, tmp_path: Path) -> None:
    write_volume(tmp_path, "subject01_ED", ed)
    write_volume(tmp_path, "subject01_ES", es)
    result = read_demo({"synthetic": tmp_path}, {}, CLASSES)
    cases = {case.case_id: (case.subject, case.frame) for case in result.cases}
    assert cases == {"subject01_ED": ("subject01", "ED"), "subject01_ES": ("subject01", "ES")}
    assert result.label_mapping["scribble"]["4"] == 255


def test_demo_reader_reads_generated_demo(tmp_path: Path) -> None:
    from helpnet.data.demo import write_demo

    output = write_demo(tmp_path / "demo", subjects=1, seed=0)
    result = get_reader("demo")({"synthetic": output}, {}, CLASSES)
    cases = list(result.cases)
    assert sorted(case.case_id for case in cases) == ["subject01_ED", "subject01_ES"]
    for case in cases:
        assert case.scribble is not None and case.label is not None
        assert case.scribble.shape == case.image.shape


def test_get_reader_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown reader 'acdc2'; known readers: acdc, chaos, demo, mscmr, nifti_folder, wsl4mis"):
        get_reader("acdc2")
    assert set(READERS) == {"acdc", "wsl4mis", "mscmr", "chaos", "nifti_folder", "demo"}
