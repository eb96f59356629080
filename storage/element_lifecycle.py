"""An Element's life through training: reserved when a training is requested, READY with its files when it
succeeds, FAILED when it does not. Part of :class:`storage.elements.ElementService`, kept apart for its size."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.actors import Actor
from storage.db.blob_gc import element_blobs, hashes_in, tombstone
from storage.db.models import Category, Dataset, Element, ElementStatus, User, Visibility
from storage.errors import Conflict, NotFound
from storage.names import MAX_ELEMENT_DESCRIPTION, clean_text, normalize_name, normalize_trigger
from storage.training_rules import parse_category, trainable_base

if TYPE_CHECKING:
    from storage.elements import ElementService


class ElementLifecycle:
    """``self`` is the :class:`~storage.elements.ElementService` (its database and settings)."""

    async def reserve(self: ElementService, session: AsyncSession, actor: Actor, *, name: str, trigger: str, category: str,
                      base_model: str, dataset_id: int | None, manifest: list[dict[str, Any]],
                      config: dict[str, Any], description: str = "") -> Element:
        """Create the TRAINING Element of a training request (inside the caller's transaction).

        Name and trigger word are unique per owner after normalisation; a FAILED Element holding either is
        replaced (its row goes, its blobs are tombstoned).
        """
        display, key = normalize_name(name, what="Element name")
        trig_display, trig_key = normalize_trigger(trigger)
        cat = Category(parse_category(category))
        spec = trainable_base(self.settings, base_model)
        # Serialise reservations of one owner (PostgreSQL; SQLite's IMMEDIATE transaction already does).
        await session.execute(select(User.id).where(User.id == actor.user_id).with_for_update(key_share=True))
        if dataset_id is not None:
            owner_id = (await session.execute(select(Dataset.owner_id).where(Dataset.id == dataset_id))).scalar()
            if owner_id != actor.user_id:
                raise NotFound("That dataset does not exist.", "Check the name with /dataset list.")
        clashes = (await session.execute(select(Element).where(
            Element.owner_id == actor.user_id, or_(Element.name_key == key, Element.trigger_key == trig_key)
        ))).scalars().all()
        for other in clashes:
            if other.status == ElementStatus.FAILED.value:
                await tombstone(self.db, session, element_blobs(other))
                await session.delete(other)
            elif other.name_key == key:
                raise Conflict(f"You already have an Element named “{other.name}”.",
                               "Pick another name, or delete the old one first.")
            else:
                raise Conflict(f"The trigger word “{other.trigger_word}” is already used by your Element "
                               f"“{other.name}”.", "Pick another trigger word.")
        await session.flush()
        element = Element(
            owner_id=actor.user_id, name=display, name_key=key, description=clean_text(description, max_len=MAX_ELEMENT_DESCRIPTION, multiline=True),
            category=cat.value, base_family=spec.family.value, base_model=base_model, trigger_word=trig_display,
            trigger_key=trig_key, status=ElementStatus.TRAINING.value, visibility=Visibility.PRIVATE.value,
            manifest=list(manifest), training_config=dict(config), dataset_id=dataset_id,
        )
        session.add(element)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"You already have an Element named “{display}” or using “{trig_display}”.",
                           "Pick another name and trigger word.") from None
        return element

    async def finish(self: ElementService, session: AsyncSession, element_id: int, *, weights_blob: str, kohya_blob: str | None,
                     metadata_blob: str | None, artifacts: dict[str, Any], recommended_strength: float,
                     strength_range: tuple[float, float] | None = None) -> Element | None:
        """Mark a trained Element READY with its files (written once: a repeated call changes nothing).

        Returns None when the Element was deleted meanwhile; its new files are tombstoned for collection.
        """
        element = await session.get(Element, element_id, with_for_update=True, populate_existing=True)
        if element is None:
            await tombstone(self.db, session, [weights_blob, kohya_blob, metadata_blob, *hashes_in(artifacts)])
            return None
        if element.status == ElementStatus.READY.value:
            return element
        element.weights_blob = weights_blob
        element.kohya_blob = kohya_blob
        element.metadata_blob = metadata_blob
        element.artifacts = dict(artifacts)
        element.recommended_strength = float(recommended_strength)
        if strength_range is not None:
            element.strength_min, element.strength_max = (float(v) for v in strength_range)
        element.status = ElementStatus.READY.value
        await session.flush()
        return element

    async def mark_failed(self: ElementService, session: AsyncSession, element_id: int) -> bool:
        """TRAINING → FAILED (a READY Element is never downgraded). True if it changed."""
        result = await session.execute(
            update(Element).where(Element.id == element_id, Element.status == ElementStatus.TRAINING.value)
            .values(status=ElementStatus.FAILED.value)
        )
        return result.rowcount == 1
