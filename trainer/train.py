"""One epoch of training, the optimiser and schedule, and what a resumable run keeps."""

from __future__ import annotations

import contextlib
import csv
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from teran.data.pairs import PairBatch
from teran.model import Teran
from trainer.task import TeranTask


@dataclass
class TrainState:
    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimiser steps taken."""
    best_rsum: float = float("-inf")
    train_seconds: float = 0.0
    """Wall-clock seconds spent training (validation excluded): the x axis of learning curves."""


class TrainClock:
    """Counts training time only: `running()` around steps, `paused()` around validations."""

    def __init__(self, seconds: float = 0.0) -> None:
        self._total = seconds
        self._since: float | None = None

    def seconds(self) -> float:
        extra = time.perf_counter() - self._since if self._since is not None else 0.0
        return self._total + extra

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._since = time.perf_counter()
        try:
            yield
        finally:
            self._total = self.seconds()
            self._since = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        running = self._since is not None
        if running:
            self._total = self.seconds()
            self._since = None
        try:
            yield
        finally:
            if running:
                self._since = time.perf_counter()


def trainable_parameters(model: Teran, freeze_backbone: bool) -> list[nn.Parameter]:
    for p in model.textual.backbone.parameters():
        p.requires_grad_(not freeze_backbone)
    return [p for p in model.parameters() if p.requires_grad]


LR_SCHEDULES = ("step", "cosine")


def build_schedule(
    optimizer: Optimizer,
    steps_per_epoch: int,
    step_epochs: int,
    gamma: float,
    warmup_steps: int,
    kind: str = "step",
    total_steps: int = 0,
) -> LambdaLR:
    """Linear warm-up over `warmup_steps` (0: none), then either x`gamma` every `step_epochs`
    epochs (the paper's StepLR) or a cosine decay to 0 at `total_steps`; stepped once per
    optimiser step."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if kind == "cosine":
            done = min(1.0, max(0, step - warmup_steps) / max(1, total_steps - warmup_steps))
            return warm * 0.5 * (1.0 + math.cos(math.pi * done))
        return warm * gamma ** ((step // max(1, steps_per_epoch)) // max(1, step_epochs))

    return LambdaLR(optimizer, factor)


def precompute_backbone(
    model: Teran,
    token_ids: list[Tensor],
    pad_id: int,
    batch_size: int = 256,
    progress: bool = False,
) -> list[Tensor]:
    """Outputs of a frozen backbone for every caption, computed once for the whole run."""
    device = next(model.parameters()).device
    out: list[Tensor] = []
    backbone = model.textual
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        for start in tqdm(
            range(0, len(token_ids), batch_size), disable=not progress, desc="text backbone"
        ):
            chunk = token_ids[start : start + batch_size]
            lengths = torch.tensor([len(t) for t in chunk])
            ids = torch.full((len(chunk), int(lengths.max())), pad_id, dtype=torch.long)
            for row, t in enumerate(chunk):
                ids[row, : len(t)] = t
            mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
            hidden = backbone.backbone_features(ids.to(device), mask.to(device)).cpu()
            out.extend(hidden[row, : int(n)].clone() for row, n in enumerate(lengths))
    backbone.train(was_training)
    return out


def pad_hidden(hidden: list[Tensor], indices: Tensor) -> Tensor:
    rows = [hidden[int(k)] for k in indices]
    width = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros((len(rows), width, rows[0].shape[1]))
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def batch_to(batch: PairBatch, device: torch.device) -> PairBatch:
    return PairBatch(**{k: v.to(device) for k, v in vars(batch).items()})


def train_one_epoch(
    task: nn.Module,
    loader: Iterable[PairBatch],
    optimizer: Optimizer,
    schedule: LambdaLR,
    state: TrainState,
    grad_clip: float,
    text_hidden: list[Tensor] | None,
    log: csv.DictWriter[str] | None,
    device: torch.device,
    max_steps: int | None = None,
    progress: bool = True,
    hardest_after: int = 0,
    after_step: Callable[[TrainState], bool] | None = None,
) -> float:
    """Steps over `loader` once; returns the mean batch loss.

    Before step `hardest_after` the loss sums over every negative (if the task uses hardest
    negatives at all); `after_step` runs after each optimiser step and stops the epoch early
    by returning True (a time budget, a validation in the middle of an epoch).
    """
    task.train()
    inner = task.module if isinstance(task, nn.parallel.DistributedDataParallel) else task
    assert isinstance(inner, TeranTask)
    hardest = inner.max_violation
    if text_hidden is not None:  # a frozen backbone stays in eval mode (no dropout)
        inner.model.textual.backbone.eval()
    losses: list[float] = []
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    bar = tqdm(loader, total=total, disable=not progress, desc=f"epoch {state.epoch + 1}")
    for batch in bar:
        if max_steps is not None and len(losses) >= max_steps:
            break
        inner.max_violation = hardest and state.step >= hardest_after
        batch = batch_to(batch, device)
        hidden = None
        if text_hidden is not None:
            hidden = pad_hidden(text_hidden, batch.caption_index.cpu()).to(device)
        out = task(batch, hidden)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(inner.model.parameters(), grad_clip)
        optimizer.step()
        schedule.step()
        state.step += 1
        loss = float(out["batch_loss"])
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}")
        if log is not None:
            log.writerow(
                {
                    "step": state.step,
                    "epoch": state.epoch + 1,
                    "loss": f"{loss:.6f}",
                    "lr": f"{schedule.get_last_lr()[0]:.3e}",
                }
            )
        if after_step is not None and after_step(state):
            break
    inner.max_violation = hardest
    return float(np.mean(losses)) if losses else float("nan")


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(
    path: Path, state: TrainState, optimizer: Optimizer, schedule: LambdaLR
) -> None:
    """Everything beyond the weights that an exact resume needs; written atomically."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "state": asdict(state),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": rng_state(),
        },
        tmp,
    )
    tmp.replace(path)


def load_train_state(path: Path, optimizer: Optimizer, schedule: LambdaLR) -> TrainState:
    data = torch.load(path, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(data["optimizer"])
    schedule.load_state_dict(data["schedule"])
    set_rng_state(data["rng"])
    return TrainState(**data["state"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
