"""The HELPNet objective: ablation term sets, views, restoration, gradients and batching."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpnet.method import HelpnetObjective, ObjectiveSettings
from helpnet.method.hpc import draw_hpc_permutations, shuffle_local
from helpnet.model import UNetLight

ALL_TERMS = ["pce_global", "pce_local", "pce_focal", "cons_local", "cons_focal", "pseudo_label", "connectivity", "edge"]
OFF = {"hpc": False, "egpl": False, "spr_connectivity": False, "spr_edges": False}


class Recorder(nn.Module):
    """Wrap a network and keep its inputs and (gradient-retaining) outputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        y = self.inner(x)
        y.retain_grad()
        self.outputs.append(y)
        return y


class PixelwiseNet(nn.Module):
    """A 1×1 conv and softmax: it commutes with any jigsaw, so restored views must agree."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.conv(x), dim=1)


def make_batch(batch: int = 2, size: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, size, size, generator=generator)
    scribble = torch.full((batch, size, size), 255, dtype=torch.long)
    scribble[:, 2:6, 2:10] = 0
    scribble[:, 12:16, 12:20] = 1
    scribble[:, 20:24, 8:12] = 2
    scribble[:, 24:28, 20:26] = 3
    edge = torch.rand(batch, size, size, generator=generator)
    return image, scribble, edge


def run(settings: ObjectiveSettings, network: nn.Module, seed: int = 0, **batch_args):
    image, scribble, edge = make_batch(**batch_args)
    objective = HelpnetObjective(settings, num_classes=4)
    return objective(network, image, scribble, edge, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        (OFF, ["pce_global"]),
        ({}, ALL_TERMS),
        ({**OFF, "hpc": True}, ["pce_global", "pce_local", "pce_focal", "cons_local", "cons_focal"]),
        ({**OFF, "egpl": True}, ["pce_global", "pseudo_label"]),
        ({**OFF, "spr_connectivity": True, "spr_edges": True}, ["pce_global", "connectivity", "edge"]),
        ({"egpl": False}, [name for name in ALL_TERMS if name != "pseudo_label"]),
    ],
)
def test_ablation_term_sets(switches, expected):
    settings = ObjectiveSettings(**switches)
    total, terms = run(settings, PixelwiseNet())
    assert list(terms) == expected
    assert settings.term_names() == expected
    assert all(value.ndim == 0 and not value.requires_grad for value in terms.values())
    torch.testing.assert_close(total.detach(), torch.stack(list(terms.values())).sum())
    assert total.requires_grad


def test_pce_baseline_uses_unperturbed_image_once():
    network = Recorder(PixelwiseNet())
    image, scribble, _ = make_batch()
    HelpnetObjective(ObjectiveSettings(**OFF), 4)(network, image, scribble, None, torch.Generator().manual_seed(0))
    assert len(network.inputs) == 1
    assert torch.equal(network.inputs[0], image)


def test_hpc_views_follow_generator():
    network = Recorder(PixelwiseNet())
    settings = ObjectiveSettings(noise_probability=0.0, batched_views=False)
    image, scribble, edge = make_batch()
    HelpnetObjective(settings, 4)(network, image, scribble, edge, torch.Generator().manual_seed(3))
    perms = draw_hpc_permutations(torch.Generator().manual_seed(3))
    x_global, x_local, _ = network.inputs
    assert torch.equal(x_local, shuffle_local(image, perms))
    assert not torch.allclose(x_global, image)
    torch.testing.assert_close(x_global.amin(dim=(1, 2, 3)), image.amin(dim=(1, 2, 3)))
    torch.testing.assert_close(x_global.amax(dim=(1, 2, 3)), image.amax(dim=(1, 2, 3)))


def test_restored_views_align_with_image():
    # Without intensity change a pixelwise network gives the same restored map for all three
    # views, so both consistency terms vanish and the three pCE terms agree.
    settings = ObjectiveSettings(brightness_limit=0.0, contrast_limit=0.0, w_pce_focal=1.0)
    _, terms = run(settings, PixelwiseNet())
    assert terms["cons_local"].item() < 1e-6
    assert terms["cons_focal"].item() < 1e-6
    torch.testing.assert_close(terms["pce_local"], terms["pce_global"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["pce_focal"], terms["pce_global"], rtol=1e-4, atol=1e-6)


def test_term_weights_scale_terms():
    torch.manual_seed(0)
    network = PixelwiseNet()
    _, base = run(ObjectiveSettings(), copy.deepcopy(network))
    _, doubled = run(ObjectiveSettings(w_cons_local=0.6, w_edge=0.6, edge_scale=0.2), copy.deepcopy(network))
    torch.testing.assert_close(doubled["cons_local"], 2 * base["cons_local"])
    torch.testing.assert_close(doubled["edge"], 4 * base["edge"])
    torch.testing.assert_close(doubled["pce_global"], base["pce_global"])


SPR_ONLY_WEIGHTS = {
    "w_pce_global": 0.0,
    "w_pce_local": 0.0,
    "w_pce_focal": 0.0,
    "w_cons_local": 0.0,
    "w_cons_focal": 0.0,
    "w_pseudo_label": 0.0,
}


@pytest.mark.parametrize("term", ["connectivity", "edge"])
def test_gradients_reach_all_views_through_ensemble(term):
    weights = {**SPR_ONLY_WEIGHTS, "w_connectivity": float(term == "connectivity"), "w_edge": float(term == "edge")}
    network = Recorder(UNetLight())
    total, _ = run(ObjectiveSettings(**weights, edge_threshold=0.0, batched_views=False), network)
    total.backward()
    assert len(network.outputs) == 3
    for output in network.outputs:
        assert output.grad is not None and output.grad.abs().sum() > 0


def test_gradients_reach_all_views_batched():
    network = Recorder(UNetLight())
    total, _ = run(ObjectiveSettings(**SPR_ONLY_WEIGHTS, w_edge=0.0, batched_views=True), network)
    total.backward()
    assert len(network.outputs) == 1
    for chunk in network.outputs[0].grad.chunk(3):
        assert chunk.abs().sum() > 0


def test_batched_views_default_and_plain_batch_norm_rejected():
    assert not ObjectiveSettings().batched_views
    network = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="batched_views=False"):
        run(ObjectiveSettings(batched_views=True), network)
    total, _ = run(ObjectiveSettings(batched_views=False), network)
    assert torch.isfinite(total)


def test_batched_views_equal_separate():
    torch.manual_seed(0)
    separate = UNetLight()
    batched = copy.deepcopy(separate)
    total_s, terms_s = run(ObjectiveSettings(batched_views=False), separate, seed=5)
    total_b, terms_b = run(ObjectiveSettings(batched_views=True), batched, seed=5)
    total_s.backward()
    total_b.backward()
    torch.testing.assert_close(total_b, total_s, rtol=1e-5, atol=1e-7)
    for name in terms_s:
        torch.testing.assert_close(terms_b[name], terms_s[name], rtol=1e-5, atol=1e-7, msg=name)
    scale = max(p.grad.abs().max().item() for p in separate.parameters())
    mismatched = [
        name
        for (name, a), b in zip(separate.named_parameters(), batched.parameters())
        if not torch.allclose(b.grad, a.grad, rtol=1e-5, atol=1e-5 * scale)
    ]
    assert mismatched == []
    for a, b in zip(separate.buffers(), batched.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_same_seed_same_loss():
    torch.manual_seed(0)
    network = UNetLight()
    first, _ = run(ObjectiveSettings(), copy.deepcopy(network), seed=11)
    second, _ = run(ObjectiveSettings(), copy.deepcopy(network), seed=11)
    assert torch.equal(first, second)


def test_terms_float32_under_bf16_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = run(ObjectiveSettings(), UNetLight())
    assert total.dtype == torch.float32
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in terms.values())


def test_upstream_broadcast_batch_four_four_classes():
    torch.manual_seed(0)
    network = PixelwiseNet()
    _, intended = run(ObjectiveSettings(), copy.deepcopy(network), batch=4)
    _, upstream = run(ObjectiveSettings(upstream_broadcast=True), copy.deepcopy(network), batch=4)
    assert not torch.equal(intended["edge"], upstream["edge"])
    with pytest.raises(ValueError, match="batch 2 and 4 classes"):
        run(ObjectiveSettings(upstream_broadcast=True), network, batch=2)


def test_edges_required_when_spr_edges_on():
    image, scribble, _ = make_batch()
    objective = HelpnetObjective(ObjectiveSettings(), 4)
    with pytest.raises(ValueError, match="no edge map"):
        objective(PixelwiseNet(), image, scribble, None, torch.Generator())
    with pytest.raises(ValueError, match="floats in"):
        objective(PixelwiseNet(), image, scribble, torch.zeros(2, 32, 32, dtype=torch.uint8), torch.Generator())


def test_input_shape_errors():
    image, scribble, edge = make_batch()
    objective = HelpnetObjective(ObjectiveSettings(), 4)
    with pytest.raises(ValueError, match="scribble shape"):
        objective(PixelwiseNet(), image, scribble[:, :16], edge, torch.Generator())
    with pytest.raises(ValueError, match="square"):
        objective(PixelwiseNet(), image[..., :16], scribble[..., :16], edge[..., :16], torch.Generator())
    with pytest.raises(ValueError, match="num_classes=4"):
        objective(PixelwiseNet(num_classes=3), image, scribble, edge, torch.Generator())


def test_cuda_generator_rejected_message():
    # A generator on another device cannot be built on a CPU-only machine; check the guard
    # through a stand-in object with a device attribute.
    class FakeGenerator:
        device = torch.device("meta")

    with pytest.raises(ValueError, match="CPU torch.Generator"):
        draw_hpc_permutations(FakeGenerator())  # type: ignore[arg-type]


def test_settings_validation():
    with pytest.raises(ValueError, match="temperature"):
        ObjectiveSettings(temperature=0.0)
    with pytest.raises(ValueError, match="noise_probability"):
        ObjectiveSettings(noise_probability=1.5)
