"""Partial cross-entropy, cosine loss and label helpers against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from helpnet.method.losses import class_argmax, check_label_range, cosine_loss, one_hot, partial_cross_entropy


def two_by_two_probs() -> torch.Tensor:
    # Pixels (row-major): (0.8, 0.2), (0.4, 0.6), (0.5, 0.5), (0.9, 0.1).
    class0 = torch.tensor([[0.8, 0.4], [0.5, 0.9]])
    return torch.stack([class0, 1 - class0]).unsqueeze(0)


SCRIBBLE = torch.tensor([[[0, 1], [255, 255]]])


def test_pce_averages_over_all_pixels():
    expected = (-math.log(0.8) - math.log(0.6)) / 4
    assert partial_cross_entropy(two_by_two_probs(), SCRIBBLE).item() == pytest.approx(expected, rel=1e-6)


def test_pce_annotated_mean():
    expected = (-math.log(0.8) - math.log(0.6)) / 2
    value = partial_cross_entropy(two_by_two_probs(), SCRIBBLE, mean_over="annotated").item()
    assert value == pytest.approx(expected, rel=1e-6)


def test_pce_unannotated_pixels_get_no_gradient():
    probs = two_by_two_probs().requires_grad_()
    partial_cross_entropy(probs, SCRIBBLE).backward()
    assert probs.grad[0, :, 1, :].abs().sum() == 0
    # d/dp of −log(p + 1e-12)/4 at the scribbled class of pixel (0, 0).
    assert probs.grad[0, 0, 0, 0].item() == pytest.approx(-1 / (4 * 0.8), rel=1e-5)


def test_pce_all_unannotated_is_zero():
    scribble = torch.full((1, 2, 2), 255)
    for mean_over in ("all_pixels", "annotated"):
        value = partial_cross_entropy(two_by_two_probs(), scribble, mean_over=mean_over)
        assert value.item() == 0.0


def test_pce_zero_probability_is_finite():
    probs = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1)
    value = partial_cross_entropy(probs, torch.zeros(1, 1, 1, dtype=torch.long))
    assert value.item() == pytest.approx(-math.log(1e-12), rel=1e-4)


def test_pce_custom_ignore_index():
    scribble = torch.tensor([[[0, 1], [4, 4]]])
    expected = (-math.log(0.8) - math.log(0.6)) / 4
    assert partial_cross_entropy(two_by_two_probs(), scribble, ignore_index=4).item() == pytest.approx(expected, rel=1e-6)


def test_pce_float32_under_autocast():
    probs = two_by_two_probs().to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = partial_cross_entropy(probs, SCRIBBLE)
    assert value.dtype == torch.float32


def test_pce_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="scribble"):
        partial_cross_entropy(two_by_two_probs(), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="mean_over"):
        partial_cross_entropy(two_by_two_probs(), SCRIBBLE, mean_over="pixels")  # type: ignore[arg-type]


def test_cosine_loss_hand_value():
    a = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0]]).reshape(1, 2, 1, 2)
    # Pixel 0: a = (1, 0), b = (1, 1), cos = 1/√2. Pixel 1: a = b = (1, 1), cos = 1.
    expected = 1 - (1 / math.sqrt(2) + 1) / 2
    assert cosine_loss(a, b).item() == pytest.approx(expected, rel=1e-6)


def test_cosine_loss_zero_vector_uses_norm_floor():
    # a is the zero vector at the only pixel: a·b = 0, so the similarity is 0 and the loss 1,
    # where a plain a·b / (|a| |b|) would be 0/0.
    a = torch.zeros(1, 2, 1, 1)
    b = torch.tensor([0.6, 0.8]).reshape(1, 2, 1, 1)
    assert cosine_loss(a, b).item() == 1.0


def test_cosine_loss_gradient_matches_hand_derivative():
    # One pixel, a = (3, 4), b = (1, 0): cos = a1 / |a|, d cos / d a = (1/|a| - a1²/|a|³, -a1 a2/|a|³).
    a = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1).requires_grad_(True)
    b = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    cosine_loss(a, b).backward()
    expected = -torch.tensor([1 / 5 - 9 / 125, -12 / 125])
    assert torch.allclose(a.grad.flatten(), expected, atol=1e-7)


def test_class_argmax_picks_lowest_class_on_ties():
    probs = torch.tensor([[0.4, 0.1], [0.4, 0.2], [0.2, 0.7]]).reshape(1, 3, 1, 2)
    assert class_argmax(probs).tolist() == [[[0, 2]]]
    assert class_argmax(probs).dtype == torch.int64


def test_one_hot_layout():
    labels = torch.tensor([[[0, 2]]])
    expected = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 1.0]]]])
    assert torch.equal(one_hot(labels, 3), expected)
    assert one_hot(labels, 3).is_contiguous()


def test_check_label_range():
    check_label_range(torch.tensor([0, 3, 255]), num_classes=4)
    with pytest.raises(ValueError, match=r"values \[4, 7\]"):
        check_label_range(torch.tensor([0, 4, 7, 255]), num_classes=4)
