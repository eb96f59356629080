"""Element use cases: list, browse, share, delete, export, and the steps generation needs (training's:
:mod:`storage.element_lifecycle`).

Privacy rule: an actor sees their own Elements, public READY ones, and READY server-shared ones of the server
they act from. Everything else is "not found" — never "forbidden", which would leak that it exists.
Others may use what they see, never change it (Forbidden); Atelier admins may unshare or delete for moderation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.actors import Actor
from storage.db.blob_gc import BlobCollector, element_blobs, tombstone
from storage.db.blobs import BlobStore
from storage.db.engine import Database
from storage.db.models import Element, ElementStatus, Job, User, Visibility
from storage.element_lifecycle import ElementLifecycle
from storage.element_views import ElementInfo, ExportBundle, Page, ResolvedElement, element_info, stored_range
from storage.errors import Ambiguous, Conflict, FamilyMismatch, Forbidden, InvalidInput, NotFound
from storage.export_privacy import strip_json_captions, strip_safetensors_captions
from storage.names import normalize_name
from storage.settings import Settings
from storage.training_rules import known_base
from trainer.prompting import MAX_LORAS, check_strengths, range_warnings, split_group

_REF_ID = re.compile(r"^#(\d{1,12})$")
MAX_NAME_MATCHES = 10  # listed when a typed name matches several Elements


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ElementService(ElementLifecycle):
    def __init__(self, db: Database, blobs: BlobStore, settings: Settings, *, guilds: Any | None = None) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.guilds = guilds  # server rules: an Element shared with a server must pass its banned words
        self.collector = BlobCollector(db, blobs)

    # ---- lineage --------------------------------------------------------------------------------------------

    def lineage(self, base_model: str) -> str:
        spec = self.settings.base_models.get(base_model)
        return spec.lineage if spec else base_model

    def compatible_bases(self, base_model: str) -> list[str]:
        """Configured base models an Element trained on ``base_model`` works with."""
        lineage = self.lineage(base_model)
        return sorted(n for n, s in self.settings.base_models.items() if s.lineage == lineage)

    # ---- visibility ------------------------------------------------------------------------------------------

    @staticmethod
    def visible_to(actor: Actor) -> Any:
        """SQL condition: Elements ``actor`` may see (own in any state; others' only when READY and shared)."""
        shared = [Element.visibility == Visibility.PUBLIC.value]
        if actor.guild_id:
            shared.append(and_(Element.visibility == Visibility.SERVER.value, Element.guild_id == actor.guild_id))
        return or_(Element.owner_id == actor.user_id,
                   and_(Element.status == ElementStatus.READY.value, or_(*shared)))

    def _lookup(self, actor: Actor, ref: str) -> Select[Any]:
        """``#id`` → that Element if visible; a name → every visible Element of that name, best tier first."""
        stmt = select(Element, User).join(User, Element.owner_id == User.id)
        ref = (ref or "").strip()
        if m := _REF_ID.match(ref):
            return stmt.where(Element.id == int(m.group(1)), self.visible_to(actor))

        try:
            _, key = normalize_name(ref, what="Element name")
        except InvalidInput:
            key = ref.casefold()
        return (stmt.where(Element.name_key == key, self.visible_to(actor))
                .order_by(self._name_tier(actor), Element.id).limit(MAX_NAME_MATCHES + 1))

    @staticmethod
    def _name_tier(actor: Actor) -> Any:
        """How close a visible Element is to ``actor``: 0 own, 1 shared in this server, 2 public."""
        whens: list[Any] = [(Element.owner_id == actor.user_id, 0)]
        if actor.guild_id:
            whens.append((and_(Element.visibility == Visibility.SERVER.value, Element.guild_id == actor.guild_id), 1))
        return case(*whens, else_=2)

    def _tier_of(self, actor: Actor, element: Element) -> int:
        if element.owner_id == actor.user_id:
            return 0
        if element.visibility == Visibility.SERVER.value and element.guild_id == actor.guild_id:
            return 1
        return 2

    async def _find(self, session: AsyncSession, actor: Actor, ref: str, *, for_update: bool = False
                    ) -> tuple[Element, User]:
        """The Element ``ref`` names for ``actor``: a typed name finds your own first, then one shared in this
        server, then a public one; several equally close matches → :class:`Ambiguous` listing them."""
        stmt = self._lookup(actor, ref)
        if for_update:
            stmt = stmt.with_for_update(of=Element)
        rows = [(r[0], r[1]) for r in (await session.execute(stmt)).all()]
        if not rows:
            raise NotFound(f"No Element “{ref}” that you can see.",
                           "Check the name with /element list or /element browse, or use #<id>.")
        best = self._tier_of(actor, rows[0][0])
        closest = [(e, u) for e, u in rows if self._tier_of(actor, e) == best]
        if len(closest) > 1:
            where = "shared in this server" if best == 1 else "public"
            listed = "; ".join(f"#{e.id} by {u.display_name or u.external_id.split(':', 1)[-1]}"
                               for e, u in closest[:MAX_NAME_MATCHES])
            more = " and more" if len(closest) > MAX_NAME_MATCHES else ""
            raise Ambiguous(f"Several {where} Elements are named “{closest[0][0].name}”: {listed}{more}.",
                            f"Use the id of the one you mean, e.g. #{closest[0][0].id}.")
        return rows[0]

    async def _find_changeable(self, session: AsyncSession, actor: Actor, ref: str, *, moderation: bool
                               ) -> Element:
        element, _owner = await self._find(session, actor, ref, for_update=True)
        if element.owner_id != actor.user_id and not (moderation and actor.is_admin):
            raise Forbidden(f"“{element.name}” belongs to someone else.",
                            "You can use shared Elements, but only their owner can change or delete them.")
        return element

    # ---- queries ---------------------------------------------------------------------------------------------

    async def list_own(self, actor: Actor) -> list[ElementInfo]:
        async with self.db.read() as session:
            rows = (await session.execute(
                select(Element, User).join(User, Element.owner_id == User.id)
                .where(Element.owner_id == actor.user_id).order_by(Element.created_at.desc(), Element.id.desc())
            )).all()
        return [element_info(e, u, actor.user_id) for e, u in rows]

    async def get(self, actor: Actor, ref: str) -> ElementInfo:
        async with self.db.read() as session:
            element, owner = await self._find(session, actor, ref)
        return element_info(element, owner, actor.user_id)

    async def get_for_generation(self, actor: Actor, ref: str) -> ElementInfo:
        """Like :meth:`get`, for a generation reference that may name an image group (``Name@group``)."""
        async with self.db.read() as session:
            element, owner, _, _ = await self._find_with_group(session, actor, ref)
        return element_info(element, owner, actor.user_id)

    async def browse(self, actor: Actor, *, query: str | None = None, base_model: str | None = None,
                     page: int = 0, per_page: int = 10) -> Page:
        """Shared READY Elements (public + this server's), most used first."""
        per_page = min(max(1, per_page), 50)
        page = max(0, page)
        shared = [Element.visibility == Visibility.PUBLIC.value]
        if actor.guild_id:
            shared.append(and_(Element.visibility == Visibility.SERVER.value, Element.guild_id == actor.guild_id))
        conds = [Element.status == ElementStatus.READY.value, or_(*shared)]
        if query and query.strip():
            pattern = f"%{_like_escape(query.strip().casefold())}%"
            conds.append(or_(Element.name_key.like(pattern, escape="\\"),
                             func.lower(Element.description).like(pattern, escape="\\"),
                             Element.trigger_key.like(pattern, escape="\\")))
        if base_model:
            conds.append(Element.base_model.in_(self.compatible_bases(base_model)))
        async with self.db.read() as session:
            total = (await session.execute(select(func.count(Element.id)).where(*conds))).scalar_one()
            rows = (await session.execute(
                select(Element, User).join(User, Element.owner_id == User.id).where(*conds)
                .order_by(Element.usage_count.desc(), Element.created_at.desc(), Element.id.desc())
                .offset(page * per_page).limit(per_page)
            )).all()
        return Page([element_info(e, u, actor.user_id) for e, u in rows], page, per_page, total)

    async def autocomplete(self, actor: Actor, prefix: str, *, base_model: str | None = None, limit: int = 25,
                           ready_only: bool = True, own_only: bool = False,
                           with_groups: bool = False) -> list[tuple[str, str]]:
        """(label, value) choices: own Elements (value = name) and shared ones (value = ``#id``).

        ``own_only`` for commands that change an Element (share, delete); ``ready_only=False`` to include
        Elements still training or failed (info, delete); ``with_groups`` (generation) adds ``Name@group`` for
        each image group of an Element, and ``Name@gr…`` narrows to those groups.
        """
        conds = [Element.owner_id == actor.user_id if own_only else self.visible_to(actor)]
        if ready_only:
            conds.append(Element.status == ElementStatus.READY.value)
        group_text = None
        if with_groups and "@" in (prefix or ""):
            prefix, _, group_text = prefix.rpartition("@")
            group_text = group_text.strip().casefold()
        text = (prefix or "").strip().casefold()
        if text:
            conds.append(Element.name_key.like(f"%{_like_escape(text)}%", escape="\\"))
        if base_model and base_model in self.settings.base_models:
            conds.append(Element.base_model.in_(self.compatible_bases(base_model)))
        own_first = (Element.owner_id != actor.user_id)
        async with self.db.read() as session:
            rows = (await session.execute(
                select(Element, User).join(User, Element.owner_id == User.id).where(*conds)
                .order_by(own_first, Element.usage_count.desc(), Element.name_key).limit(max(1, min(limit, 25)))
            )).all()
        out = []
        for e, u in rows:
            if e.owner_id == actor.user_id:
                label, value = f"{e.name} · {e.base_model}", e.name
            else:
                label, value = f"{e.name} by {u.display_name or u.external_id} · {e.base_model}", f"#{e.id}"
            if group_text is None:
                out.append((label[:100], value))
            if with_groups:
                for g in (e.training_config or {}).get("groups") or []:
                    name = str(g.get("name", ""))
                    if group_text is None or group_text in name.casefold():
                        out.append((f"{label} @{name} ({g.get('trigger') or '—'})"[:100], f"{value}@{name}"))
        return out[:max(1, min(limit, 25))]

    # ---- owner actions ---------------------------------------------------------------------------------------

    async def share(self, actor: Actor, ref: str, visibility: Visibility | str, guild_id: str | None = None
                    ) -> ElementInfo:
        try:
            vis = Visibility(str(visibility).lower())
        except ValueError:
            raise InvalidInput(f"“{visibility}” is not a visibility.", "Use private, server or public.") from None
        async with self.db.transaction() as session:
            element = await self._find_changeable(session, actor, ref, moderation=vis == Visibility.PRIVATE)
            if vis != Visibility.PRIVATE and element.status != ElementStatus.READY.value:
                raise Conflict(f"“{element.name}” is not ready yet ({element.status}).",
                               "You can share it once training has finished.")
            gid = guild_id or actor.guild_id
            if vis == Visibility.SERVER and not gid:
                raise InvalidInput("Sharing with a server needs a server.",
                                   "Run the command inside the server you want to share with.")
            if vis == Visibility.SERVER and self.guilds is not None:
                try:  # what the server's members will see: the target server's rules apply
                    await self.guilds.check_text(str(gid), "\n".join(
                        (element.name, element.trigger_word, element.description)))
                except InvalidInput as exc:
                    raise InvalidInput(exc.message.replace("on this server", "on that server"),
                                       "Rename it or change its description to share it there.") from None
            element.visibility = vis.value
            element.guild_id = str(gid) if vis == Visibility.SERVER else None
            await session.flush()
            owner = await session.get(User, element.owner_id)
            return element_info(element, owner, actor.user_id)

    async def delete(self, actor: Actor, ref: str) -> ElementInfo:
        """Delete an Element: the row (and blob tombstones) first, then unreferenced files."""
        async with self.db.transaction() as session:
            element = await self._find_changeable(session, actor, ref, moderation=True)
            if element.status == ElementStatus.TRAINING.value:
                raise Conflict(f"“{element.name}” is still training.", "Cancel the training job first.")
            owner = await session.get(User, element.owner_id)
            info = element_info(element, owner, actor.user_id)
            await tombstone(self.db, session, element_blobs(element))
            await session.execute(delete(Element).where(Element.id == element.id))
        await self.collector.collect()
        return info

    async def export(self, actor: Actor, ref: str) -> ExportBundle:
        """The kohya-format .safetensors (A1111/ComfyUI) and element.json of an Element the actor can see.

        Only the owner's export carries caption text; anyone else's has it stripped (see
        :mod:`storage.export_privacy`).
        """

        info = await self.get(actor, ref)
        if not info.ready or not info.kohya_blob or not info.metadata_blob:
            raise Conflict(f"“{info.name}” has no exported weights ({info.status}).",
                           "Export works once training has finished.")
        kohya = await self.blobs.get_bytes(info.kohya_blob)
        meta = await self.blobs.get_bytes(info.metadata_blob)
        if not info.is_own:
            kohya = await asyncio.to_thread(strip_safetensors_captions, kohya)
            meta = strip_json_captions(meta)
        slug = re.sub(r"[^a-z0-9]+", "-", info.name.casefold()).strip("-") or f"element-{info.id}"
        return ExportBundle(f"{slug[:48]}_{info.base_model}.safetensors", kohya, meta)

    # ---- steps used inside other use cases' transactions (training / generation) -----------------------------

    async def resolve_for_generation(self, session: AsyncSession, actor: Actor,
                                     refs: Sequence[tuple[str, float | None]], base_model: str
                                     ) -> list[ResolvedElement]:
        """Check the Elements of one generation request; raise a clear error for the first problem."""
        known_base(self.settings, base_model)
        if len(refs) > MAX_LORAS:
            raise InvalidInput(f"At most {MAX_LORAS} Elements can be combined in one image; you asked for {len(refs)}.")
        resolved: list[ResolvedElement] = []
        for ref, strength in refs:
            element, owner, group, group_word = await self._find_with_group(session, actor, ref)
            swept = stored_range(element)
            if any(r.element_id == element.id for r in resolved):
                raise InvalidInput(f"“{element.name}” is listed twice.", "Use each Element once.")
            if element.status != ElementStatus.READY.value or not element.weights_blob:
                what = "is still training" if element.status == ElementStatus.TRAINING.value else "failed to train"
                raise Conflict(f"“{element.name}” {what}.", "Pick a ready Element (/element list).")
            if self.lineage(element.base_model) != self.lineage(base_model):
                ok = self.compatible_bases(element.base_model)
                raise FamilyMismatch(
                    f"“{element.name}” was trained on {element.base_model} ({element.base_family}) and does not "
                    f"work with {base_model}.",
                    f"Generate with {' or '.join(ok) if ok else element.base_model} to use it.",
                )
            resolved.append(ResolvedElement(
                element_id=element.id, name=element.name, owner_id=owner.id,
                owner_name=owner.display_name or owner.external_id.split(":", 1)[-1],
                is_own=owner.id == actor.user_id,
                trigger_word=f"{element.trigger_word}, {group_word}" if group_word else element.trigger_word,
                strength=float(element.recommended_strength if strength is None else strength),
                weights_blob=element.weights_blob, base_model=element.base_model, base_family=element.base_family,
                group=group, strength_range=swept,
            ))
        self.strength_warnings(resolved)  # raises for refused strengths
        return resolved

    async def _find_with_group(self, session: AsyncSession, actor: Actor, ref: str
                               ) -> tuple[Element, User, str, str]:
        """The Element of ``ref`` (``Name`` or ``Name@group``), the group's stored name and its trigger word."""
        name, group = split_group(ref)
        if not group:
            element, owner = await self._find(session, actor, ref)
            return element, owner, "", ""
        try:
            element, owner = await self._find(session, actor, name)
        except NotFound:
            element, owner = await self._find(session, actor, ref)  # an Element whose name contains "@"
            return element, owner, "", ""
        groups = list((element.training_config or {}).get("groups") or [])
        spec = next((g for g in groups if str(g.get("name", "")).casefold() == group.casefold()), None)
        if spec is None:
            known = ", ".join(f"@{g['name']}" for g in groups) or "none (it was trained without groups)"
            raise InvalidInput(f"“{element.name}” has no image group “{group}”.", f"Its groups: {known}.")
        return element, owner, str(spec["name"]), str(spec.get("trigger", ""))

    @staticmethod
    def strength_warnings(resolved: Sequence[ResolvedElement]) -> list[str]:
        """Warnings for the chosen strengths (the shared rules in trainer.prompting); InvalidInput if refused."""
        names = [f"“{r.name}”" for r in resolved]
        strengths = [r.strength for r in resolved]
        try:
            warnings = check_strengths(strengths, names)
        except ValueError as exc:
            raise InvalidInput(str(exc)[0].upper() + str(exc)[1:] + ".") from None
        return warnings + range_warnings(strengths, [r.strength_range for r in resolved], names)

    async def trained_in_guild(self, actor: Actor, element_id: int) -> str | None:
        """The server where the actor requested the training of their Element ``element_id`` (None: a DM, the
        CLI, or not theirs) — for share buttons pressed in a DM."""
        async with self.db.read() as session:
            origin = (await session.execute(
                select(Job.origin).join(Element, Element.id == Job.element_id)
                .where(Element.id == element_id, Element.owner_id == actor.user_id, Job.kind == "train")
                .order_by(Job.id.desc()).limit(1))).scalar()
        guild = (origin or {}).get("guild_id")
        return str(guild) if guild else None

    async def deleted_of(self, element_ids: Sequence[int]) -> set[int]:
        """Which of ``element_ids`` no longer exist (deleted by their owner or a moderator)."""
        wanted = {int(i) for i in element_ids}
        if not wanted:
            return set()
        async with self.db.read() as session:
            found = set((await session.execute(select(Element.id).where(Element.id.in_(wanted)))).scalars())
        return wanted - found

    async def record_usage(self, session: AsyncSession, element_ids: Sequence[int], *,
                           exclude_owner_id: int | None = None) -> None:
        """Count one use of each Element (pass ``exclude_owner_id`` to skip the requester's own)."""
        if not element_ids:
            return
        stmt = update(Element).where(Element.id.in_(list(element_ids))).values(usage_count=Element.usage_count + 1)
        if exclude_owner_id is not None:
            stmt = stmt.where(Element.owner_id != exclude_owner_id)
        await session.execute(stmt)
