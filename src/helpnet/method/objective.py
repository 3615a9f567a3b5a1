"""The HELPNet training objective: views, forward passes and all loss terms of one step.

Ablations (each switch of :class:`ObjectiveSettings`):

- ``hpc=True``: noise on the batch (see :func:`helpnet.method.hpc.add_noise`), then three
  views, the intensity-perturbed global view x_S1, the 2×2 jigsaw x_S2 and the nested 4×4
  jigsaw x_S4. Terms: ``pce_global``, ``pce_local``, ``pce_focal`` (scribble loss of each
  restored view), ``cons_local`` and ``cons_focal`` (1 − cos against the global view).
- ``hpc=False``: one forward pass on the unperturbed image, so the pCE baseline (every
  switch off) is plain partial cross-entropy training. Its only scribble term keeps the
  name ``pce_global``. EGPL and SPR then work on this single view: the ensemble is that
  view and the pseudo-label is its own argmax.
- ``egpl=True``: the ensemble weights each view per pixel by its confidence (entropy
  softmax, temperature T) and adds ``pseudo_label``, the Dice loss of every view against
  argmax P_ens. With ``egpl=False`` and HPC on, SPR uses the plain mean of the three views.
- ``spr_connectivity=True``: ``connectivity``, 1 − cos of P_ens against its
  largest-connected-component target (``per_class_connectivity`` skips the foreground step).
- ``spr_edges=True``: ``edge``, the masked squared error of the foreground probability
  against the edge map, times ``edge_scale`` (HELPNet's 1/10) and ``w_edge``.

Every value in the returned dict is the term's contribution to the total, weight included,
so the values sum to the total loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from helpnet.method.egpl import (
    DEFAULT_TEMPERATURE,
    entropy_view_weights,
    pseudo_label,
    pseudo_label_loss,
    weighted_ensemble,
)
from helpnet.method.hpc import (
    NOISE_AMPLITUDE,
    add_noise,
    check_jigsaw_shape,
    draw_hpc_permutations,
    make_jigsaw_views,
    perturb_intensity,
    restore_focal_view,
    restore_local,
)
from helpnet.method.losses import cosine_loss, partial_cross_entropy
from helpnet.method.spr import connectivity_loss, edge_loss
from helpnet.model.norm import per_view_batch_norm

logger = logging.getLogger(__name__)


@dataclass
class ObjectiveSettings:
    """Switches, loss weights and perturbation settings of the HELPNet objective.

    The defaults are those of HELPNet's released code after its last loss change
    (``cons_focal`` 0.1 and the edge loss divided by 10).
    """

    hpc: bool = True
    egpl: bool = True
    spr_connectivity: bool = True
    spr_edges: bool = True

    w_pce_global: float = 1.0
    w_pce_local: float = 1.0
    w_pce_focal: float = 0.2
    w_cons_local: float = 0.3
    w_cons_focal: float = 0.1
    w_pseudo_label: float = 0.1
    w_connectivity: float = 0.3
    w_edge: float = 0.3
    # Extra factor on the edge loss (HELPNet divides it by 10); effective weight w_edge · edge_scale.
    edge_scale: float = 0.1

    temperature: float = DEFAULT_TEMPERATURE
    edge_threshold: float = 0.5
    # Probability of each of the two Bernoulli draws that decide on noise (noise with 1 − (1 − p)²).
    noise_probability: float = 0.1
    noise_amplitude: float = NOISE_AMPLITUDE
    brightness_limit: float = 0.7
    contrast_limit: float = 0.7

    pce_mean_over: Literal["all_pixels", "annotated"] = "all_pixels"
    upstream_broadcast: bool = False
    per_class_connectivity: bool = False
    # One forward over the stacked views with per-view BatchNorm statistics instead of three.
    # It needs a network whose BatchNorm layers are ViewBatchNorm2d (both helpnet UNets).
    # NOTE: on an idle 2-core CPU it was within 2 % of three forwards and took up to 1 GB
    # more memory (BENCHMARKS.md), so it is off by default. GPUs were not measured.
    batched_views: bool = False

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.noise_probability <= 1.0:
            raise ValueError(f"noise_probability must lie in [0, 1], got {self.noise_probability}")
        if self.pce_mean_over not in ("all_pixels", "annotated"):
            raise ValueError(f"pce_mean_over must be 'all_pixels' or 'annotated', got {self.pce_mean_over!r}")

    def term_names(self) -> list[str]:
        """The names of the loss terms this configuration returns, in order."""
        names = ["pce_global"]
        if self.hpc:
            names += ["pce_local", "pce_focal", "cons_local", "cons_focal"]
        if self.egpl:
            names.append("pseudo_label")
        if self.spr_connectivity:
            names.append("connectivity")
        if self.spr_edges:
            names.append("edge")
        return names


class HelpnetObjective:
    """Compute the HELPNet loss of one batch, running the network on every view.

    The call makes no ``.item()`` call and copies nothing from the device, except the hard
    mask that the connectivity term labels on the host. Losses, softmax and entropy run in
    float32 even under autocast. The order of random draws from the generator is: the
    permutations, the noise decision (and noise), then brightness and contrast factors.
    """

    def __init__(self, settings: ObjectiveSettings, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.settings = settings
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __call__(
        self,
        network: nn.Module,
        image: torch.Tensor,
        scribble: torch.Tensor,
        edge: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total loss and the detached weighted terms for a batch.

        ``image`` is ``(B, 1, H, W)`` float, ``scribble`` ``(B, H, W)`` int64 with
        ``ignore_index`` for unannotated pixels, ``edge`` ``(B, H, W)`` in [0, 1] (required
        only when ``spr_edges`` is on). ``generator`` is a seeded CPU generator.
        """
        settings = self.settings
        self._check_inputs(image, scribble, edge)

        views = self._forward_views(network, image, generator)
        terms: dict[str, torch.Tensor] = {}

        def pce(view: torch.Tensor) -> torch.Tensor:
            return partial_cross_entropy(view, scribble, self.ignore_index, settings.pce_mean_over)

        terms["pce_global"] = settings.w_pce_global * pce(views[0])
        if settings.hpc:
            y_global, y_local, y_focal = views
            terms["pce_local"] = settings.w_pce_local * pce(y_local)
            terms["pce_focal"] = settings.w_pce_focal * pce(y_focal)
            terms["cons_local"] = settings.w_cons_local * cosine_loss(y_local, y_global)
            terms["cons_focal"] = settings.w_cons_focal * cosine_loss(y_focal, y_global)

        if settings.egpl or settings.spr_connectivity or settings.spr_edges:
            ensemble = self._ensemble(views)
            if settings.egpl:
                label = pseudo_label(ensemble)
                terms["pseudo_label"] = settings.w_pseudo_label * pseudo_label_loss(views, label)
            if settings.spr_connectivity:
                terms["connectivity"] = settings.w_connectivity * connectivity_loss(
                    ensemble, per_class_only=settings.per_class_connectivity
                )
            if settings.spr_edges:
                assert edge is not None  # checked in _check_inputs
                terms["edge"] = (
                    settings.w_edge * settings.edge_scale * edge_loss(ensemble, edge, settings.edge_threshold)
                )

        total = torch.stack(list(terms.values())).sum()
        return total, {name: value.detach() for name, value in terms.items()}

    def _check_inputs(self, image: torch.Tensor, scribble: torch.Tensor, edge: torch.Tensor | None) -> None:
        if image.ndim != 4:
            raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
        expected = (image.shape[0], *image.shape[2:])
        if tuple(scribble.shape) != expected:
            raise ValueError(
                f"scribble shape {tuple(scribble.shape)} does not match image {tuple(image.shape)}; expected {expected}"
            )
        if self.settings.spr_edges:
            if edge is None:
                raise ValueError("spr_edges is on but no edge map was given; pass edges or set spr_edges=False")
            if not edge.is_floating_point():
                raise ValueError(
                    f"edge map has dtype {edge.dtype}; pass floats in [0, 1] (stored 0..255 values divided by 255)"
                )
            if tuple(edge.shape) != expected:
                raise ValueError(
                    f"edge shape {tuple(edge.shape)} does not match image {tuple(image.shape)}; expected {expected}"
                )
        if self.settings.hpc:
            check_jigsaw_shape(image, 4)

    def _forward_views(
        self, network: nn.Module, image: torch.Tensor, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Run the network on the views and return the restored probabilities in float32."""
        settings = self.settings
        if not settings.hpc:
            return [self._check_output(network(image), image.shape[0]).float()]

        perms = draw_hpc_permutations(generator)
        x = add_noise(image, generator, settings.noise_probability, settings.noise_amplitude)
        x_global = perturb_intensity(x, generator, settings.brightness_limit, settings.contrast_limit)
        x_local, x_focal = make_jigsaw_views(x, perms)

        if settings.batched_views:
            with per_view_batch_norm(network, 3):
                stacked = self._check_output(network(torch.cat([x_global, x_local, x_focal])), 3 * image.shape[0])
            y_global, y_local, y_focal = stacked.chunk(3, dim=0)
        else:
            y_global = self._check_output(network(x_global), image.shape[0])
            y_local = self._check_output(network(x_local), image.shape[0])
            y_focal = self._check_output(network(x_focal), image.shape[0])

        return [
            y_global.float(),
            restore_local(y_local, perms).float(),
            restore_focal_view(y_focal, perms).float(),
        ]

    def _check_output(self, probs: torch.Tensor, batch: int) -> torch.Tensor:
        if probs.ndim != 4 or probs.shape[0] != batch or probs.shape[1] != self.num_classes:
            raise ValueError(
                f"network output of shape {tuple(probs.shape)} is not ({batch}, {self.num_classes}, H, W); "
                f"build the network with num_classes={self.num_classes}"
            )
        return probs

    def _ensemble(self, views: list[torch.Tensor]) -> torch.Tensor:
        if len(views) == 1:
            return views[0]
        if self.settings.egpl:
            weights = entropy_view_weights(views, self.settings.temperature)
            return weighted_ensemble(views, weights, self.settings.upstream_broadcast)
        return torch.stack(views).mean(dim=0)
