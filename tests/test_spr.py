"""SPR: the largest-connected-component target and the edge loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpnet.method.losses import one_hot
from helpnet.method.spr import connectivity_loss, connectivity_target, edge_loss, largest_components

# Foreground component A: class 1 (6 pixels) touching class 2 (2 pixels). Outside A: a
# 3-pixel class-2 blob B and an isolated class-3 pixel C.
MIXED = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 2, 0, 0, 0],
        [0, 1, 1, 1, 2, 0, 2, 0],
        [0, 0, 0, 0, 0, 0, 2, 0],
        [0, 3, 0, 0, 0, 0, 2, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]
)


def test_two_blobs_keeps_larger():
    mask = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 1, 1],
            [0, 0, 0, 0, 0],
        ]
    )
    expected = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(connectivity_target(mask[None], num_classes=2)[0], expected)


def test_class_outside_foreground_component_removed():
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(connectivity_target(MIXED[None], num_classes=4)[0], expected)


def test_per_class_only_keeps_each_class_largest():
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 2, 0],
            [0, 0, 0, 0, 0, 0, 2, 0],
            [0, 3, 0, 0, 0, 0, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    result = connectivity_target(MIXED[None], num_classes=4, per_class_only=True)[0]
    np.testing.assert_array_equal(result, expected)


def test_diagonal_neighbours_are_not_connected():
    # The diagonal chain would be one 4-pixel component with 8-connectivity; with
    # 4-connectivity it is four single pixels, so the 3-pixel row wins.
    mask = np.array(
        [
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 1, 0],
        ]
    )
    expected = np.zeros_like(mask)
    expected[0, :3] = 1
    np.testing.assert_array_equal(connectivity_target(mask[None], num_classes=2)[0], expected)


def test_components_never_cross_batch_samples():
    # Sample 0 has a 6-pixel blob where sample 1 has a single pixel. Sample 1 also has a
    # 2-pixel blob, which must win inside sample 1.
    batch = np.zeros((2, 4, 6), dtype=np.int64)
    batch[0, 0:2, 0:3] = 1
    batch[1, 0, 0] = 1
    batch[1, 3, 4:6] = 1
    expected = np.zeros_like(batch)
    expected[0, 0:2, 0:3] = 1
    expected[1, 3, 4:6] = 1
    np.testing.assert_array_equal(connectivity_target(batch, num_classes=2), expected)


def test_tie_keeps_first_in_raster_order():
    masks = np.array([[[1, 0, 1], [0, 0, 0], [0, 0, 0]]], dtype=bool)
    expected = np.array([[[1, 0, 0], [0, 0, 0], [0, 0, 0]]], dtype=bool)
    np.testing.assert_array_equal(largest_components(masks), expected)


def test_empty_and_absent_classes():
    empty = np.zeros((2, 4, 4), dtype=np.int64)
    np.testing.assert_array_equal(connectivity_target(empty, num_classes=4), empty)
    np.testing.assert_array_equal(largest_components(np.zeros((3, 2, 2), dtype=bool)), np.zeros((3, 2, 2), dtype=bool))


def test_connectivity_target_rejects_non_stack():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        connectivity_target(np.zeros((4, 4)), num_classes=2)


def test_connectivity_loss_hand_value():
    # One-hot P_ens of MIXED: the 6 pixels that the target removes have cosine 0, the other
    # 42 pixels cosine 1, so the loss is 6/48.
    ensemble = one_hot(torch.from_numpy(MIXED)[None], 4).requires_grad_()
    loss = connectivity_loss(ensemble)
    assert loss.item() == pytest.approx(6 / 48, abs=1e-6)
    loss.backward()
    assert ensemble.grad.abs().sum() > 0


def test_connectivity_loss_zero_for_clean_mask():
    mask = np.zeros((1, 6, 6), dtype=np.int64)
    mask[0, 1:4, 1:3] = 1
    mask[0, 1:4, 3:5] = 2
    ensemble = one_hot(torch.from_numpy(mask), 3)
    assert connectivity_loss(ensemble).item() == pytest.approx(0.0, abs=1e-6)


def test_edge_loss_hand_value():
    # Image 0: f = (0.9, 0.2, 0.5, 0.0), E = (0.8, 0.6, 0.4, 1.0); M keeps 3 pixels:
    # (0.1² + 0.4² + 1.0²) / 3 = 0.39. Image 1 has no E > 0.5 and adds 0. Mean 0.195.
    foreground = torch.tensor([[0.9, 0.2], [0.5, 0.0]])
    ensemble = torch.zeros(2, 3, 2, 2)
    ensemble[0, 1] = foreground * 0.5
    ensemble[0, 2] = foreground * 0.5
    ensemble[0, 0] = 1 - foreground
    ensemble[1, 0] = 1.0
    edge = torch.tensor([[[0.8, 0.6], [0.4, 1.0]], [[0.3, 0.5], [0.5, 0.0]]])
    assert edge_loss(ensemble, edge).item() == pytest.approx(0.195, abs=1e-6)


def test_edge_loss_empty_edge_map_is_zero():
    ensemble = torch.softmax(torch.randn(2, 4, 8, 8), 1).requires_grad_()
    loss = edge_loss(ensemble, torch.zeros(2, 8, 8))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(ensemble.grad).all()
    assert ensemble.grad.abs().sum() == 0


def test_edge_loss_threshold_is_strict():
    ensemble = torch.zeros(1, 2, 1, 1)
    ensemble[0, 0] = 1.0
    assert edge_loss(ensemble, torch.full((1, 1, 1), 0.5)).item() == 0.0
    assert edge_loss(ensemble, torch.full((1, 1, 1), 0.75)).item() == pytest.approx(0.5625)


def test_edge_loss_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="edge map of shape"):
        edge_loss(torch.zeros(2, 4, 8, 8), torch.zeros(2, 8, 4))
