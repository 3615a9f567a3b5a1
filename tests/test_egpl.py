"""EGPL: entropy scores, view weights, the ensemble broadcast and the pseudo-label Dice loss."""

from __future__ import annotations

import math

import pytest
import torch

from helpnet.method.egpl import (
    entropy_view_weights,
    negative_entropy_bits,
    pseudo_label,
    pseudo_label_loss,
    weighted_ensemble,
)
from helpnet.method.losses import soft_dice_loss


def pixel(*probs: float) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float32).reshape(1, len(probs), 1, 1)


def test_negative_entropy_uniform_is_minus_log2_classes():
    assert negative_entropy_bits(pixel(0.25, 0.25, 0.25, 0.25)).item() == pytest.approx(-2.0, abs=1e-6)
    assert negative_entropy_bits(pixel(1.0, 0.0)).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_entropy_bits(pixel(0.5, 0.5)).shape == (1, 1, 1, 1)


def test_weights_and_ensemble_two_views_one_pixel():
    confident, unsure = pixel(1.0, 0.0), pixel(0.5, 0.5)
    weights = entropy_view_weights([confident, unsure], temperature=0.4)
    # Scores 0 and −1 bit; softmax of (0, −2.5): 1 / (1 + e^−2.5) and e^−2.5 / (1 + e^−2.5).
    w_confident = 1.0 / (1.0 + math.exp(-2.5))
    assert weights.shape == (2, 1, 1, 1, 1)
    assert weights[0].item() == pytest.approx(w_confident, abs=1e-6)
    assert weights[1].item() == pytest.approx(1.0 - w_confident, abs=1e-6)

    ensemble = weighted_ensemble([confident, unsure], weights)
    assert ensemble[0, 0].item() == pytest.approx(w_confident + 0.5 * (1.0 - w_confident), abs=1e-6)
    assert ensemble[0, 1].item() == pytest.approx(0.5 * (1.0 - w_confident), abs=1e-6)


def test_weights_are_detached_and_sum_to_one():
    views = [torch.softmax(torch.randn(2, 4, 3, 3), 1).requires_grad_() for _ in range(3)]
    weights = entropy_view_weights(views)
    assert not weights.requires_grad
    torch.testing.assert_close(weights.sum(0), torch.ones(2, 1, 3, 3))


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        entropy_view_weights([pixel(0.5, 0.5)], temperature=0.0)


def test_ensemble_gradient_is_weight_times_upstream_gradient():
    views = [torch.softmax(torch.randn(1, 3, 2, 2), 1).requires_grad_() for _ in range(3)]
    weights = entropy_view_weights(views)
    weighted_ensemble(views, weights).sum().backward()
    # Detached weights: d(Σ_v w_v y_v)/d y_v = w_v, broadcast over classes.
    for view, weight in zip(views, weights):
        torch.testing.assert_close(view.grad, weight.expand_as(view))


def upstream_example() -> tuple[list[torch.Tensor], torch.Tensor]:
    # Two views of B=4 images with C=4 classes and one pixel; view 0 is all ones, view 1 all
    # zeros, so the ensemble shows exactly which weight reached each (image, class).
    views = [torch.ones(4, 4, 1, 1), torch.zeros(4, 4, 1, 1)]
    w0 = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(4, 1, 1, 1)
    return views, torch.stack([w0, 1.0 - w0])


def test_intended_broadcast_weights_by_image():
    views, weights = upstream_example()
    ensemble = weighted_ensemble(views, weights)[:, :, 0, 0]
    expected = torch.tensor(
        [
            [0.1, 0.1, 0.1, 0.1],
            [0.2, 0.2, 0.2, 0.2],
            [0.3, 0.3, 0.3, 0.3],
            [0.4, 0.4, 0.4, 0.4],
        ]
    )
    torch.testing.assert_close(ensemble, expected)


def test_upstream_broadcast_pairs_image_with_class():
    views, weights = upstream_example()
    ensemble = weighted_ensemble(views, weights, upstream_broadcast=True)[:, :, 0, 0]
    expected = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4],
        ]
    )
    torch.testing.assert_close(ensemble, expected)


def test_upstream_broadcast_batch_one_equals_intended():
    views = [torch.softmax(torch.randn(1, 4, 3, 3), 1) for _ in range(3)]
    weights = entropy_view_weights(views)
    torch.testing.assert_close(
        weighted_ensemble(views, weights, upstream_broadcast=True), weighted_ensemble(views, weights)
    )


def test_upstream_broadcast_rejects_other_batch_sizes():
    views = [torch.softmax(torch.randn(2, 4, 3, 3), 1) for _ in range(3)]
    with pytest.raises(ValueError, match="batch 2 and 4 classes"):
        weighted_ensemble(views, entropy_view_weights(views), upstream_broadcast=True)


def test_pseudo_label_is_detached_argmax():
    ensemble = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]).T.reshape(1, 3, 1, 2).requires_grad_()
    label = pseudo_label(ensemble)
    assert label.tolist() == [[[1, 0]]]
    assert label.dtype == torch.int64
    assert not label.requires_grad


def test_dice_loss_hand_value():
    # Two pixels, two classes: p = (0.8, 0.2) with label 0 and p = (0.4, 0.6) with label 1.
    probs = torch.tensor([[0.8, 0.4], [0.2, 0.6]]).reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    dice_class0 = (2 * 0.8 + 1e-5) / (0.64 + 0.16 + 1.0 + 1e-5)
    dice_class1 = (2 * 0.6 + 1e-5) / (0.04 + 0.36 + 1.0 + 1e-5)
    expected = ((1 - dice_class0) + (1 - dice_class1)) / 2
    assert soft_dice_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_pools_the_batch():
    # The same two pixels as two one-pixel images: a batch-level Dice gives the same value,
    # while a per-image mean would not (class 1 is absent from image 0).
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6]]).reshape(2, 2, 1, 1)
    target = torch.tensor([0, 1]).reshape(2, 1, 1)
    dice_class0 = (2 * 0.8 + 1e-5) / (0.64 + 0.16 + 1.0 + 1e-5)
    dice_class1 = (2 * 0.6 + 1e-5) / (0.04 + 0.36 + 1.0 + 1e-5)
    expected = ((1 - dice_class0) + (1 - dice_class1)) / 2
    assert soft_dice_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_counts_absent_classes():
    # Class 2 is absent from target and prediction: its Dice is smooth/smooth = 1, loss 0.
    probs = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert soft_dice_loss(probs, target).item() == pytest.approx(0.0, abs=1e-6)


def test_pseudo_label_loss_sums_views():
    view = torch.softmax(torch.randn(2, 4, 5, 5), 1)
    label = pseudo_label(view)
    single = soft_dice_loss(view, label)
    assert pseudo_label_loss([view, view, view], label).item() == pytest.approx(3 * single.item(), rel=1e-6)
