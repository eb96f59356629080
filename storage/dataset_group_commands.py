"""Image groups of a dataset (multi-concept datasets): create, change and remove them, and the groups a kohya
``N_name/`` zip folder brings. Part of :class:`storage.datasets.DatasetService`, kept apart for its size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import update

from storage.actors import Actor
from storage.dataset_groups import (
    GroupInfo,
    check_repeats,
    clean_group_trigger,
    find_group,
    kohya_folder,
    normalize_group,
)
from storage.dataset_views import AddReport
from storage.db.models import DatasetImage, utcnow
from storage.errors import Conflict, NotFound
from storage.names import clean_text
from trainer.config import MAX_GROUPS

if TYPE_CHECKING:
    from storage.datasets import DatasetService


class DatasetGroupCommands:
    """Group use cases; ``self`` is the :class:`~storage.datasets.DatasetService` (its database and lookups)."""

    async def _groups_from_kohya_folders(self: DatasetService, actor: Actor, name: str, paths: list[str],
                                         report: AddReport) -> None:
        """Images added from kohya ``N_name/`` folders join group ``name`` with that trigger and N repeats.
        ``report.files`` is in the order of ``paths`` (one result per file)."""
        by_group: dict[tuple[str, str, int], list[int]] = {}
        for path, f in zip(paths, report.files, strict=True):
            folder = kohya_folder(path)
            if folder and f.added and f.index is not None:
                by_group.setdefault(folder, []).append(f.index)
        for (group, trigger, repeats), indices in by_group.items():
            await self.set_group(actor, name, group, indices, trigger=trigger, repeats=repeats)

    async def set_group(self: DatasetService, actor: Actor, name: str, group: str, indices: Sequence[int] = (), *,
                        trigger: str | None = None, repeats: int | None = None,
                        auto_repeats: bool = False) -> GroupInfo:
        """Create or update image group ``group``: its trigger/class word, its repeats (``auto_repeats`` → balanced
        automatically again) and which images belong to it (moved from any other group). All or nothing."""
        group = normalize_group(group)
        word = None if trigger is None else clean_group_trigger(trigger)
        fixed = check_repeats(repeats)
        wanted = sorted(set(int(i) for i in indices))
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_update=True)
            groups = {k: dict(v) for k, v in (ds.groups or {}).items()}
            stored = find_group(groups, group) or group
            if stored not in groups and len(groups) >= MAX_GROUPS:
                raise Conflict(f"“{ds.name}” already has {len(groups)} groups, the most allowed.",
                               "Remove a group first (`atelier dataset group … --remove`).")
            spec = groups.setdefault(stored, {"trigger": "", "repeats": None})
            if word is not None:
                spec["trigger"] = word
            if fixed is not None or auto_repeats:
                spec["repeats"] = fixed
            images, by_pos = await self._images_by_number(session, ds, wanted)
            for i in wanted:
                by_pos[i].group_name = stored
            ds.groups = groups  # a new dict, so the JSON column is written
            ds.updated_at = utcnow()
            await session.flush()
            count = sum(1 for i in images if i.group_name == stored)
            return GroupInfo(stored, spec["trigger"], spec["repeats"], count)

    async def remove_group(self: DatasetService, actor: Actor, name: str, group: str) -> GroupInfo:
        """Delete group ``group``; its images stay in the dataset, in no group."""
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_update=True)
            groups = dict(ds.groups or {})
            stored = find_group(groups, group)
            if stored is None:
                raise NotFound(f"“{ds.name}” has no group called “{clean_text(group or '', max_len=40)}”.",
                               "See its groups with /dataset show.")
            spec = groups.pop(stored)
            result = await session.execute(update(DatasetImage).where(
                DatasetImage.dataset_id == ds.id, DatasetImage.group_name == stored).values(group_name=""))
            ds.groups = groups
            ds.updated_at = utcnow()
            return GroupInfo(stored, str(spec.get("trigger", "")), spec.get("repeats"), result.rowcount or 0)

