"""HPC views: jigsaw shuffles against hand-written arrays, exact inverses, perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpnet.method.hpc import (
    NOISE_AMPLITUDE,
    HpcPermutations,
    add_noise,
    draw_hpc_permutations,
    make_jigsaw_views,
    perturb_intensity,
    restore_focal,
    restore_focal_view,
    restore_local,
    shuffle_focal,
    shuffle_local,
)

IDENTITY = (0, 1, 2, 3)


def arange_image() -> torch.Tensor:
    return torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)


def test_local_jigsaw_hand_example():
    perms = HpcPermutations(local=(2, 0, 3, 1), focal=(IDENTITY,) * 4)
    expected = torch.tensor(
        [
            [32, 33, 34, 35, 0, 1, 2, 3],
            [40, 41, 42, 43, 8, 9, 10, 11],
            [48, 49, 50, 51, 16, 17, 18, 19],
            [56, 57, 58, 59, 24, 25, 26, 27],
            [36, 37, 38, 39, 4, 5, 6, 7],
            [44, 45, 46, 47, 12, 13, 14, 15],
            [52, 53, 54, 55, 20, 21, 22, 23],
            [60, 61, 62, 63, 28, 29, 30, 31],
        ],
        dtype=torch.float32,
    )
    shuffled = shuffle_local(arange_image(), perms)
    assert torch.equal(shuffled[0, 0], expected)
    assert torch.equal(restore_local(shuffled, perms), arange_image())


def test_focal_jigsaw_hand_example():
    perms = HpcPermutations(local=IDENTITY, focal=((1, 0, 3, 2), (3, 2, 1, 0), IDENTITY, (2, 3, 0, 1)))
    expected = torch.tensor(
        [
            [2, 3, 0, 1, 22, 23, 20, 21],
            [10, 11, 8, 9, 30, 31, 28, 29],
            [18, 19, 16, 17, 6, 7, 4, 5],
            [26, 27, 24, 25, 14, 15, 12, 13],
            [32, 33, 34, 35, 52, 53, 54, 55],
            [40, 41, 42, 43, 60, 61, 62, 63],
            [48, 49, 50, 51, 36, 37, 38, 39],
            [56, 57, 58, 59, 44, 45, 46, 47],
        ],
        dtype=torch.float32,
    )
    shuffled = shuffle_focal(arange_image(), perms)
    assert torch.equal(shuffled[0, 0], expected)
    assert torch.equal(restore_focal(shuffled, perms), arange_image())


def test_focal_view_shuffles_quadrants_of_local_view():
    # Quadrant 0 of the local view contains input patch 2. Its column pairs swap, the rest stays.
    perms = HpcPermutations(local=(2, 0, 3, 1), focal=((1, 0, 3, 2), IDENTITY, IDENTITY, IDENTITY))
    expected = torch.tensor(
        [
            [34, 35, 32, 33, 0, 1, 2, 3],
            [42, 43, 40, 41, 8, 9, 10, 11],
            [50, 51, 48, 49, 16, 17, 18, 19],
            [58, 59, 56, 57, 24, 25, 26, 27],
            [36, 37, 38, 39, 4, 5, 6, 7],
            [44, 45, 46, 47, 12, 13, 14, 15],
            [52, 53, 54, 55, 20, 21, 22, 23],
            [60, 61, 62, 63, 28, 29, 30, 31],
        ],
        dtype=torch.float32,
    )
    _, focal = make_jigsaw_views(arange_image(), perms)
    assert torch.equal(focal[0, 0], expected)
    assert torch.equal(restore_focal_view(focal, perms), arange_image())


def test_inverse_exact_on_random_tensors():
    generator = torch.Generator().manual_seed(123)
    for _ in range(10):
        perms = draw_hpc_permutations(generator)
        x = torch.randn(3, 5, 16, 16, generator=generator)
        local, focal = make_jigsaw_views(x, perms)
        assert torch.equal(restore_local(local, perms), x)
        assert torch.equal(restore_focal_view(focal, perms), x)


def test_shuffle_keeps_patch_contents():
    # Every 4×4 patch of the focal view must be an unrotated 4×4 patch of the input.
    perms = HpcPermutations(local=(3, 1, 0, 2), focal=((1, 2, 3, 0), (0, 3, 2, 1), (2, 0, 1, 3), (3, 2, 0, 1)))
    x = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    _, focal = make_jigsaw_views(x, perms)
    input_patches = {tuple(x[0, 0, r : r + 4, c : c + 4].flatten().tolist()) for r in range(0, 16, 4) for c in range(0, 16, 4)}
    output_patches = {tuple(focal[0, 0, r : r + 4, c : c + 4].flatten().tolist()) for r in range(0, 16, 4) for c in range(0, 16, 4)}
    assert output_patches == input_patches


def test_jigsaw_runs_on_views_of_any_leading_shape():
    perms = HpcPermutations(local=(2, 0, 3, 1), focal=(IDENTITY,) * 4)
    single = shuffle_local(arange_image()[0, 0], perms)
    assert torch.equal(single, shuffle_local(arange_image(), perms)[0, 0])


def test_non_square_rejected():
    perms = draw_hpc_permutations(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"square.*\(1, 1, 8, 16\)"):
        shuffle_local(torch.zeros(1, 1, 8, 16), perms)


def test_non_divisible_rejected():
    perms = draw_hpc_permutations(torch.Generator().manual_seed(0))
    shuffle_local(torch.zeros(1, 1, 6, 6), perms)
    with pytest.raises(ValueError, match="divisible by 4"):
        make_jigsaw_views(torch.zeros(1, 1, 6, 6), perms)
    with pytest.raises(ValueError, match="divisible by 2"):
        shuffle_local(torch.zeros(1, 1, 7, 7), perms)


def test_invalid_permutation_rejected():
    with pytest.raises(ValueError, match="permutation"):
        HpcPermutations(local=(0, 0, 1, 2), focal=(IDENTITY,) * 4)
    with pytest.raises(ValueError, match="one permutation per quadrant"):
        HpcPermutations(local=IDENTITY, focal=(IDENTITY,) * 3)


def test_permutations_follow_generator_seed():
    first = draw_hpc_permutations(torch.Generator().manual_seed(7))
    second = draw_hpc_permutations(torch.Generator().manual_seed(7))
    assert first == second
    seen = {draw_hpc_permutations(torch.Generator().manual_seed(seed)).local for seed in range(40)}
    assert len(seen) > 5


def test_noise_probability_zero_returns_input():
    image = torch.randn(2, 1, 8, 8)
    assert add_noise(image, torch.Generator().manual_seed(0), probability=0.0) is image


def test_noise_probability_one_bounded():
    image = torch.zeros(2, 1, 32, 32)
    noisy = add_noise(image, torch.Generator().manual_seed(0), probability=1.0)
    assert noisy.abs().max() <= NOISE_AMPLITUDE
    assert noisy.abs().max() > 0.9 * NOISE_AMPLITUDE
    assert noisy.min() < 0 < noisy.max()


def test_noise_rate_near_nineteen_percent():
    generator = torch.Generator().manual_seed(1)
    image = torch.zeros(1, 1, 4, 4)
    hits = sum(add_noise(image, generator, probability=0.1) is not image for _ in range(4000))
    # 1 − 0.9² = 0.19; four standard deviations of the count are about 100.
    assert 660 <= hits <= 860


def test_intensity_constant_image_unchanged():
    image = torch.full((2, 1, 8, 8), 3.25)
    out = perturb_intensity(image, torch.Generator().manual_seed(0))
    assert torch.equal(out, image)
    assert torch.isfinite(out).all()


def test_intensity_matches_hand_formula():
    image = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[-1.0, -0.5], [0.0, 4.0]]]])
    draws = torch.Generator().manual_seed(5)
    brightness = 1.0 + (torch.rand(2, generator=draws).numpy() * 2.0 - 1.0) * 0.7
    contrast = (torch.rand(2, generator=draws).numpy() * 2.0 - 1.0) * 0.7
    out = perturb_intensity(image, torch.Generator().manual_seed(5)).numpy()
    for n in range(2):
        pixels = image[n, 0].numpy().astype(np.float64)
        low, high = pixels.min(), pixels.max()
        v = (pixels - low) / (high - low) * 255.0
        v = np.clip(v * brightness[n], 0, 255)
        v = np.clip(v + (v - 127.5) * contrast[n], 0, 255)
        np.testing.assert_allclose(out[n, 0], v / 255.0 * (high - low) + low, rtol=1e-5, atol=1e-5)


def test_intensity_zero_limits_identity():
    image = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    out = perturb_intensity(image, torch.Generator().manual_seed(0), brightness_limit=0.0, contrast_limit=0.0)
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_intensity_stays_within_image_range():
    image = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    out = perturb_intensity(image, torch.Generator().manual_seed(9))
    for n in range(4):
        assert out[n].min() >= image[n].min() - 1e-5
        assert out[n].max() <= image[n].max() + 1e-5
