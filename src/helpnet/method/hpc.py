"""Hierarchical perturbation consistency (HPC): the three views of one training batch.

- noise: with probability 1 − (1 − p)² (two Bernoulli(p) draws, p = 0.1) uniform noise in
  [−10/255, 10/255] is added to the whole batch; all three views start from the result;
- global view: a random brightness and contrast change of each image;
- local view: the image cut into a 2×2 grid of patches, shuffled by one permutation π;
- focal view: each quadrant of the local view cut into its own 2×2 grid and shuffled by its
  own permutation, so the focal view is a nested 4×4 jigsaw of the image.

Patches are numbered row-major (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), and
output position k receives input patch index[k]. All permutations are shared by the batch.
Every random number comes from a CPU ``torch.Generator`` that the caller passes in, and the
patch moves are single reshape/permute/index_select calls on the tensor's own device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

NOISE_AMPLITUDE = 10.0 / 255.0


def _check_permutation(values: tuple[int, ...], name: str) -> None:
    if sorted(values) != [0, 1, 2, 3]:
        raise ValueError(f"{name} must be a permutation of (0, 1, 2, 3), got {values}")


@dataclass(frozen=True)
class HpcPermutations:
    """The patch permutations of one training step.

    ``local`` is π of the 2×2 jigsaw. ``focal[q]`` is the permutation of the four sub-patches
    inside quadrant q of the local view. Output position k receives input patch ``perm[k]``.
    """

    local: tuple[int, int, int, int]
    focal: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self) -> None:
        _check_permutation(tuple(self.local), "local permutation")
        if len(self.focal) != 4:
            raise ValueError(f"focal needs one permutation per quadrant (4), got {len(self.focal)}")
        for quadrant, perm in enumerate(self.focal):
            _check_permutation(tuple(perm), f"focal permutation of quadrant {quadrant}")

    def local_index(self) -> list[int]:
        """Return the 2×2 grid index: output patch k receives input patch ``local[k]``."""
        return list(self.local)

    def focal_index(self) -> list[int]:
        """Return the nested jigsaw as an index over the row-major 4×4 grid of patches.

        Row-major cell (r, c) of the 4×4 grid is sub-patch ``2 (r % 2) + c % 2`` of quadrant
        ``2 (r // 2) + c // 2``. Output sub-patch k of quadrant q receives input sub-patch
        ``focal[q][k]`` of the same quadrant.
        """
        index = []
        for row in range(4):
            for col in range(4):
                quadrant = 2 * (row // 2) + col // 2
                source = self.focal[quadrant][2 * (row % 2) + col % 2]
                source_row = 2 * (quadrant // 2) + source // 2
                source_col = 2 * (quadrant % 2) + source % 2
                index.append(4 * source_row + source_col)
        return index


def _check_cpu_generator(generator: torch.Generator) -> None:
    # The permutations are Python-side decisions; drawing them from a CPU generator keeps
    # every draw free of device synchronisation.
    if generator.device.type != "cpu":
        raise ValueError(
            f"HPC needs a CPU torch.Generator, got one on {generator.device}; "
            "create it with torch.Generator() and seed it with manual_seed"
        )


def _random_permutation(generator: torch.Generator) -> tuple[int, int, int, int]:
    return tuple(torch.randperm(4, generator=generator).tolist())  # type: ignore[return-value]


def draw_hpc_permutations(generator: torch.Generator) -> HpcPermutations:
    """Draw π for the local view, then the four quadrant permutations of the focal view."""
    _check_cpu_generator(generator)
    local = _random_permutation(generator)
    focal = tuple(_random_permutation(generator) for _ in range(4))
    return HpcPermutations(local=local, focal=focal)


def check_jigsaw_shape(x: torch.Tensor, grid: int) -> None:
    """Raise ValueError unless ``x`` is ``(..., S, S)`` with S divisible by ``grid``."""
    if x.ndim < 2:
        raise ValueError(f"jigsaw needs a tensor of shape (..., H, W), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height != width:
        raise ValueError(
            f"jigsaw needs square images, got shape {tuple(x.shape)} (H={height}, W={width}); "
            "crop or pad the slices to a square size such as 224×224"
        )
    if height % grid:
        raise ValueError(
            f"jigsaw with a {grid}×{grid} grid needs a side divisible by {grid}, got shape {tuple(x.shape)}; "
            "crop or pad to a multiple of 16 such as 224"
        )


def permute_patches(x: torch.Tensor, grid: int, index: list[int]) -> torch.Tensor:
    """Cut the last two axes into a ``grid``×``grid`` grid and move patches by ``index``.

    Output patch k (row-major) is input patch ``index[k]``. Patches are never rotated.
    """
    check_jigsaw_shape(x, grid)
    if sorted(index) != list(range(grid * grid)):
        raise ValueError(f"index must be a permutation of 0..{grid * grid - 1}, got {index}")
    *lead, height, width = x.shape
    patch_h, patch_w = height // grid, width // grid
    # (..., grid_row, patch_h, grid_col, patch_w) -> (..., grid_row * grid_col, patch_h, patch_w)
    tiles = x.reshape(*lead, grid, patch_h, grid, patch_w)
    lead_dims = list(range(len(lead)))
    n = len(lead)
    tiles = tiles.permute(*lead_dims, n, n + 2, n + 1, n + 3).reshape(*lead, grid * grid, patch_h, patch_w)
    source = torch.as_tensor(index, dtype=torch.long, device=x.device)
    tiles = tiles.index_select(n, source)
    tiles = tiles.reshape(*lead, grid, grid, patch_h, patch_w).permute(*lead_dims, n, n + 2, n + 1, n + 3)
    return tiles.reshape(*lead, height, width)


def inverse_index(index: list[int]) -> list[int]:
    """Return the index that undoes ``index``, so that ``inverse[index[k]] = k``."""
    inverse = [0] * len(index)
    for position, source in enumerate(index):
        inverse[source] = position
    return inverse


def shuffle_local(x: torch.Tensor, perms: HpcPermutations) -> torch.Tensor:
    """J2: the 2×2 jigsaw of the image (or of a probability map) with π = ``perms.local``."""
    return permute_patches(x, 2, perms.local_index())


def restore_local(y: torch.Tensor, perms: HpcPermutations) -> torch.Tensor:
    """J2⁻¹: move the 2×2 patches back, so that ``restore_local(shuffle_local(x)) == x``."""
    return permute_patches(y, 2, inverse_index(perms.local_index()))


def shuffle_focal(x_local: torch.Tensor, perms: HpcPermutations) -> torch.Tensor:
    """J4: shuffle the four sub-patches inside each quadrant of the (already shuffled) local view."""
    check_jigsaw_shape(x_local, 4)
    return permute_patches(x_local, 4, perms.focal_index())


def restore_focal(y: torch.Tensor, perms: HpcPermutations) -> torch.Tensor:
    """J4⁻¹: undo only the within-quadrant shuffles; follow with :func:`restore_local`."""
    check_jigsaw_shape(y, 4)
    return permute_patches(y, 4, inverse_index(perms.focal_index()))


def make_jigsaw_views(x: torch.Tensor, perms: HpcPermutations) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the local view J2(x) and the focal view J4(J2(x))."""
    check_jigsaw_shape(x, 4)
    local = shuffle_local(x, perms)
    return local, shuffle_focal(local, perms)


def restore_focal_view(y_focal: torch.Tensor, perms: HpcPermutations) -> torch.Tensor:
    """J2⁻¹(J4⁻¹(y)): align the output of the focal view with the original image."""
    return restore_local(restore_focal(y_focal, perms), perms)


def add_noise(
    image: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.1,
    amplitude: float = NOISE_AMPLITUDE,
) -> torch.Tensor:
    """Add U(−amplitude, amplitude) noise to the whole batch if either of two Bernoulli draws is 1.

    Two independent Bernoulli(``probability``) draws decide, so the noise comes with
    probability 1 − (1 − p)², 0.19 for p = 0.1. The noise is drawn per pixel on the CPU and
    copied to the image's device. Without noise the input tensor itself is returned.
    """
    _check_cpu_generator(generator)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"noise probability must lie in [0, 1], got {probability}")
    draws = torch.rand(2, generator=generator)
    if not bool((draws < probability).any()):
        return image
    noise = (torch.rand(image.shape, generator=generator) * 2.0 - 1.0) * amplitude
    return image + noise.to(device=image.device, dtype=image.dtype)


