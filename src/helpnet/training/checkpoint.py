"""Checkpoint files: atomic writes, resume state and inference loading."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpnet.io import atomic_path
from helpnet.model import build_network

logger = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` to a temporary file and rename it onto ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by this package.

    Checkpoints hold NumPy RNG state and plain Python values besides tensors, so they are loaded
    with ``weights_only=False``: only load files this workflow wrote.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found; run the train stage for this fold first")
    return torch.load(path, map_location=device, weights_only=False)


def load_model_for_inference(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network recorded in a checkpoint, load its weights, and return it in eval mode.

    The returned metadata contains ``network``, ``num_classes``, ``patch_size``, ``target_spacing``,
    ``precision`` and ``channels_last``.
    """
    state = load_checkpoint(path, device)
    meta = state["meta"]
    model = build_network(meta["network"], num_classes=meta["num_classes"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    if meta.get("channels_last", True):
        model = model.to(memory_format=torch.channels_last)
    return model, meta
