"""Edge extraction: rendering, slicing, checks, NIfTI I/O, the Sobel stand-in, QC figure and CLI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import helpnet.cli
from helpnet.edges.classical import sobel_edges, sobel_slice
from helpnet.edges.extract import (
    default_converted,
    edge_description,
    extract_edges,
    load_edge_map,
    probability_to_uint8,
    render_slice,
    resolve_device,
    rgb_to_input,
    validate_edges,
    write_edges,
)
from helpnet.edges.pidinet import load_pidinet
from helpnet.io import load_nifti, save_nifti

CASE = "patient005_frame01"
# Slices 4..6 of the case; the reference vector slice z=5 becomes index 1.
FIRST_SLICE, NUM_SLICES, VECTOR_SLICE = 4, 3, 5


@pytest.fixture(scope="module")
def tiny_checkpoint(shared_dir: Path) -> Path:
    return shared_dir / "weights" / "pidinet" / "table5_pidinet-tiny.pth"


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path) -> nn.Module:
    torch.set_num_threads(2)
    return load_pidinet(tiny_checkpoint, variant="pidinet_tiny", converted=True)


@pytest.fixture(scope="module")
def acdc_volume(shared_dir: Path) -> tuple[np.ndarray, nib.Nifti1Header]:
    path = shared_dir / "data" / "acdc" / "training" / "patient005" / f"{CASE}.nii.gz"
    volume, header = load_nifti(path)
    return volume[:, :, FIRST_SLICE : FIRST_SLICE + NUM_SLICES].copy(), header


@pytest.fixture(scope="module")
def tiny_vector_fused(shared_dir: Path) -> np.ndarray:
    path = shared_dir / "vectors" / "pidinet" / f"{CASE}_z{VECTOR_SLICE}_table5_pidinet-tiny.npz"
    with np.load(path) as data:
        return data["fused"]


@pytest.fixture
def case_dirs(tmp_path: Path, acdc_volume) -> tuple[Path, Path]:
    """A results/D layout holding one real case cropped to three slices."""
    volume, header = acdc_volume
    cases_dir = tmp_path / "cases"
    save_nifti(cases_dir / CASE / "image.nii.gz", volume.astype(np.float32), header)
    return cases_dir, tmp_path / "edges"


@pytest.fixture
def cli_main():
    return helpnet.cli.main


class CountingModel(nn.Module):
    """Wrap a model and record the inputs it receives."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(x.clone())
        return self.model(x)


def test_render_rounds_half_to_even() -> None:
    # (v - 0) * 255 / 510 = [0, 0.5, 1.5, 255]: half to even gives 0 and 2, half up would give 1 and 2.
    rgb = render_slice(np.array([[0.0, 1.0], [3.0, 510.0]]))
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[:, :, 0], [[0, 0], [2, 255]])
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_render_constant_slice_is_zero() -> None:
    rgb = render_slice(np.full((4, 5), 7.0, dtype=np.float32))
    assert rgb.dtype == np.uint8
    assert not rgb.any()


def test_render_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        render_slice(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_input_normalisation_values() -> None:
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1] = 255
    x = rgb_to_input(rgb)
    assert x.shape == (1, 3, 1, 2)
    # ImageNet mean and std per channel, in float32: (0 - mean) / std and (1 - mean) / std.
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    np.testing.assert_array_equal(x[0, :, 0, 0].numpy(), (np.float32(0) - mean) / std)
    np.testing.assert_array_equal(x[0, :, 0, 1].numpy(), (np.float32(1) - mean) / std)


def test_probability_to_uint8_truncates() -> None:
    probability = np.array([0.0, 0.5, 128 / 255 + 1e-6, 0.999, 1.0], dtype=np.float32)
    # 255 p = 0, 127.5, 128.0003, 254.745, 255
    np.testing.assert_array_equal(probability_to_uint8(probability), [0, 127, 128, 254, 255])


def test_extract_matches_reference_slice(acdc_volume, tiny_model, tiny_vector_fused) -> None:
    volume, _ = acdc_volume
    edges = extract_edges(volume, tiny_model, device="cpu", batch_size=2, progress=False)
    assert edges.dtype == np.uint8
    assert edges.shape == volume.shape
    expected = (tiny_vector_fused * np.float32(255)).astype(np.uint8)
    difference = np.abs(edges[:, :, VECTOR_SLICE - FIRST_SLICE].astype(int) - expected.astype(int))
    # The model agrees with the reference to ~3e-6, which moves a truncated value by at most 1.
    assert difference.max() <= 1
    assert np.mean(difference == 0) > 0.999


def test_extract_batch_size_does_not_matter(acdc_volume, tiny_model) -> None:
    volume, _ = acdc_volume
    single = extract_edges(volume, tiny_model, device="cpu", batch_size=1, progress=False)
    batched = extract_edges(volume, tiny_model, device="cpu", batch_size=3, progress=False)
    assert np.abs(single.astype(int) - batched.astype(int)).max() <= 1