def perturb_intensity(
    image: torch.Tensor,
    generator: torch.Generator,
    brightness_limit: float = 0.7,
    contrast_limit: float = 0.7,
) -> torch.Tensor:
    """Apply a random brightness and contrast change to each image of ``(B, C, H, W)``.

    Per image, the values are mapped linearly from [min, max] to [0, 255]. They are then
    multiplied by b ~ U(1 − brightness_limit, 1 + brightness_limit) and clipped to [0, 255].
    Next each value v becomes v + (v − 127.5)·c with c ~ U(−contrast_limit, contrast_limit)
    and is clipped again, and the result is mapped back to [min, max]. A constant image has
    no range to map, so it is returned unchanged.
    """
    _check_cpu_generator(generator)
    if image.ndim != 4:
        raise ValueError(f"perturb_intensity needs (B, C, H, W), got shape {tuple(image.shape)}")
    batch = image.shape[0]
    brightness = 1.0 + (torch.rand(batch, generator=generator) * 2.0 - 1.0) * brightness_limit
    contrast = (torch.rand(batch, generator=generator) * 2.0 - 1.0) * contrast_limit
    brightness = brightness.to(device=image.device, dtype=image.dtype).view(batch, 1, 1, 1)
    contrast = contrast.to(device=image.device, dtype=image.dtype).view(batch, 1, 1, 1)

    flat = image.reshape(batch, -1)
    low = flat.amin(dim=1).view(batch, 1, 1, 1)
    value_range = flat.amax(dim=1).view(batch, 1, 1, 1) - low
    # A constant image would divide by zero. Any positive divisor maps it to 0, and the map
    # back multiplies by its zero range, so the image comes back unchanged.
    safe_range = torch.where(value_range > 0, value_range, torch.ones_like(value_range))

    scaled = (image - low) / safe_range * 255.0
    scaled = (scaled * brightness).clamp(0.0, 255.0)
    scaled = (scaled + (scaled - 127.5) * contrast).clamp(0.0, 255.0)
    return scaled / 255.0 * value_range + low
