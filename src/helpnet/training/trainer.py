"""The training loop of one fold: resumable, signal-safe, logged to CSV and TensorBoard."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from helpnet.data.cases import IGNORE_INDEX
from helpnet.io import atomic_path, write_json
from helpnet.method.losses import class_argmax
from helpnet.method.objective import HelpnetObjective
from helpnet.model import build_network
from helpnet.training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from helpnet.training.data import SliceStore, StepBatches, center_crop_or_pad, label_fill_value, zscore_slice
from helpnet.training.preprocess import load_preprocessed
from helpnet.training.runtime import autocast_context, configure_determinism, resolve_device, resolve_precision
from helpnet.training.settings import TrainingSettings

logger = logging.getLogger(__name__)

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM


class TrainingInterrupted(SystemExit):
    """Raised after SIGTERM once the resumable checkpoint is on disk."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""


@dataclass
class FoldPlan:
    """Cases, class count, spacing and step budget of one fold."""

    train_cases: list[str]
    val_cases: list[str]
    num_classes: int
    target_spacing: float
    steps_per_epoch: int
    total_steps: int
    lr_step_steps: int


def read_fold(splits_path: str | Path, fold: int) -> tuple[list[str], list[str]]:
    """Return (train case ids, validation case ids) of ``fold`` in ``splits.json``."""
    splits = json.loads(Path(splits_path).read_text())
    for entry in splits["folds"]:
        if int(entry["fold"]) == fold:
            return list(entry["train"]), list(entry.get("val", []))
    available = [entry["fold"] for entry in splits["folds"]]
    raise ValueError(f"{splits_path}: fold {fold} not found; available folds: {available}")


def settings_digest(settings: TrainingSettings, plan: FoldPlan) -> str:
    """Return a digest of everything that changes the training trajectory (used to refuse a stale resume)."""
    payload = json.dumps({"settings": settings.to_dict(), "train": plan.train_cases, "val": plan.val_cases,
                          "target_spacing": plan.target_spacing}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def step_generator(seed: int, step: int) -> torch.Generator:
    """Return the CPU generator for the HPC randomness of ``step``, a pure function of (seed, step)."""
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, 3, step]).generate_state(1)[0]))
    return generator


@torch.no_grad()
def validation_dice(model: torch.nn.Module, cases: dict[str, dict[str, np.ndarray]], num_classes: int,
                    patch_size: int, device: torch.device, precision: str, channels_last: bool) -> float:
    """Return the mean over cases of the mean 3D Dice of classes 1..K inside the centred window.

    A class absent from both prediction and label scores 1, as in the evaluation stage.
    """
    model.eval()
    scores = []
    for data in cases.values():
        windows = np.stack([zscore_slice(center_crop_or_pad(s, patch_size, 0.0)) for s in data["image"]])[:, None]
        labels = np.stack([center_crop_or_pad(s, patch_size, 0) for s in data["label"]])
        predictions = []
        for start in range(0, len(windows), 16):
            batch = torch.from_numpy(windows[start:start + 16]).to(device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, precision):
                probs = model(batch)
            predictions.append(class_argmax(probs.float()).cpu().numpy())
        prediction = np.concatenate(predictions)
        per_class = []
        for c in range(1, num_classes):
            p, r = prediction == c, labels == c
            denominator = p.sum() + r.sum()
            per_class.append(1.0 if denominator == 0 else 2.0 * (p & r).sum() / denominator)
        scores.append(float(np.mean(per_class)))
    model.train()
    return float(np.mean(scores))


class LogWriter:
    """Rows of ``training_log.csv``, kept in memory and rewritten atomically, plus TensorBoard."""

    def __init__(self, path: Path, term_names: list[str], rows: list[dict[str, Any]], tensorboard_dir: Path | None):
        self.path = path
        self.columns = ["step", "epoch", "lr", "loss", *term_names, "val_dice", "time_s"]
        self.rows = rows
        self.tensorboard = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                logger.warning("tensorboard is not installed; writing only %s", path)
            else:
                self.tensorboard = SummaryWriter(str(tensorboard_dir))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("step", "epoch", "time_s") and value not in ("", None):
                    self.tensorboard.add_scalar(key, float(value), int(row["step"]))

    def flush(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, restval="", extrasaction="ignore",
                                        lineterminator="\n")
                writer.writeheader()
                writer.writerows(self.rows)
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        self.flush()
        if self.tensorboard is not None:
            self.tensorboard.close()


