"""Read-only views of Elements that front ends render (no ORM objects leave storage)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.db.models import Element, ElementStatus, User, Visibility


@dataclass(frozen=True)
class ElementInfo:
    id: int
    name: str
    description: str
    category: str
    base_family: str
    base_model: str
    trigger_word: str
    status: str
    visibility: str
    guild_id: str | None
    owner_id: int
    owner_external_id: str
    owner_name: str
    is_own: bool
    recommended_strength: float
    usage_count: int
    created_at: datetime
    dataset_id: int | None
    image_count: int
    weights_blob: str | None = None
    kohya_blob: str | None = None
    metadata_blob: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    strength_range: tuple[float, float] | None = None  # recommended by the post-training sweep

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Image groups it was trained with (``[{"name", "trigger", …}]``); ``Name@group`` picks one."""
        return list(self.training_config.get("groups") or [])

    @property
    def ref(self) -> str:
        """A reference that resolves to this Element for anyone who may see it."""
        return f"#{self.id}"

    @property
    def ready(self) -> bool:
        return self.status == ElementStatus.READY

    @property
    def shared(self) -> bool:
        return self.visibility != Visibility.PRIVATE


def element_info(element: Element, owner: User, viewer_id: int) -> ElementInfo:
    return ElementInfo(
        id=element.id, name=element.name, description=element.description, category=element.category,
        base_family=element.base_family, base_model=element.base_model, trigger_word=element.trigger_word,
        status=element.status, visibility=element.visibility, guild_id=element.guild_id,
        owner_id=owner.id, owner_external_id=owner.external_id,
        owner_name=owner.display_name or owner.external_id.split(":", 1)[-1],
        is_own=owner.id == viewer_id, recommended_strength=element.recommended_strength,
        usage_count=element.usage_count, created_at=element.created_at, dataset_id=element.dataset_id,
        image_count=len(element.manifest or []), weights_blob=element.weights_blob,
        kohya_blob=element.kohya_blob, metadata_blob=element.metadata_blob,
        artifacts=dict(element.artifacts or {}), training_config=dict(element.training_config or {}),
        strength_range=stored_range(element),
    )


def stored_range(element: Element) -> tuple[float, float] | None:
    if element.strength_min is None or element.strength_max is None:
        return None
    return float(element.strength_min), float(element.strength_max)


@dataclass(frozen=True)
class Page:
    items: list[ElementInfo]
    page: int  # 0-based
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_next(self) -> bool:
        return (self.page + 1) * self.per_page < self.total


@dataclass(frozen=True)
class ResolvedElement:
    """An Element checked for one generation: usable by the actor, READY, right lineage, strength validated."""

    element_id: int
    name: str
    owner_id: int
    owner_name: str
    is_own: bool
    trigger_word: str
    strength: float
    weights_blob: str
    base_model: str
    base_family: str
    group: str = ""  # image group named with "@group" (its trigger is in trigger_word)
    strength_range: tuple[float, float] | None = None  # what the post-training sweep recommends

    @property
    def key(self) -> str:
        """Cache key for the generation engine's adapter cache (weights are immutable once READY)."""
        return f"element-{self.element_id}-{self.weights_blob[:16]}"

    def as_record(self) -> dict[str, Any]:
        """The shape stored in ``Generation.elements``."""
        return {"element_id": self.element_id, "name": self.name, "owner": self.owner_name,
                "strength": self.strength, **({"group": self.group} if self.group else {})}


@dataclass(frozen=True)
class ExportBundle:
    filename: str  # e.g. "inkwash_flux-dev.safetensors" — safe to use as a download name
    kohya: bytes  # kohya/A1111/ComfyUI-format LoRA with ss_* metadata
    element_json: bytes

    @property
    def json_filename(self) -> str:
        return self.filename.removesuffix(".safetensors") + ".element.json"
