"""The two UNets: parameter counts, layer quirks, shapes and per-view BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpnet.model import UNetLight, UNetUpstream, ViewBatchNorm2d, build_network, per_view_batch_norm


def trainable(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def test_upstream_parameter_count():
    assert trainable(UNetUpstream(in_channels=1, num_classes=4)) == 25_759_396


def test_upstream_fifth_class_adds_head_parameters():
    # One more class adds 64 weights and a bias to the 1×1 head and a weight and bias to its BN.
    assert trainable(UNetUpstream(num_classes=5)) == 25_759_396 + 64 + 1 + 2


def test_light_parameter_count():
    # Encoder blocks 9·in·out + 9·out² + 6·out: 2,544 + 14,016 + 55,680 + 221,952 + 886,272.
    # Decoder levels: 1×1 reduce deep·skip + skip, then a block 27·skip² + 6·skip:
    # 476,032 + 119,232 + 29,920 + 7,536. Head conv 3×3 16 → 4: 580.
    assert trainable(UNetLight(num_classes=4)) == 1_180_464 + 632_720 + 580


def test_upstream_block_order_and_batch_norm_settings():
    network = UNetUpstream(num_classes=5)
    block = list(network.encoders[0])
    assert [type(layer) for layer in block] == [nn.Conv2d, nn.ReLU, ViewBatchNorm2d, nn.Conv2d, nn.ReLU, ViewBatchNorm2d]
    assert (block[2].eps, block[2].momentum) == (1e-5, 0.1)
    assert (block[5].eps, block[5].momentum) == (1e-3, 0.01)
    assert (network.head_norm.eps, network.head_norm.momentum, network.head_norm.num_features) == (1e-3, 0.01, 5)
    assert not any(isinstance(module, nn.Dropout) for module in network.modules())


def test_upstream_decoder_squeezes_to_four_channels():
    network = UNetUpstream(num_classes=5)
    up_convs = [next(layer for layer in up if isinstance(layer, nn.Conv2d)) for up in network.ups]
    assert [conv.out_channels for conv in up_convs] == [4, 4, 128, 64]
    assert [decoder[0].in_channels for decoder in network.decoders] == [516, 260, 256, 128]
    assert isinstance(network.ups[0][0], nn.Upsample) and network.ups[0][0].mode == "nearest"


@pytest.mark.parametrize("name", ["unet_upstream", "unet_light"])
def test_output_is_float32_probabilities(name):
    network = build_network(name, num_classes=5)
    probs = network(torch.randn(2, 1, 32, 48))
    assert probs.shape == (2, 5, 32, 48)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 48))


@pytest.mark.parametrize("name", ["unet_upstream", "unet_light"])
def test_output_float32_under_bf16_autocast(name):
    network = build_network(name, num_classes=4).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = network(torch.randn(2, 1, 16, 16).to(memory_format=torch.channels_last))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16))


@pytest.mark.parametrize("name", ["unet_upstream", "unet_light"])
def test_rejects_size_not_divisible_by_16(name):
    network = build_network(name, num_classes=4)
    with pytest.raises(ValueError, match=r"\(1, 1, 30, 32\).*multiple of 16"):
        network(torch.zeros(1, 1, 30, 32))


def test_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        UNetLight()(torch.zeros(1, 3, 16, 16))


def test_build_network_unknown_name():
    with pytest.raises(ValueError, match="unet_light"):
        build_network("resnet", num_classes=4)


def test_build_network_in_channels():
    assert build_network("unet_light", num_classes=3, in_channels=2)(torch.zeros(2, 2, 16, 16)).shape == (2, 3, 16, 16)


def test_light_dropout_option():
    network = UNetLight(dropout=(0.05, 0.1, 0.2, 0.3, 0.5))
    assert [m.p for m in network.modules() if isinstance(m, nn.Dropout)] == [0.05, 0.1, 0.2, 0.3, 0.5]


@pytest.mark.parametrize("name", ["unet_upstream", "unet_light"])
def test_stacked_views_match_separate_forwards(name):
    torch.manual_seed(0)
    separate = build_network(name, num_classes=4)
    stacked = copy.deepcopy(separate)
    views = [torch.randn(2, 1, 16, 16) for _ in range(3)]
    weights = torch.randn(3, 2, 4, 16, 16)

    outputs = [separate(view) for view in views]
    sum((w * y).sum() for w, y in zip(weights, outputs)).backward()
    with per_view_batch_norm(stacked, 3):
        joint = stacked(torch.cat(views))
    (weights.flatten(0, 1) * joint).sum().backward()

    torch.testing.assert_close(joint, torch.cat(outputs), rtol=1e-5, atol=1e-6)
    # Biases that feed straight into a BN have an exact gradient of 0 and carry only rounding
    # noise, so the absolute tolerance scales with the largest gradient of the network.
    scale = max(p.grad.abs().max().item() for p in separate.parameters())
    mismatched = [
        param_name
        for (param_name, a), b in zip(separate.named_parameters(), stacked.parameters())
        if not torch.allclose(b.grad, a.grad, rtol=1e-5, atol=1e-5 * scale)
    ]
    assert mismatched == []
    for (buffer_name, a), b in zip(separate.named_buffers(), stacked.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=buffer_name)
    assert all(m.num_views == 1 for m in stacked.modules() if isinstance(m, ViewBatchNorm2d))


def test_pooled_batch_norm_differs_from_per_view():
    # Without per_view_batch_norm the stacked forward pools statistics and gives other outputs,
    # which is why the per-view split is needed.
    torch.manual_seed(0)
    network = UNetLight()
    views = [torch.randn(2, 1, 16, 16) * (i + 1) for i in range(3)]
    separate = torch.cat([network(view) for view in views])
    pooled = network(torch.cat(views))
    assert not torch.allclose(pooled, separate, atol=1e-3)


def test_per_view_batch_norm_rejects_plain_batch_norm():
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="ViewBatchNorm2d"):
        with per_view_batch_norm(network, 3):
            pass


def test_view_batch_norm_rejects_uneven_batch():
    layer = ViewBatchNorm2d(2)
    layer.num_views = 3
    with pytest.raises(ValueError, match="4 samples"):
        layer(torch.zeros(4, 2, 2, 2))


def test_light_unet_normalises_logits_like_upstream():
    from helpnet.model import UNetLight

    light = build_network("unet_light", num_classes=4)
    plain = build_network("unet_light_wsl4mis", num_classes=4)
    assert isinstance(light, UNetLight)
    assert light.logit_norm is not None
    assert light.logit_norm.eps == 1e-3
    assert light.logit_norm.momentum == 0.01
    assert plain.logit_norm is None
    # The logit BatchNorm adds one weight and one bias per class.
    extra = sum(p.numel() for p in light.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 8


def test_view_batch_norm_gradient_layout():
    # The gradient of a channel slice of a channels-last concatenation is not channels-last;
    # the layer's hook converts it before the batch-norm backward runs.
    torch.manual_seed(0)
    layer = ViewBatchNorm2d(3)
    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    seen = []
    out = layer(x)
    out.register_hook(lambda gradient: seen.append(gradient))
    other = torch.zeros(2, 5, 4, 4).contiguous(memory_format=torch.channels_last)
    joined = torch.cat([out, other], dim=1)
    weights = torch.randn(2, 8, 4, 4)
    (joined * weights).sum().backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    # The values are those of plain BatchNorm2d with the same gradient.
    reference_x = x.detach().clone().requires_grad_(True)
    reference = nn.BatchNorm2d(3)
    (reference(reference_x) * weights[:, :3]).sum().backward()
    assert torch.allclose(x.grad, reference_x.grad, atol=1e-6)
