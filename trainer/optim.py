"""Optimizer and learning-rate schedule from the config; optional optimizers fail early with a clear message."""

from __future__ import annotations

import importlib.util
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from trainer.config import TrainingConfig


class OptimizerUnavailable(RuntimeError):
    """The configured optimizer needs a package that is not installed on this worker."""


_PACKAGES = {"adamw8bit": "bitsandbytes", "prodigy": "prodigyopt"}


def check_optimizer_available(config: TrainingConfig) -> None:
    """Raise :class:`OptimizerUnavailable` before any model is loaded when the optimizer cannot be built."""
    package = _PACKAGES.get(config.optimizer)
    if package and importlib.util.find_spec(package) is None:
        raise OptimizerUnavailable(
            f"optimizer {config.optimizer!r} needs the {package!r} package, which is not installed on this worker; "
            f"install it (pip install 'atelier[optim]') or choose optimizer='adamw'")


def build_optimizer(param_groups: list[dict], config: TrainingConfig) -> torch.optim.Optimizer:
    check_optimizer_available(config)
    groups = [{k: v for k, v in g.items() if k != "name"} for g in param_groups]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    from prodigyopt import Prodigy

    # Prodigy's documented diffusion settings: safeguard warmup with warmup, bias correction on.
    return Prodigy(groups, lr=config.learning_rate, weight_decay=config.weight_decay,
                   safeguard_warmup=config.lr_warmup_steps > 0, use_bias_correction=True)


def lr_lambda(config: TrainingConfig, total_steps: int):
    """Multiplier of the base lr at a step: linear warmup, then constant / cosine / cosine with hard restarts.

    Same curves as ``diffusers.optimization.get_scheduler`` (which wraps transformers'), written out here so the
    schedule is a pure function of the step counter and resumes from a JSON-able state.
    """
    warmup = config.lr_warmup_steps
    kind = config.lr_scheduler
    cycles = config.lr_num_cycles

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if progress >= 1.0:
            return 0.0
        if kind == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))

    return fn


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda(config, total_steps))
