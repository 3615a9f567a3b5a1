"""PiDiNet network: agreement with reference outputs of the official code, PDC algebra, checkpoint loading."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpnet.edges.extract import render_slice, rgb_to_input
from helpnet.edges.pidinet import (
    PDCConv2d,
    PiDiNet,
    convert_state_dict,
    fold_pdc_kernel,
    load_pidinet,
    make_pdc,
    read_checkpoint,
)
from helpnet.io import load_nifti

VECTOR_NAMES = [
    "patient005_frame01_z5",
    "patient041_frame11_z2",
    "patient030_frame01_z8",
    "patient064_frame01_z4_crop157x203",
]
CHECKPOINTS = {
    "table5_pidinet": ("table5_pidinet.pth", "pidinet"),
    "table5_pidinet-tiny": ("table5_pidinet-tiny.pth", "pidinet_tiny"),
}
ATOL = 1e-5


@pytest.fixture(scope="module")
def weights_dir(shared_dir: Path) -> Path:
    return shared_dir / "weights" / "pidinet"


@pytest.fixture(scope="module")
def vectors_dir(shared_dir: Path) -> Path:
    return shared_dir / "vectors" / "pidinet"


@pytest.fixture(scope="module")
def models(weights_dir: Path) -> dict[tuple[str, bool], PiDiNet]:
    torch.set_num_threads(2)
    loaded = {}
    for name, (filename, variant) in CHECKPOINTS.items():
        for converted in (False, True):
            loaded[name, converted] = load_pidinet(weights_dir / filename, variant=variant, converted=converted)
    return loaded


def _load_vector(vectors_dir: Path, slice_name: str, checkpoint: str) -> dict:
    with np.load(vectors_dir / f"{slice_name}_{checkpoint}.npz") as data:
        vector = {key: data[key] for key in data.files}
    vector["meta"] = json.loads(str(vector["meta"]))
    return vector


@pytest.mark.parametrize("slice_name", VECTOR_NAMES)
def test_slice_from_volume_matches_vector(shared_dir: Path, vectors_dir: Path, slice_name: str) -> None:
    vector = _load_vector(vectors_dir, slice_name, "table5_pidinet")
    meta = vector["meta"]
    patient = meta["patient"]
    volume, _ = load_nifti(shared_dir / "data" / "acdc" / "training" / patient / Path(meta["source_file"]).name)
    slice_2d = volume[:, :, meta["slice_index"]]
    crop = meta["crop"]
    if crop:
        r0, c0 = crop["row0"], crop["col0"]
        slice_2d = slice_2d[r0 : r0 + crop["height"], c0 : c0 + crop["width"]]
    np.testing.assert_array_equal(slice_2d, vector["slice_raw"])


@pytest.mark.parametrize("slice_name", VECTOR_NAMES)
def test_rendering_matches_vector_exactly(vectors_dir: Path, slice_name: str) -> None:
    vector = _load_vector(vectors_dir, slice_name, "table5_pidinet")
    rgb = render_slice(vector["slice_raw"])
    np.testing.assert_array_equal(rgb, vector["rendered_uint8"])
    network_input = rgb_to_input(rgb)
    assert network_input.dtype == torch.float32
    assert torch.equal(network_input, torch.from_numpy(vector["input"]))


@pytest.mark.parametrize("converted", [False, True], ids=["vanilla", "converted"])
@pytest.mark.parametrize("checkpoint", sorted(CHECKPOINTS))
@pytest.mark.parametrize("slice_name", VECTOR_NAMES)
def test_outputs_match_official(models, vectors_dir: Path, slice_name: str, checkpoint: str, converted: bool) -> None:
    vector = _load_vector(vectors_dir, slice_name, checkpoint)
    model = models[checkpoint, converted]
    with torch.no_grad():
        outputs = model(torch.from_numpy(vector["input"]))
    assert len(outputs) == 5
    height, width = vector["slice_raw"].shape
    for index, output in enumerate(outputs):
        assert output.shape == (1, 1, height, width)
        difference = np.abs(output[0, 0].numpy() - vector["side_outputs"][index]).max()
        assert difference <= ATOL, f"output {index} differs by {difference:.3g}"


def _shift(padded: torch.Tensor, dy: int, dx: int, height: int, width: int) -> torch.Tensor:
    """Return x(p + (dy, dx)) for every p of the unpadded image; ``padded`` has a zero border of 2."""
    return padded[..., 2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]


# Row-major offsets of the 3x3 taps 0..8.
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
# Outer ring of the 3x3 kernel in clockwise order, starting top-left.
CLOCKWISE = [0, 1, 2, 5, 8, 7, 6, 3]


def _pdc_by_definition(x: torch.Tensor, weight: torch.Tensor, op: str) -> torch.Tensor:
    """Pixel-difference convolution written as sums of pixel differences (groups=1, zero padding)."""
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    w = weight.reshape(weight.shape[0], weight.shape[1], 9)
    out = torch.zeros(x.shape[0], weight.shape[0], height, width, dtype=x.dtype)

    def term(i: int, difference: torch.Tensor) -> torch.Tensor:
        # sum over input channels of w[o, c, i] * difference[n, c]
        return torch.einsum("oc,nchw->nohw", w[:, :, i], difference)

    centre = _shift(padded, 0, 0, height, width)
    for i, (dy, dx) in enumerate(OFFSETS):
        if op == "cv":
            out += term(i, _shift(padded, dy, dx, height, width))
        elif op == "cd":
            out += term(i, _shift(padded, dy, dx, height, width) - centre)
        elif op == "ad" and i != 4:
            # each ring tap minus its clockwise neighbour; the centre tap is unused
            nxt = CLOCKWISE[(CLOCKWISE.index(i) + 1) % 8]
            ny, nx = OFFSETS[nxt]
            out += term(i, _shift(padded, dy, dx, height, width) - _shift(padded, ny, nx, height, width))
    if op == "rd":
        # weights 1..8 go to the 8 directions in row-major order: x(p + 2d) - x(p + d)
        directions = [d for d in OFFSETS if d != (0, 0)]
        for n, (dy, dx) in enumerate(directions, start=1):
            out += term(n, _shift(padded, 2 * dy, 2 * dx, height, width) - _shift(padded, dy, dx, height, width))
    return out


@pytest.mark.parametrize("op", ["cd", "ad", "rd", "cv"])
def test_pdc_vanilla_and_folded_match_definition(op: str) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 9, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=generator, dtype=torch.float64)
    expected = _pdc_by_definition(x, weight, op)

    vanilla = PDCConv2d(op, 3, 4).double()
    vanilla.weight.data.copy_(weight)
    folded = make_pdc(op, 3, 4, groups=1, converted=True).double()
    folded.weight.data.copy_(fold_pdc_kernel(weight, op))
    with torch.no_grad():
        torch.testing.assert_close(vanilla(x), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(folded(x), expected, rtol=0, atol=1e-12)


def test_depthwise_folded_matches_vanilla() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 5, 6, 11, generator=generator, dtype=torch.float64)
    for op in ("cd", "ad", "rd", "cv"):
        vanilla = PDCConv2d(op, 5, 5, groups=5).double()
        folded = make_pdc(op, 5, 5, groups=5, converted=True).double()
        folded.weight.data.copy_(fold_pdc_kernel(vanilla.weight.data, op))
        with torch.no_grad():
            torch.testing.assert_close(folded(x), vanilla(x), rtol=0, atol=1e-12)


def test_convert_leaves_state_dict_unchanged(weights_dir: Path) -> None:
    state_dict = read_checkpoint(weights_dir / "table5_pidinet-tiny.pth")
    before = copy.deepcopy(state_dict)
    converted = convert_state_dict(state_dict)
    for key, tensor in before.items():
        assert torch.equal(state_dict[key], tensor), key
    assert converted["init_block.weight"].shape == (20, 3, 3, 3)
    assert converted["block1_2.conv1.weight"].shape == (20, 1, 5, 5)
    assert not torch.equal(converted["init_block.weight"], state_dict["init_block.weight"])


def test_converted_float64_equals_vanilla(weights_dir: Path) -> None:
    # Fold in float64 too: folding float32 weights rounds the cd centre tap at ~1e-7.
    state_dict = {key: value.double() for key, value in read_checkpoint(weights_dir / "table5_pidinet-tiny.pth").items()}
    vanilla = PiDiNet("pidinet_tiny").double()
    vanilla.load_state_dict(state_dict, strict=True)
    converted = PiDiNet("pidinet_tiny", converted=True).double()
    converted.load_state_dict(convert_state_dict(state_dict), strict=True)
    x = torch.randn(1, 3, 37, 29, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(vanilla(x), converted(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_checkpoint_prefix_forms_load_alike(weights_dir: Path, tmp_path: Path) -> None:
    raw = torch.load(weights_dir / "table5_pidinet-tiny.pth", weights_only=True, map_location="cpu")
    assert all(key.startswith("module.") for key in raw["state_dict"])
    bare = {key[len("module.") :]: value for key, value in raw["state_dict"].items()}
    torch.save(bare, tmp_path / "bare.pth")
    torch.save({"epoch": 1, "state_dict": bare}, tmp_path / "unprefixed.pth")

    x = torch.randn(1, 3, 24, 20, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = load_pidinet(weights_dir / "table5_pidinet-tiny.pth", variant="pidinet_tiny")(x)[-1]
        for name in ("bare.pth", "unprefixed.pth"):
            output = load_pidinet(tmp_path / name, variant="pidinet_tiny")(x)[-1]
            assert torch.equal(output, reference), name


def test_tiny_l_loads_without_attention_and_dilation(weights_dir: Path) -> None:
    for converted in (False, True):
        model = load_pidinet(
            weights_dir / "table5_pidinet-tiny-l.pth",
            variant="pidinet_tiny",
            attention=False,
            dilation=False,
            converted=converted,
        )
        assert not model.training
        with torch.no_grad():
            outputs = model(torch.zeros(1, 3, 33, 45))
        assert [tuple(o.shape) for o in outputs] == [(1, 1, 33, 45)] * 5
        assert all(torch.isfinite(o).all() for o in outputs)


def test_attention_mismatch_names_keys_and_flag(weights_dir: Path) -> None:
    path = weights_dir / "table5_pidinet-tiny-l.pth"
    with pytest.raises(ValueError) as info:
        load_pidinet(path, variant="pidinet_tiny", attention=True, dilation=False)
    message = str(info.value)
    assert str(path) in message
    assert "attentions.*" in message
    assert "set attention: false" in message
    assert "--no-attention" in message
    assert "dilation:" not in message


def test_both_flags_mismatch_names_both(weights_dir: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_pidinet(weights_dir / "table5_pidinet-tiny-l.pth", variant="pidinet_tiny")
    message = str(info.value)
    assert "set attention: false" in message
    assert "set dilation: false" in message


def test_unexpected_keys_name_flag(weights_dir: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_pidinet(weights_dir / "table5_pidinet-tiny.pth", variant="pidinet_tiny", attention=False)
    message = str(info.value)
    assert "unexpected keys attentions.*" in message
    assert "set attention: true (--attention)" in message


def test_variant_mismatch_names_variant(weights_dir: Path) -> None:
    with pytest.raises(ValueError, match="set variant: pidinet_tiny"):
        load_pidinet(weights_dir / "table5_pidinet-tiny.pth", variant="pidinet")


def test_missing_checkpoint_names_path(tmp_path: Path) -> None:
    path = tmp_path / "weights" / "table5_pidinet.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_pidinet(path)
    assert str(path) in str(info.value)
    assert "download" in str(info.value)


def test_corrupt_checkpoint_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        load_pidinet(path)


def test_variant_widths_and_parameter_counts() -> None:
    # Parameter counts of the vanilla builders as reported for the official code.
    counts = {
        ("pidinet", True): 710_149,
        ("pidinet_tiny", True): 84_477,
    }
    for (variant, flags), expected in counts.items():
        model = PiDiNet(variant, attention=flags, dilation=flags)
        assert sum(p.numel() for p in model.parameters()) == expected, variant
    assert PiDiNet("pidinet_tiny", attention=False, dilation=False).conv_reduces[3].conv.in_channels == 80
    assert PiDiNet("pidinet_small").init_block.weight.shape == (30, 3, 3, 3)
    assert PiDiNet("pidinet_small").dilations[0].conv1.out_channels == 12
    converted = PiDiNet("pidinet", converted=True)
    assert sum(p.numel() for p in converted.parameters()) == 720_709


def test_baseline_config_uses_plain_convolutions() -> None:
    vanilla = PiDiNet("pidinet_tiny", attention=False, dilation=False, config="baseline").double()
    converted = PiDiNet("pidinet_tiny", attention=False, dilation=False, converted=True, config="baseline").double()
    converted.load_state_dict(convert_state_dict(vanilla.state_dict(), "baseline"), strict=True)
    for key, tensor in vanilla.state_dict().items():
        assert torch.equal(converted.state_dict()[key], tensor), key
    x = torch.randn(1, 3, 19, 23, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(vanilla(x)[-1], converted(x)[-1])
