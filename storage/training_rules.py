"""The checks a training request must pass, shared by the request itself and its confirmation preview."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from storage.db.models import Category
from storage.errors import InvalidInput
from storage.settings import BaseModelSpec, Settings
from storage.wording import plural
from trainer.config import TrainingConfig, estimate_seconds, validation_message
from trainer.memory.planner import MemoryPlan, PlanError, TrainShape, arch_for, budget_gb, plan_training


def known_base(settings: Settings, base_model: str) -> BaseModelSpec:
    """The configured base model called ``base_model``; InvalidInput listing the choices when there is none."""
    spec = settings.base_models.get(base_model)
    if spec is None:
        raise InvalidInput(f"Unknown base model “{base_model}”.",
                           f"Choose one of: {', '.join(sorted(settings.base_models))}.")
    return spec


def trainable_base(settings: Settings, base_model: str) -> BaseModelSpec:
    """:func:`known_base`, refused when that base is for generation only (flux-schnell)."""
    spec = known_base(settings, base_model)
    if not spec.trainable:
        ok = sorted(n for n, s in settings.base_models.items() if s.trainable and s.family == spec.family)
        raise InvalidInput(f"{base_model} cannot be used for training.",
                           f"Train on {' or '.join(ok) or 'another base model'} instead.")
    return spec


def parse_category(category: str) -> str:
    try:
        return Category(str(category).strip().lower()).value
    except ValueError:
        raise InvalidInput(f"“{category}” is not a category.",
                           f"Use one of: {', '.join(c.value for c in Category)}.") from None


def check_image_count(settings: Settings, n: int, dataset: str, base_model: str, family: str) -> None:
    lo, hi = settings.image_limits.min_images, settings.image_limits.max_for(family)
    if n < lo:
        raise InvalidInput(f"“{dataset}” has {plural(n, 'image')}; training needs at least {lo}.",
                           f"Add {lo - n} more with /dataset add (the guides suggest {lo}–{hi}).")
    if n > hi:
        raise InvalidInput(f"“{dataset}” has {n} images; {base_model} ({family}) trains on at most {hi}.",
                           f"Remove {n - hi} with /dataset remove, keeping your most varied, sharpest images.")


def build_config(category: str, family: str, n: int, trigger: str, overrides: dict[str, Any] | None,
                 groups: list[dict[str, Any]] | None = None, *, tiny: bool = False) -> TrainingConfig:
    """The validated :class:`trainer.config.TrainingConfig` (torch-free), or InvalidInput naming the option.

    ``groups`` — the dataset's image groups (see :func:`storage.dataset_groups.training_groups`); ``tiny`` — the
    base is a built-in tiny model, which gets presets sized for it."""
    values = dict(overrides or {})
    if groups:
        values["groups"] = groups
    try:
        return TrainingConfig.for_request(category, family, n, trigger, tiny=tiny, **values)
    except ValidationError as exc:
        raise InvalidInput(f"Invalid training option: {validation_message(exc)}.",
                           "Fix the option or leave it out to use the preset.") from None
    except (ValueError, KeyError) as exc:
        raise InvalidInput(f"Invalid training option: {exc}.",
                           "Fix the option or leave it out to use the preset.") from None


def check_estimate(settings: Settings, family: str, config: TrainingConfig, n: int) -> float:
    """The run's estimated seconds; :class:`InvalidInput` (with the estimate) when it exceeds the time limit of a
    run — it would time out and use the member's slot for nothing."""
    estimate = estimate_seconds(family, config, n)
    limit = settings.train_timeout_seconds
    if estimate > limit:
        raise InvalidInput(
            f"This training is estimated at {span(estimate)}, over the {span(limit)} limit of a run "
            f"({config.total_steps(n)} steps at {config.resolution} px).",
            "Use fewer epochs or repeats, a lower resolution, or fewer images.")
    return estimate


def span(seconds: float) -> str:
    """``"44.5 h"``, ``"25 min"``, ``"40 s"``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{math.ceil(seconds / 60)} min" if seconds >= 60 else f"{math.ceil(seconds)} s"


def plan_memory(settings: Settings, base_model: str, spec: BaseModelSpec, config: TrainingConfig
                ) -> MemoryPlan:
    """The run's memory plan (trainer.memory.planner, torch-free) in the GPU budget; with a known budget the
    config takes the planned mode and checkpointing. A run that fits in no mode is refused before it is queued."""
    arch = spec.arch or arch_for(base_model, spec.family.value, spec.source)
    budget = budget_gb(settings.gpu_memory_gb)
    try:
        plan = plan_training(arch, TrainShape.of(config), budget, config.memory_mode)
    except PlanError as exc:
        raise InvalidInput(f"Not enough GPU memory: {exc}.", exc.advice) from None
    if budget is not None:  # unknown budget: the worker plans "auto" against its own GPU (trainer.train)
        config.memory_mode = plan.mode  # type: ignore[assignment]  # one of TRAIN_MODES (validate_assignment)
        config.gradient_checkpointing = plan.gradient_checkpointing
    return plan
