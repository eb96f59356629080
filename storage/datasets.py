"""Dataset use cases, shared by the Discord bot and the CLI.

Every method is scoped to the actor: a dataset belongs to one user and is "not found" for everybody else.
Adding images: decode off the event loop, write blobs (files first), then one transaction inserts the rows.
Deleting: rows and blob tombstones first, files afterwards (only blobs nothing else refers to).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.actors import Actor
from storage.dataset_group_commands import DatasetGroupCommands
from storage.dataset_ingest import add_images as _add_images
from storage.dataset_views import (
    AddReport,
    DatasetInfo,
    FileResult,
    ImageInfo,
    IncomingFile,
    LazyFile,
    ProgressFn,
    TimedOutUpload,
    dataset_info,
    image_info,
)
from storage.db.blob_gc import BlobCollector, tombstone
from storage.db.blobs import BlobStore
from storage.db.engine import Database, dialect_insert
from storage.db.models import Dataset, DatasetImage, UploadSession, User, utcnow
from storage.disk_quota import StorageUse, member_bytes
from storage.errors import Conflict, InvalidInput, NotFound
from storage.heavy import heavy_slot
from storage.images.lint import Finding
from storage.names import (
    MAX_DATASET_DESCRIPTION,
    MAX_NAME,
    clean_caption,
    clean_text,
    normalize_name,
    text_key,
)
from storage.settings import Family, Settings
from storage.training_rules import known_base, parse_category
from storage.wording import human_bytes, plural

MAX_DATASETS_PER_USER = 200
MAX_UPLOAD_MINUTES = 120  # a DM upload session stays open at most this long


class DatasetService(DatasetGroupCommands):
    def __init__(self, db: Database, blobs: BlobStore, settings: Settings) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.collector = BlobCollector(db, blobs)

    @property
    def capacity(self) -> int:
        """Most images a dataset may hold: the largest per-family maximum (training checks per family)."""
        return max(self.settings.image_limits.max_images.values())

    # ---- lookups (also used inside other use cases' transactions) --------------------------------------------

    async def load_owned(self, session: AsyncSession, actor: Actor, name: str, *, for_update: bool = False,
                         for_delete: bool = False) -> Dataset:
        """The actor's dataset called ``name`` (case-insensitive); NotFound for missing or someone else's.

        ``for_update`` locks the row against concurrent changes (PostgreSQL ``FOR NO KEY UPDATE``, which still
        lets other transactions insert rows pointing at it); ``for_delete`` takes the full ``FOR UPDATE``.
        """
        key = text_key(clean_text(name or "", max_len=640))
        stmt = select(Dataset).where(Dataset.owner_id == actor.user_id, Dataset.name_key == key)
        if for_delete:
            stmt = stmt.with_for_update()
        elif for_update:
            stmt = stmt.with_for_update(key_share=True)
        ds = (await session.execute(stmt)).scalar_one_or_none()
        if ds is None:
            raise NotFound(f"You have no dataset called “{clean_text(name or '', max_len=MAX_NAME)}”.",
                           "See your datasets with /dataset list (or `atelier dataset list`).")
        return ds

    @staticmethod
    async def count_images(session: AsyncSession, dataset_id: int) -> int:
        return (await session.execute(
            select(func.count(DatasetImage.id)).where(DatasetImage.dataset_id == dataset_id))).scalar_one()

    @staticmethod
    async def images_of(session: AsyncSession, dataset_id: int) -> list[DatasetImage]:
        return list((await session.execute(
            select(DatasetImage).where(DatasetImage.dataset_id == dataset_id).order_by(DatasetImage.position)
        )).scalars())

    async def manifest(self, session: AsyncSession, dataset_id: int) -> list[dict[str, object]]:
        """Frozen training input: ``[{"blob", "caption", "position"(, "group")}]`` in dataset order."""
        return [{"blob": i.blob_hash, "caption": i.caption, "position": i.position,
                 **({"group": i.group_name} if i.group_name else {})}
                for i in await self.images_of(session, dataset_id)]

    def counts_vs_limits(self, info: DatasetInfo) -> dict[str, tuple[int, int]]:
        """``{family: (image count, max for that family)}``."""
        return {Family(f).value: (info.image_count, m) for f, m in self.settings.image_limits.max_images.items()}

    # ---- CRUD ------------------------------------------------------------------------------------------------

    async def create(self, actor: Actor, name: str, description: str = "") -> DatasetInfo:
        display, key = normalize_name(name, what="dataset name")
        desc = clean_text(description, max_len=MAX_DATASET_DESCRIPTION, multiline=True)
        async with self.db.transaction() as session:
            owned = (await session.execute(
                select(func.count(Dataset.id)).where(Dataset.owner_id == actor.user_id))).scalar_one()
            if owned >= MAX_DATASETS_PER_USER:
                raise Conflict(f"You already have {owned} datasets, the most allowed.",
                               "Delete one you no longer need first.")
            if await self._exists(session, actor, key):
                raise Conflict(f"You already have a dataset called “{display}”.",
                               "Pick another name, or add images to the existing one.")
            ds = Dataset(owner_id=actor.user_id, name=display, name_key=key, description=desc)
            session.add(ds)
            try:
                await session.flush()
            except IntegrityError:  # a concurrent create with the same name won the race (PostgreSQL)
                raise Conflict(f"You already have a dataset called “{display}”.", "Pick another name.") from None
            return dataset_info(ds, 0)

    async def _exists(self, session: AsyncSession, actor: Actor, key: str) -> bool:
        return (await session.execute(select(Dataset.id).where(
            Dataset.owner_id == actor.user_id, Dataset.name_key == key))).first() is not None

    async def list(self, actor: Actor) -> list[DatasetInfo]:
        counts = (select(DatasetImage.dataset_id, func.count(DatasetImage.id).label("n"))
                  .group_by(DatasetImage.dataset_id).subquery())
        async with self.db.read() as session:
            rows = (await session.execute(
                select(Dataset, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.dataset_id == Dataset.id)
                .where(Dataset.owner_id == actor.user_id).order_by(Dataset.name_key)
            )).all()
        return [dataset_info(ds, n) for ds, n in rows]

    async def autocomplete(self, actor: Actor, prefix: str, *, limit: int = 25) -> list[tuple[str, str]]:
        """(label, value) choices among the actor's datasets whose name contains ``prefix``."""
        text = text_key(clean_text(prefix or "", max_len=MAX_NAME))
        return [(f"{d.name} ({plural(d.image_count, 'image')})"[:100], d.name)
                for d in await self.list(actor) if text in text_key(d.name)][:max(1, min(limit, 25))]

    async def get(self, actor: Actor, name: str) -> DatasetInfo:
        async with self.db.read() as session:
            ds = await self.load_owned(session, actor, name)
            images = await self.images_of(session, ds.id)
        return dataset_info(ds, len(images), images)

    async def rename(self, actor: Actor, name: str, new_name: str) -> DatasetInfo:
        display, key = normalize_name(new_name, what="dataset name")
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_update=True)
            if key != ds.name_key and await self._exists(session, actor, key):
                raise Conflict(f"You already have a dataset called “{display}”.", "Pick another name.")
            ds.name, ds.name_key, ds.updated_at = display, key, utcnow()
            try:
                await session.flush()
            except IntegrityError:
                raise Conflict(f"You already have a dataset called “{display}”.", "Pick another name.") from None
            return dataset_info(ds, await self.count_images(session, ds.id))

    async def set_description(self, actor: Actor, name: str, description: str) -> DatasetInfo:
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_update=True)
            ds.description = clean_text(description, max_len=MAX_DATASET_DESCRIPTION, multiline=True)
            ds.updated_at = utcnow()
            return dataset_info(ds, await self.count_images(session, ds.id))

    async def delete(self, actor: Actor, name: str) -> DatasetInfo:
        """Delete a dataset. Elements trained on it keep working (frozen manifest, own weights; link set NULL)."""
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_delete=True)
            images = await self.images_of(session, ds.id)
            info = dataset_info(ds, len(images))
            await tombstone(self.db, session, [i.blob_hash for i in images])
            await session.execute(delete(Dataset).where(Dataset.id == ds.id))  # images cascade in the DB
        await self.collector.collect()
        return info

    async def gc_blobs(self) -> int:
        """Delete blob files that no image, Element or generation refers to any more; returns how many."""
        return await self.collector.collect()

    # ---- images ----------------------------------------------------------------------------------------------

    async def add_images(self, actor: Actor, name: str, files: Sequence[IncomingFile], *, source: str = "upload",
                         on_progress: ProgressFn | None = None) -> AddReport:
        """Add a batch of images; each file gets a result (added with its index, or refused with a reason)."""
        async with self._heavy():
            return await _add_images(self, actor, name, files, source=source, on_progress=on_progress)

    async def import_zip(self, actor: Actor, name: str, data: bytes | Path | IO[bytes],
                         on_progress: ProgressFn | None = None) -> AddReport:
        """Add the images of a .zip (bytes, a path, or an open seekable file, which is closed afterwards);
        ``<name>.txt`` next to an image is its caption (kohya style).

        Entries are read one at a time as they are decoded, and not at all once the dataset is full.
        """
        from storage.images.archive import ZipLimits

        async with self.db.read() as session:  # fail fast (before reading the archive) on a wrong name
            await self.load_owned(session, actor, name)
        async with self._heavy():
            reader = await asyncio.to_thread(ZipLimits.from_settings(self.settings).open, data)
            try:
                files = [LazyFile(e.name, partial(reader.read, e), e.caption or None) for e in reader.entries]
                report = await _add_images(self, actor, name, files, source="zip", on_progress=on_progress)
            finally:
                reader.close()
        await self._groups_from_kohya_folders(actor, name, [e.name for e in reader.entries], report)
        refused = [FileResult(n, "refused", reason=r, code="archive")
                   for n, r in [*reader.refused, *reader.orphan_captions]]
        return AddReport(report.dataset, report.files + refused, report.image_count)

    async def _images_by_number(self, session: AsyncSession, ds: Dataset, wanted: Sequence[int]
                                ) -> tuple[list[DatasetImage], dict[int, DatasetImage]]:
        """The dataset's images and those numbered ``wanted`` by number; InvalidInput naming any that is missing."""
        images = await self.images_of(session, ds.id)
        by_pos = {i.position: i for i in images}
        missing = [i for i in wanted if i not in by_pos]
        if missing:
            raise InvalidInput(
                f"“{ds.name}” has no image {', '.join(f'#{m}' for m in missing[:10])} "
                f"(it has {plural(len(images), 'image')}).",
                "Check the numbers with /dataset show.")
        return images, by_pos

    @asynccontextmanager
    async def export_zip(self, actor: Actor, name: str, *, max_bytes: int | None = None) -> AsyncIterator[Path]:
        """The dataset as a .zip in a temporary file (deleted when the block ends): ``0001.jpg`` / ``0001.png`` …
        plus ``0001.txt`` captions (the format import_zip reads).

        Built one image at a time; when the archive would be larger than ``max_bytes`` (e.g. Discord's upload
        limit) :class:`InvalidInput` says so before any image is fetched.
        """
        from storage.images.archive_writer import ZIP_ENTRY_OVERHEAD, ZipWriter

        info = await self.get(actor, name)
        images = info.images or []
        size = 22 + sum(i.byte_size + 2 * ZIP_ENTRY_OVERHEAD + 2 * 12 + len(i.caption.encode()) for i in images)
        if max_bytes is not None and size > max_bytes:
            raise InvalidInput(
                f"The export of “{info.name}” would be {human_bytes(size)}, over the {human_bytes(max_bytes)} "
                "upload limit here.",
                f"Ask the bot's host to run `atelier dataset export \"{info.name}\"`, or split the dataset.")
        self.settings.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=self.settings.temp_dir)
        os.close(fd)
        path = Path(tmp)
        try:
            async with self._heavy():
                with ZipWriter(path) as out:
                    for image in images:
                        local = await self.blobs.open_local(image.blob_hash)
                        await asyncio.to_thread(out.add_file, f"{image.index:04d}", local, image.caption)
            yield path
        finally:  # one unlink, which must run even when the task is being cancelled (no await here)
            path.unlink(missing_ok=True)  # noqa: ASYNC240

    def _heavy(self) -> Any:
        return heavy_slot(self.settings.max_concurrent_heavy_tasks)

    async def storage_use(self, actor: Actor) -> StorageUse:
        """Bytes the actor's datasets hold, against their quota (``ATELIER_MEMBER_STORAGE_BYTES``)."""
        async with self.db.read() as session:
            used = await member_bytes(session, actor.user_id)
        return StorageUse(used, None if actor.is_admin else self.settings.member_storage_bytes)

    async def remove_images(self, actor: Actor, name: str, indices: Sequence[int]) -> list[ImageInfo]:
        """Remove images by index; the rest are renumbered 1..n in order. All or nothing."""
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            raise InvalidInput("No images given.", "Name the images by number, e.g. 3 or 2,5,7.")
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_update=True)
            images, by_pos = await self._images_by_number(session, ds, wanted)
            removed = [by_pos[i] for i in wanted]
            gone = {r.id for r in removed}
            await session.execute(delete(DatasetImage).where(DatasetImage.id.in_(gone)))
            for new_pos, img in enumerate((i for i in images if i.id not in gone), start=1):
                if img.position != new_pos:
                    await session.execute(update(DatasetImage).where(DatasetImage.id == img.id)
                                          .values(position=new_pos))
            await tombstone(self.db, session, [r.blob_hash for r in removed])
            ds.updated_at = utcnow()
            infos = [image_info(r) for r in removed]
        await self.collector.collect()
        return infos

    async def set_caption(self, actor: Actor, name: str, index: int, caption: str) -> ImageInfo:
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name, for_update=True)
            img = (await session.execute(select(DatasetImage).where(
                DatasetImage.dataset_id == ds.id, DatasetImage.position == int(index)))).scalar_one_or_none()
            if img is None:
                n = await self.count_images(session, ds.id)
                raise InvalidInput(f"“{ds.name}” has no image #{index} (it has {n}).",
                                   "Check the numbers with /dataset show.")
            img.caption = clean_caption(caption)
            ds.updated_at = utcnow()
            await session.flush()
            return image_info(img)

    # ---- checks and previews ---------------------------------------------------------------------------------

    async def lint(self, actor: Actor, name: str, *, category: str | None = None,
                   base_model: str | None = None) -> list[Finding]:
        """Findings with suggested fixes before any GPU time is spent."""
        from storage.images.lint import ImageFacts, lint_dataset

        family = None
        if base_model:
            family = known_base(self.settings, base_model).family.value
        if category is not None:
            parse_category(category)
        info = await self.get(actor, name)
        facts = [ImageFacts(i.index, i.width, i.height, i.phash, i.caption) for i in info.images or []]
        return lint_dataset(facts, category=category.lower() if category else None, family=family,
                            limits=self.settings.image_limits,
                            near_duplicate_distance=self.settings.near_duplicate_distance)

    async def contact_sheet(self, actor: Actor, name: str) -> bytes:
        """A PNG of numbered thumbnails of the whole dataset (rendered off the event loop, one image at a time)."""
        from storage.images.contact_sheet import render_contact_sheet

        info = await self.get(actor, name)
        images = info.images or []
        title = f"{info.name} — {plural(info.image_count, 'image')}"
        async with self._heavy():
            paths = [await self.blobs.open_local(i.blob_hash) for i in images]
            items = [(i.index, p, i.caption) for i, p in zip(images, paths, strict=True)]
            return await asyncio.to_thread(render_contact_sheet, items, title=title)

    # ---- DM upload sessions ----------------------------------------------------------------------------------

    async def start_upload_session(self, actor: Actor, name: str, *, minutes: int = 15) -> DatasetInfo:
        """From now on, images the actor DMs to the bot go into ``name`` (until ended or expired)."""
        async with self.db.transaction() as session:
            ds = await self.load_owned(session, actor, name)
            expires = utcnow() + timedelta(minutes=min(max(1, minutes), MAX_UPLOAD_MINUTES))
            stmt = dialect_insert(self.db, UploadSession).values(
                user_id=actor.user_id, dataset_id=ds.id, expires_at=expires, created_at=utcnow())
            await session.execute(stmt.on_conflict_do_update(
                index_elements=[UploadSession.user_id], set_={"dataset_id": ds.id, "expires_at": expires}))
            return dataset_info(ds, await self.count_images(session, ds.id))

    async def upload_session(self, actor: Actor) -> DatasetInfo | None:
        """The dataset of the actor's open upload session, or None."""
        async with self.db.read() as session:
            row = (await session.execute(
                select(Dataset).join(UploadSession, UploadSession.dataset_id == Dataset.id).where(
                    UploadSession.user_id == actor.user_id, UploadSession.expires_at > utcnow(),
                    Dataset.owner_id == actor.user_id))).scalar_one_or_none()
            if row is None:
                return None
            return dataset_info(row, await self.count_images(session, row.id))

    async def end_upload_session(self, actor: Actor) -> bool:
        async with self.db.transaction() as session:
            result = await session.execute(delete(UploadSession).where(UploadSession.user_id == actor.user_id))
            return result.rowcount > 0

    async def take_timed_out_upload_sessions(self, limit: int = 100) -> list[TimedOutUpload]:
        """End upload sessions whose time is up and return them, so a front end can tell their owners (each is
        returned once: the row is deleted in the same transaction)."""
        async with self.db.transaction() as session:
            rows = (await session.execute(
                select(UploadSession, Dataset, User.external_id)
                .join(Dataset, Dataset.id == UploadSession.dataset_id).join(User, User.id == UploadSession.user_id)
                .where(UploadSession.expires_at <= utcnow()).order_by(UploadSession.expires_at).limit(limit)
                .with_for_update(skip_locked=True, of=UploadSession)  # two bots never announce one twice
            )).all()
            taken = []
            for up, ds, external_id in rows:
                gone = await session.execute(delete(UploadSession).where(
                    UploadSession.user_id == up.user_id, UploadSession.expires_at == up.expires_at))
                if gone.rowcount:  # not renewed or taken by another bot meanwhile
                    taken.append(TimedOutUpload(external_id, ds.name, await self.count_images(session, ds.id),
                                                up.expires_at))
            return taken