def test_constant_slice_gives_blank_edges(acdc_volume, tiny_model) -> None:
    volume, _ = acdc_volume
    volume = volume.copy()
    volume[:, :, 1] = 42.0
    counting = CountingModel(tiny_model)
    edges = extract_edges(volume, counting, device="cpu", batch_size=8, progress=False)
    assert not edges[:, :, 1].any()
    assert edges[:, :, 0].max() > 127
    assert edges[:, :, 2].max() > 127
    assert [x.shape[0] for x in counting.inputs] == [2]
    assert all(torch.isfinite(x).all() for x in counting.inputs)


def test_extract_rejects_nan_slice(tiny_model) -> None:
    volume = np.ones((8, 8, 3), dtype=np.float32)
    volume[2, 3, 2] = np.nan
    with pytest.raises(ValueError, match=r"slices \[2\]"):
        extract_edges(volume, tiny_model, device="cpu", progress=False)


def test_validate_rejects_blank() -> None:
    volume = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    edges = np.full(volume.shape, 127, dtype=np.uint8)
    with pytest.raises(ValueError, match="blank"):
        validate_edges(edges, volume)


def test_validate_rejects_saturated() -> None:
    volume = np.arange(10 * 10 * 2, dtype=np.float32).reshape(10, 10, 2)
    edges = np.zeros(volume.shape, dtype=np.uint8)
    edges[:, :3, :] = 255  # 30 % of the pixels at 255
    with pytest.raises(ValueError, match="saturated"):
        validate_edges(edges, volume)


def test_validate_rejects_flooded() -> None:
    volume = np.arange(10 * 10 * 2, dtype=np.float32).reshape(10, 10, 2)
    edges = np.full(volume.shape, 140, dtype=np.uint8)
    with pytest.raises(ValueError, match="E > 0.5"):
        validate_edges(edges, volume)


def test_validate_accepts_sparse_edges_and_constant_volume() -> None:
    volume = np.arange(10 * 10 * 2, dtype=np.float32).reshape(10, 10, 2)
    edges = np.zeros(volume.shape, dtype=np.uint8)
    edges[4, :, :] = 200
    validate_edges(edges, volume)
    validate_edges(np.zeros((3, 3, 2), dtype=np.uint8), np.zeros((3, 3, 2), dtype=np.float32))


def test_written_edges_keep_image_geometry(tmp_path: Path, shared_dir: Path) -> None:
    source = shared_dir / "data" / "acdc" / "training" / "patient041" / "patient041_frame11.nii.gz"
    volume, header = load_nifti(source)
    image_path = tmp_path / "image.nii.gz"
    save_nifti(image_path, volume, header)
    edges = sobel_edges(volume, progress=False)
    write_edges(tmp_path / "edges.nii.gz", edges, header, "sobel test")

    image = nib.load(str(image_path))
    written = nib.load(str(tmp_path / "edges.nii.gz"))
    assert written.shape == image.shape == volume.shape
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, image.affine)
    np.testing.assert_array_equal(written.header.get_sform(), image.header.get_sform())
    np.testing.assert_array_equal(written.header.get_qform(), image.header.get_qform())
    assert written.header.get_zooms() == image.header.get_zooms()
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), edges)
    assert edge_description(tmp_path / "edges.nii.gz") == "sobel test"


def test_load_edge_map_scales_uint8(tmp_path: Path) -> None:
    edges = np.array([0, 1, 128, 255], dtype=np.uint8).reshape(2, 2, 1)
    save_nifti(tmp_path / "e.nii.gz", edges, nib.Nifti1Header())
    loaded = load_edge_map(tmp_path / "e.nii.gz")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.ravel(), np.array([0, 1, 128, 255], dtype=np.float32) / np.float32(255))


def test_load_edge_map_rejects_probabilities(tmp_path: Path) -> None:
    probabilities = np.array([0.0, 0.25, 0.75, 1.0], dtype=np.float32).reshape(2, 2, 1)
    path = tmp_path / "float.nii.gz"
    save_nifti(path, probabilities, nib.Nifti1Header())
    with pytest.raises(ValueError) as info:
        load_edge_map(path)
    assert str(path) in str(info.value)
    assert "integers in 0..255" in str(info.value)


def test_load_edge_map_rejects_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "big.nii.gz"
    save_nifti(path, np.array([0, 300], dtype=np.int16).reshape(1, 2, 1), nib.Nifti1Header())
    with pytest.raises(ValueError, match="0..255"):
        load_edge_map(path)


def test_sobel_step_edge_by_hand() -> None:
    # A vertical step 0 -> 100 between columns 3 and 4: with sigma 0 the Sobel derivative along
    # W is (100 - 0) * (1 + 2 + 1) = 400 on columns 3 and 4 and 0 elsewhere, so the 99th
    # percentile is 400 and those two columns map to 255.
    image = np.zeros((8, 8), dtype=np.float32)
    image[:, 4:] = 100
    edges = sobel_slice(image, sigma=0.0)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[:, 3:5] = 255
    np.testing.assert_array_equal(edges, expected)


