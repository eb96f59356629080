"""What a training request would do, checked without writing anything: for confirmation screens.

Runs the same checks :meth:`storage.jobs.JobService.request_training` runs first (base model, category, names,
trigger word, dataset size for the family, training options, a free slot), and adds what a person wants to see
before spending GPU time: steps, an estimated duration, slots left and the dataset's lint findings.
The real request re-checks everything atomically; a preview is only advice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select

from storage.actors import Actor
from storage.dataset_groups import training_groups
from storage.db.models import Element, ElementStatus
from storage.errors import Conflict, QuotaExceeded
from storage.names import MAX_ELEMENT_DESCRIPTION, clean_text, normalize_name, normalize_trigger
from storage.training_rules import (
    build_config,
    check_estimate,
    check_image_count,
    parse_category,
    plan_memory,
    trainable_base,
)


@dataclass(frozen=True)
class TrainingPreview:
    dataset: str
    name: str
    trigger: str
    category: str
    base_model: str
    family: str
    image_count: int
    epochs: int
    repeats: int
    total_steps: int
    estimate_seconds: float
    slots_left: int | None  # None = unlimited
    slots_limit: int | None
    warnings: list[str] = field(default_factory=list)  # lint findings worth reading first
    config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    groups: list[GroupSteps] = field(default_factory=list)  # multi-concept datasets: each group's share
    memory: dict[str, Any] = field(default_factory=dict)  # trainer.memory.planner.MemoryPlan.as_dict()
    memory_line: str = ""  # "memory: 14.2 GB of 24 GB (fp8, checkpointing)"


@dataclass(frozen=True)
class GroupSteps:
    """One image group as the confirmation shows it: its trigger, images × repeats and steps over the run."""

    name: str
    trigger: str
    images: int
    repeats: int
    steps: int


async def preview_training(services: Any, actor: Actor, *, dataset: str, name: str, category: str,
                           base_model: str, trigger: str, description: str = "",
                           overrides: dict[str, Any] | None = None) -> TrainingPreview:
    """Check a training request and describe it; raises the same domain errors the request would."""
    settings = services.settings
    spec = trainable_base(settings, base_model)
    cat = parse_category(category)
    display, key = normalize_name(name, what="Element name")
    trig, trig_key = normalize_trigger(trigger)
    await _check_free_names(services, actor, key, trig_key)
    info = await services.datasets.get(actor, dataset)
    n, family = info.image_count, spec.family.value
    check_image_count(settings, n, info.name, base_model, family)
    manifest = [{"group": i.group} for i in info.images or []]
    stored = {g.name: {"trigger": g.trigger, "repeats": g.repeats} for g in info.groups}
    config = build_config(cat, family, n, trig, overrides, training_groups(stored, manifest),
                          tiny=spec.builtin)
    plan = plan_memory(settings, base_model, spec, config)
    estimate = check_estimate(settings, family, config, n)
    groups = [GroupSteps(g.name, g.trigger, g.images, g.repeats,
                         config.epochs * -(-g.images * g.repeats // config.batch_size)) for g in config.groups]
    quota = await services.quotas.remaining(actor)
    if quota.remaining == 0:
        raise QuotaExceeded(f"You have used all {quota.limit} training slots of this "
                            f"{quota.period_days}-day period.",
                            "A slot frees when your oldest training is a period old; runs that fail on our side "
                            "are refunded.")
    findings = await services.datasets.lint(actor, info.name, category=cat, base_model=base_model)
    warnings = [f.message + (f" {f.hint}" if f.hint else "") for f in findings if f.severity != "info"]
    return TrainingPreview(
        dataset=info.name, name=display, trigger=trig, category=cat, base_model=base_model, family=family,
        image_count=n, epochs=config.epochs, repeats=config.repeats, total_steps=config.total_steps(n),
        estimate_seconds=estimate, slots_left=quota.remaining,
        slots_limit=quota.limit, warnings=warnings, config=config.model_dump(mode="json"),
        overrides=dict(overrides or {}), description=clean_text(description, max_len=MAX_ELEMENT_DESCRIPTION, multiline=True),
        groups=groups, memory=plan.as_dict(), memory_line=plan.line())


async def _check_free_names(services: Any, actor: Actor, key: str, trig_key: str) -> None:
    """The name and trigger word must not clash with another of the actor's Elements (failed ones are replaced)."""
    async with services.db.read() as session:
        clashes = (await session.execute(select(Element).where(
            Element.owner_id == actor.user_id, Element.status != ElementStatus.FAILED.value,
            or_(Element.name_key == key, Element.trigger_key == trig_key)))).scalars().all()
    for other in clashes:
        if other.name_key == key:
            raise Conflict(f"You already have an Element named “{other.name}”.",
                           "Pick another name, or delete the old one first.")
        raise Conflict(f"The trigger word “{other.trigger_word}” is already used by your Element “{other.name}”.",
                       "Pick another trigger word.")
