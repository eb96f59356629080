"""The shared training loop: batches from the caches → family loss → optimizer/scheduler, with progress events at
every step and the caller's pause/cancel signals honoured between steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainer.api import ProgressCallback, ProgressEvent, TrainControl, TrainingCancelled
from trainer.caching import LatentCache, TextCache, make_batch
from trainer.checkpoint import TrainState
from trainer.config import TrainingConfig
from trainer.data import Sample, epoch_batches
from trainer.families.base import TrainFamily


class TrainingDiverged(RuntimeError):
    """The loss stopped being a number; the message says what to change."""


@dataclass
class LoopParts:
    family: TrainFamily
    config: TrainingConfig
    samples: list[Sample]
    latents: LatentCache
    text: TextCache | None  # None → encode captions every step (trained text encoder)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    noise_gen: torch.Generator
    ema: Any = None  # diffusers EMAModel over the trainable parameters (config.ema_decay), or None


class TrainingLoop:
    """Runs epochs over ``parts``, updating ``state`` (step counter, loss history) in place."""

    def __init__(self, parts: LoopParts, state: TrainState, *, total_steps: int, emit: ProgressCallback,
                 control: TrainControl, elapsed: Callable[[], float],
                 after_update: Callable[[int, int], None] | None = None) -> None:
        self.p = parts
        self.state = state
        self.total_steps = total_steps
        self.emit = emit
        self.control = control
        self.elapsed = elapsed  # seconds of training so far, earlier attempts included
        self._step_seconds: float | None = None  # EMA of pure step time (pauses excluded) for the ETA
        self._trainable = [p for g in parts.optimizer.param_groups for p in g["params"]]
        self._pending = 0  # batches whose gradients wait for the next optimizer step (accumulation)
        # after_update(epoch, batches in the epoch): called after each optimizer step, when no gradient is
        # pending — the only moments a mid-epoch checkpoint is exact.
        self.after_update = after_update

    def check_control(self) -> None:
        """Between steps: wait while paused, stop when cancelled (the last checkpoint stays as it is)."""
        self.control.pause_point()
        if self.control.cancelled():
            raise TrainingCancelled(f"training cancelled at step {self.state.global_step} of {self.total_steps}")

    def run_epoch(self, epoch: int, skip: int = 0) -> None:
        """Train ``epoch``; ``skip`` batches were trained before a mid-epoch checkpoint (the order is the same)."""
        p = self.p
        p.family.train_mode(True)
        batches = epoch_batches(p.samples, p.config, epoch)
        for i, slots in enumerate(batches):
            if i < skip:
                continue
            self.check_control()
            started = time.monotonic()
            batch = make_batch(slots, p.samples, p.latents, p.text, p.config)
            lr = p.scheduler.get_last_lr()[0]  # the rate this step used
            loss = self.step(batch, last=i == len(batches) - 1)
            took = time.monotonic() - started
            self._step_seconds = took if self._step_seconds is None else 0.9 * self._step_seconds + 0.1 * took
            self.state.global_step += 1
            self.state.epoch_step = i + 1
            self.state.losses.append(loss)
            self.emit(ProgressEvent(
                step=self.state.global_step, total_steps=self.total_steps, epoch=epoch,
                total_epochs=p.config.epochs, loss=loss, lr=lr,
                eta_seconds=self._step_seconds * (self.total_steps - self.state.global_step),
                elapsed_seconds=self.elapsed(), phase="training",
            ))
            if self._pending == 0 and self.after_update is not None:
                self.after_update(epoch, len(batches))

    def step(self, batch, last: bool = True) -> float:
        """Forward + backward of one batch; the optimizer steps every ``gradient_accumulation_steps`` batches
        and at the end of an epoch (``last``)."""
        p = self.p
        text = batch.text if batch.text is not None else p.family.encode_text(batch.captions)
        loss = p.family.loss(batch, text, p.noise_gen)
        value = loss.item()
        if not math.isfinite(value) and p.scaler is None:
            raise TrainingDiverged(
                f"the loss became {value} at step {self.state.global_step + 1}; lower the learning rate "
                f"(now {p.config.learning_rate:g}) or use mixed_precision='bf16' instead of fp16")
        scaled = loss / p.config.gradient_accumulation_steps
        if p.scaler is not None:
            p.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        self._pending += 1
        if self._pending >= p.config.gradient_accumulation_steps or last:
            self._update()
        return value

    def _update(self) -> None:
        p = self.p
        clip = p.config.max_grad_norm
        if p.scaler is not None:
            p.scaler.unscale_(p.optimizer)
            if clip:
                torch.nn.utils.clip_grad_norm_(self._trainable, clip)
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(self._trainable, clip)
            p.optimizer.step()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        self._pending = 0
        if p.ema is not None:
            p.ema.step(self._trainable)
