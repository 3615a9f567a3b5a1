"""Training settings: one dataclass per concern, built from the workflow's ``training:`` config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from helpnet.method.objective import ObjectiveSettings

EXPERIMENT_SWITCHES = ("hpc", "egpl", "spr_connectivity", "spr_edges")


@dataclass
class TrainingSettings:
    """Everything ``helpnet train`` needs besides the data; defaults follow the upstream recipe."""

    network: str = "unet_upstream"
    """``unet_upstream`` (64-1024 channels) or ``unet_light`` (16-256 channels)."""
    patch_size: int = 224
    """Side of the square training crop and inference window, in pixels (divisible by 16)."""
    batch_size: int = 4
    epochs: int = 1000
    """Training length. One epoch is one pass over the training slices (``drop_last``)."""
    max_steps: int | None = None
    """Optional hard cap on optimizer steps, for smoke tests; the LR step is scaled to it."""
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_step_fraction: float = 0.5
    """The LR drops by ``lr_gamma`` after this fraction of the epochs (upstream: 500 of 1000)."""
    lr_gamma: float = 0.1
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    """``auto`` (bf16 where the hardware supports it, else fp32), ``fp32``, ``bf16`` or ``fp16``."""
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    num_workers: int | str = "auto"
    """DataLoader worker processes; ``auto`` is 0 on CPU and 4 on GPU."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints (also written on SIGTERM)."""
    log_every: int = 20
    validate_every: int = 1
    """Epochs between validations on the fold's labelled validation cases."""
    label_fill: str = "ignore"
    """Fill for scribble pixels created by rotation and padding: ``ignore`` or ``background`` (upstream)."""
    augment_flip_rot90: bool = True
    augment_rotate: bool = True
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)

    @classmethod
    def from_dict(cls, values: dict[str, Any], experiment: dict[str, Any] | None = None) -> "TrainingSettings":
        """Build settings from the config's ``training:`` mapping and an experiment's switches.

        Unknown keys raise ValueError so a typo cannot silently fall back to a default.
        """
        values = dict(values)
        objective_values = dict(values.pop("loss", {}) or {})
        for key, value in (experiment or {}).items():
            if key not in EXPERIMENT_SWITCHES:
                raise ValueError(
                    f"unknown experiment switch {key!r}; valid switches: {', '.join(EXPERIMENT_SWITCHES)}"
                )
            objective_values[key] = bool(value)
        known = {f.name for f in dataclasses.fields(cls)} - {"objective"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; valid keys: {sorted(known)} and 'loss'")
        objective_fields = {f.name for f in dataclasses.fields(ObjectiveSettings)}
        unknown = sorted(set(objective_values) - objective_fields)
        if unknown:
            raise ValueError(f"unknown loss setting(s) {unknown}; valid keys: {sorted(objective_fields)}")
        settings = cls(**values, objective=ObjectiveSettings(**objective_values))
        settings.validate()
        return settings

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "TrainingSettings":
        """Rebuild settings from :meth:`to_dict` output, as stored in every checkpoint's metadata."""
        values = dict(values)
        objective = ObjectiveSettings(**values.pop("objective"))
        return cls(**values, objective=objective)

    def validate(self) -> None:
        if self.patch_size % 16:
            raise ValueError(f"training.patch_size={self.patch_size} is not divisible by 16; use e.g. 224 or 128")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"training.precision={self.precision!r}; use auto, fp32, bf16 or fp16")
        if self.label_fill not in ("ignore", "background"):
            raise ValueError(f"training.label_fill={self.label_fill!r}; use ignore or background")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("training.batch_size and training.epochs must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