def test_sobel_constant_slice_is_zero() -> None:
    volume = np.zeros((6, 6, 2), dtype=np.float32)
    volume[:, 3:, 1] = 5
    edges = sobel_edges(volume, progress=False)
    assert not edges[:, :, 0].any()
    assert edges[:, :, 1].max() == 255


def test_sobel_marks_edges_on_real_slice(acdc_volume) -> None:
    volume, _ = acdc_volume
    edges = sobel_edges(volume, progress=False)
    share = float(np.mean(edges > 127))
    # Measured 7-10 % on ACDC volumes; plain min-max without the percentile clip gives 1.5-4 %.
    assert 0.03 < share < 0.2


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_default_form_is_defined_for_variants() -> None:
    for variant in ("pidinet", "pidinet_small", "pidinet_tiny"):
        assert isinstance(default_converted(variant), bool)


def test_cli_pidinet_end_to_end(case_dirs, cli_main, tiny_checkpoint, tiny_vector_fused) -> None:
    cases_dir, edges_dir = case_dirs
    image_path = cases_dir / CASE / "image.nii.gz"
    output = edges_dir / f"{CASE}.nii.gz"
    rc = cli_main(
        [
            "edges",
            "--image", str(image_path),
            "--output", str(output),
            "--method", "pidinet",
            "--checkpoint", str(tiny_checkpoint),
            "--variant", "pidinet_tiny",
            "--no-converted",
            "--device", "cpu",
            "--batch-size", "2",
            "--threads", "2",
        ]
    )  # fmt: skip
    assert rc == 0
    image = nib.load(str(image_path))
    written = nib.load(str(output))
    assert written.shape == image.shape
    np.testing.assert_array_equal(written.affine, image.affine)
    assert written.header.get_zooms() == image.header.get_zooms()
    edges = np.asanyarray(written.dataobj)
    assert edges.dtype == np.uint8
    expected = (tiny_vector_fused * np.float32(255)).astype(np.uint8)
    assert np.abs(edges[:, :, VECTOR_SLICE - FIRST_SLICE].astype(int) - expected.astype(int)).max() <= 1
    assert "pidinet_tiny" in edge_description(output)

    qc = cases_dir.parent / "edges_qc.png"
    rc = cli_main(["edges-qc", "--cases-dir", str(cases_dir), "--edges-dir", str(edges_dir), "--output", str(qc)])
    assert rc == 0
    assert qc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sobel_end_to_end(case_dirs, cli_main) -> None:
    cases_dir, edges_dir = case_dirs
    output = edges_dir / f"{CASE}.nii.gz"
    rc = cli_main(["edges", "--image", str(cases_dir / CASE / "image.nii.gz"), "--output", str(output), "--method", "sobel"])
    assert rc == 0
    edges = load_edge_map(output)
    assert edges.shape == (256, 216, NUM_SLICES)
    assert edges.max() == 1.0
    assert edge_description(output).startswith("sobel")


def test_cli_missing_checkpoint(case_dirs, cli_main, caplog, tmp_path: Path) -> None:
    cases_dir, edges_dir = case_dirs
    missing = tmp_path / "weights" / "table5_pidinet.pth"
    output = edges_dir / f"{CASE}.nii.gz"
    rc = cli_main(
        [
            "edges",
            "--image", str(cases_dir / CASE / "image.nii.gz"),
            "--output", str(output),
            "--method", "pidinet",
            "--checkpoint", str(missing),
        ]
    )  # fmt: skip
    assert rc == 1
    assert str(missing) in caplog.text
    assert "download" in caplog.text
    assert not output.exists()


def test_cli_wrong_flags_write_nothing(case_dirs, cli_main, caplog, shared_dir: Path) -> None:
    cases_dir, edges_dir = case_dirs
    output = edges_dir / f"{CASE}.nii.gz"
    rc = cli_main(
        [
            "edges",
            "--image", str(cases_dir / CASE / "image.nii.gz"),
            "--output", str(output),
            "--method", "pidinet",
            "--checkpoint", str(shared_dir / "weights" / "pidinet" / "table5_pidinet-tiny-l.pth"),
            "--variant", "pidinet_tiny",
        ]
    )  # fmt: skip
    assert rc == 1
    assert "--no-attention" in caplog.text
    assert not output.exists()


def test_qc_requires_edges(case_dirs, cli_main, tmp_path: Path) -> None:
    cases_dir, edges_dir = case_dirs
    rc = cli_main(["edges-qc", "--cases-dir", str(cases_dir), "--edges-dir", str(edges_dir), "--output", str(tmp_path / "qc.png")])
    assert rc == 1
    assert not (tmp_path / "qc.png").exists()