def plan_fold(train_cases: list[str], val_cases: list[str], dataset_info_path: Path,
              settings: TrainingSettings, store: SliceStore) -> FoldPlan:
    """Derive the step budget and LR schedule of one fold from its training slices and settings."""
    info = json.loads(Path(dataset_info_path).read_text())
    steps_per_epoch = len(store) // settings.batch_size
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    return FoldPlan(
        train_cases=train_cases,
        val_cases=val_cases,
        num_classes=int(info["num_classes"]),
        target_spacing=float(store.target_spacing),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        lr_step_steps=max(1, round(settings.lr_step_fraction * total_steps)),
    )


def train_fold(preprocessed_dir: str | Path, splits_path: str | Path, fold: int, dataset_info_path: str | Path,
               settings: TrainingSettings, output_dir: str | Path) -> dict[str, Any]:
    """Train one fold and write ``checkpoint_{final,best}.pt`` and ``training_log.csv`` into ``output_dir``.

    A resumable ``resume/checkpoint_latest.pt`` is written every ``checkpoint_every`` steps and on
    SIGTERM; a restarted call with the same settings continues from it.
    """
    preprocessed_dir, output_dir = Path(preprocessed_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_cases, val_cases = read_fold(splits_path, fold)
    if not train_cases:
        raise ValueError(f"{splits_path}: fold {fold} has no training cases")
    need_edges = settings.objective.spr_edges
    store = SliceStore.from_cases(preprocessed_dir, train_cases, need_edges)
    plan = plan_fold(train_cases, val_cases, Path(dataset_info_path), settings, store)
    val_data = {case: load_preprocessed(preprocessed_dir / f"{case}.npz") for case in val_cases}
    val_data = {case: data for case, data in val_data.items() if "label" in data}

    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    configure_determinism(settings.deterministic)
    torch.manual_seed(settings.seed)
    model = build_network(settings.network, num_classes=plan.num_classes).to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=plan.lr_step_steps, gamma=settings.lr_gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
    objective = HelpnetObjective(settings.objective, num_classes=plan.num_classes, ignore_index=IGNORE_INDEX)
    step_model = torch.compile(model) if settings.compile else model

    digest = settings_digest(settings, plan)
    resume_path = output_dir / "resume" / "checkpoint_latest.pt"
    start_step, best_dice, best_step, elapsed_before, log_rows = 0, -math.inf, -1, 0.0, []
    stale_best = output_dir / ".best_model.pt"
    if stale_best.exists():
        stale_best.unlink()
    if resume_path.exists():
        state = load_checkpoint(resume_path, device)
        if state["meta"].get("digest") == digest:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            restore_rng_state(state["rng"])
            start_step, best_dice, best_step = state["step"], state["best_dice"], state["best_step"]
            elapsed_before, log_rows = state["elapsed_s"], state["log_rows"]
            if "best_model" in state:
                torch.save(state["best_model"], output_dir / ".best_model.pt")
            logger.info("resuming fold %d from step %d (%s)", fold, start_step, resume_path)
        else:
            logger.warning("ignoring %s: it was written with other settings or cases; starting from step 0", resume_path)

    meta = {
        "network": settings.network, "num_classes": plan.num_classes, "patch_size": settings.patch_size,
        "target_spacing": plan.target_spacing, "precision": precision, "channels_last": settings.channels_last,
        "fold": fold, "digest": digest, "settings": settings.to_dict(), "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps, "lr_step_steps": plan.lr_step_steps, "device": str(device),
    }
    logger.info(
        "fold %d: %d training slices from %d cases, %d validation cases, %d steps (%d per epoch), LR drop at step %d, "
        "%s on %s", fold, len(store), len(train_cases), len(val_data), plan.total_steps, plan.steps_per_epoch,
        plan.lr_step_steps, precision, device,
    )

    term_names = settings.objective.term_names()
    log = LogWriter(output_dir / "training_log.csv", term_names, log_rows, output_dir / "tensorboard")
    dataset = StepBatches(store, settings.batch_size, settings.seed, start_step, plan.total_steps, settings.patch_size,
                          label_fill_value(settings.label_fill), settings.augment_flip_rot90, settings.augment_rotate)
    workers = settings.num_workers
    if workers == "auto":
        workers = 4 if device.type == "cuda" else 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=int(workers),
                                         pin_memory=device.type == "cuda", persistent_workers=False)

    terminate = {"requested": False}

    def request_stop(signum, _frame):
        logger.warning("received signal %d: saving a resumable checkpoint after this step", signum)
        terminate["requested"] = True

    previous_handler = signal.signal(signal.SIGTERM, request_stop)

    def save_resume(step: int) -> None:
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "step": step, "best_dice": best_dice,
            "best_step": best_step, "elapsed_s": elapsed_before + time.perf_counter() - started,
            "log_rows": log.rows, "meta": meta,
        }
        best_file = output_dir / ".best_model.pt"
        if best_file.exists():
            state["best_model"] = torch.load(best_file, map_location="cpu", weights_only=True)
        save_checkpoint(resume_path, state)

    started = time.perf_counter()
    sums = {name: torch.zeros((), device=device) for name in ["loss", *term_names]}
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_terms = torch.zeros(len(term_names) + 1, dtype=torch.bool, device=device)
    count = 0
    step = start_step
    model.train()
    progress = tqdm(total=plan.total_steps, initial=start_step, desc=f"train fold {fold}", unit="step", mininterval=5)
    try:
        for batch in loader:
            step = int(batch["step"])
            image = batch["image"].to(device, non_blocking=True)
            if settings.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            scribble = batch["scribble"].to(device, non_blocking=True)
            edge = batch["edge"].to(device, non_blocking=True) if "edge" in batch else None
            with autocast_context(device, precision):
                total, terms = objective(step_model, image, scribble, edge, step_generator(settings.seed, step))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            values = torch.stack([total.detach().float(), *[terms[name].float() for name in term_names]])
            not_finite = ~torch.isfinite(values)
            first_bad_step = torch.where((first_bad_step < 0) & not_finite.any(), torch.tensor(step, device=device), first_bad_step)
            bad_terms |= not_finite & (first_bad_step == step)
            for name, value in zip(["loss", *term_names], values):
                sums[name] += value
            count += 1
            progress.update(1)
            done = step + 1
            end_of_epoch = done % plan.steps_per_epoch == 0
            if done % settings.log_every == 0 or done == plan.total_steps or end_of_epoch:
                if int(first_bad_step) >= 0:
                    names = [n for n, bad in zip(["loss", *term_names], bad_terms.tolist()) if bad]
                    raise NonFiniteLossError(
                        f"non-finite loss at step {int(first_bad_step)} in term(s) {names}; lower training.lr, "
                        "check the inputs of that term, or try training.precision: fp32"
                    )
                row = {"step": done, "epoch": done / plan.steps_per_epoch, "lr": scheduler.get_last_lr()[0],
                       "time_s": round(elapsed_before + time.perf_counter() - started, 3)}
                row.update({name: float(value) / count for name, value in sums.items()})
                epoch = done // plan.steps_per_epoch
                if val_data and end_of_epoch and epoch % settings.validate_every == 0 or (val_data and done == plan.total_steps):
                    dice = validation_dice(model, val_data, plan.num_classes, settings.patch_size, device, precision,
                                           settings.channels_last)
                    row["val_dice"] = dice
                    if dice > best_dice:
                        best_dice, best_step = dice, done
                        torch.save(model.state_dict(), output_dir / ".best_model.pt")
                log.add(row)
                log.flush()
                progress.set_postfix(loss=f"{row['loss']:.4f}")
                for value in sums.values():
                    value.zero_()
                count = 0
            if done % settings.checkpoint_every == 0 or terminate["requested"]:
                save_resume(done)
            if terminate["requested"]:
                raise TrainingInterrupted(TERMINATED_EXIT_CODE)
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous_handler)
        log.close()

    final_state = {"model": model.state_dict(), "meta": {**meta, "step": plan.total_steps}}
    save_checkpoint(output_dir / "checkpoint_final.pt", final_state)
    best_file = output_dir / ".best_model.pt"
    if best_file.exists():
        best_state = {"model": torch.load(best_file, map_location="cpu", weights_only=True),
                      "meta": {**meta, "step": best_step, "val_dice": best_dice}}
        best_file.unlink()
    else:
        best_state = {"model": final_state["model"], "meta": {**meta, "step": plan.total_steps, "val_dice": None,
                                                               "note": "no labelled validation cases: best = final"}}
    save_checkpoint(output_dir / "checkpoint_best.pt", best_state)
    summary = {k: v for k, v in meta.items() if k != "settings"}
    summary.update({"best_step": best_step, "best_val_dice": None if best_dice == -math.inf else best_dice,
                    "train_cases": plan.train_cases, "val_cases": list(val_data),
                    "schedule_note": (f"{settings.epochs} epochs x {plan.steps_per_epoch} steps, LR x{settings.lr_gamma} "
                                      f"after {settings.lr_step_fraction:.0%} of the steps (upstream: 1000 epochs, drop at 500)")})
    write_json(output_dir / "training_summary.json", summary)
    if resume_path.exists():
        resume_path.unlink()
    with contextlib.suppress(OSError):  # a folder that still contains other files stays
        resume_path.parent.rmdir()
    return summary
