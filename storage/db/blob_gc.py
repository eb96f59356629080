"""Blob garbage collection: rows (and a tombstone) first, files afterwards, only when nothing refers to them.

Blobs are content-addressed and shared (the same picture in two datasets, an Element's frozen manifest pointing
at dataset images), so deleting a row never deletes a file directly. Instead the deleting transaction writes a
:class:`BlobTombstone` for each hash that lost a reference; :meth:`BlobCollector.collect` later deletes the
file if no row refers to it any more. A crash in between leaves a tombstone for the next run, never a row
pointing at a missing file.

Race with a concurrent upload of the same bytes: the collector holds the write lock (SQLite) / the exclusive blob
advisory lock (PostgreSQL) while it checks references and deletes; writers take the shared lock, and re-check
that their files exist after committing (see ``DatasetService.add_images``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import String, cast, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db.blobs import BlobStore, sweep_files
from storage.db.engine import Database, dialect_insert
from storage.db.models import BlobTombstone, DatasetImage, Element, Generation, Job, JobStatus, utcnow

log = logging.getLogger(__name__)
_CHUNK = 100
_HASH = re.compile(r"[0-9a-f]{64}")


async def tombstone(db: Database, session: AsyncSession, hashes: Iterable[str | None]) -> None:
    """Record hashes that may have become unreferenced (inside the deleting transaction)."""
    unique = sorted({h for h in hashes if h})
    for i in range(0, len(unique), _CHUNK):
        rows = [{"blob_hash": h, "created_at": utcnow()} for h in unique[i:i + _CHUNK]]
        await session.execute(dialect_insert(db, BlobTombstone).values(rows)
                              .on_conflict_do_nothing(index_elements=[BlobTombstone.blob_hash]))


def element_blobs(element: Element) -> list[str]:
    """Every blob an Element row refers to (weights, exports, artifacts, frozen manifest)."""
    found = [element.weights_blob, element.kohya_blob, element.metadata_blob]
    found += hashes_in(element.artifacts)
    found += [item.get("blob") for item in (element.manifest or []) if isinstance(item, dict)]
    return [h for h in found if isinstance(h, str) and h]


def hashes_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if _HASH.fullmatch(value) else []
    if isinstance(value, dict):
        return [h for v in value.values() for h in hashes_in(v)]
    if isinstance(value, list | tuple):
        return [h for v in value for h in hashes_in(v)]
    return []


async def referenced(session: AsyncSession, hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` some row still refers to."""
    todo = sorted(set(hashes))
    found: set[str] = set()
    for i in range(0, len(todo), _CHUNK):
        chunk = todo[i:i + _CHUNK]
        found.update((await session.execute(
            select(DatasetImage.blob_hash).where(DatasetImage.blob_hash.in_(chunk)))).scalars())
        for col in (Element.weights_blob, Element.kohya_blob, Element.metadata_blob):
            found.update((await session.execute(select(col).where(col.in_(chunk)))).scalars())
        # JSON columns: a text match narrows the rows, then the decoded values decide.
        wanted = set(chunk)
        for col in (Element.artifacts, Element.manifest, Generation.images, Job.payload):
            cond = or_(*(cast(col, String).contains(h) for h in chunk))
            stmt = select(col).where(cond)
            if col is Job.payload:  # a queued or running job still needs its images and weights
                stmt = stmt.where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
            for value in (await session.execute(stmt)).scalars():
                found.update(h for h in hashes_in(value) if h in wanted)
    return found


@dataclass(frozen=True)
class SweepReport:
    blobs_deleted: int
    temp_files_deleted: int


class BlobCollector:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    async def collect(self, *, batch: int = 200) -> int:
        """Delete the files of tombstoned blobs nothing refers to; returns how many files were deleted.

        Works in short transactions of ``batch`` tombstones; a file that cannot be deleted keeps its tombstone
        for the next run.
        """
        deleted = 0
        failed: set[str] = set()
        while True:
            async with self.db.transaction() as session:
                await self.db.hold_blob_references(session, exclusive=True)
                query = select(BlobTombstone.blob_hash).order_by(BlobTombstone.created_at, BlobTombstone.blob_hash)
                if failed:
                    query = query.where(BlobTombstone.blob_hash.not_in(failed))
                candidates = list((await session.execute(query.limit(batch))).scalars())
                if not candidates:
                    return deleted
                keep = await referenced(session, candidates)
                for h in candidates:
                    if h in keep:
                        continue
                    try:
                        await self.blobs.delete(h)
                        deleted += 1
                    except OSError:
                        log.warning("could not delete blob %s; will retry later", h, exc_info=True)
                        failed.add(h)
                # Referenced blobs simply lose their tombstone (a later delete writes a new one).
                done = [h for h in candidates if h not in failed]
                if done:
                    await session.execute(delete(BlobTombstone).where(BlobTombstone.blob_hash.in_(done)))

    async def sweep(self, *, grace_seconds: float, temp_dirs: Iterable[Path] = ()) -> SweepReport:
        """The periodic full sweep (worker cron): delete every stored blob older than ``grace_seconds`` that no
        row refers to — rows of datasets, Elements, generations and the payloads of queued or running jobs —
        plus temp files older than that in the blob store and in ``temp_dirs``.

        Catches what tombstones cannot: a blob kept because a queued job still needed it when its row was
        deleted, files left by a crash between a write and its commit.
        """

        cutoff = time.time() - grace_seconds
        old = await asyncio.to_thread(lambda: list(self.blobs.iter_hashes_older_than_sync(cutoff)))
        deleted = 0
        for i in range(0, len(old), _CHUNK):
            chunk = old[i:i + _CHUNK]
            async with self.db.transaction() as session:
                await self.db.hold_blob_references(session, exclusive=True)
                keep = await referenced(session, chunk)
                for h in chunk:
                    if h not in keep:
                        try:
                            await self.blobs.delete(h)
                            deleted += 1
                        except OSError:
                            log.warning("could not delete blob %s; the next sweep retries", h, exc_info=True)
        temps = await asyncio.to_thread(self.blobs.sweep_temp_files, grace_seconds)
        for d in temp_dirs:
            temps += await asyncio.to_thread(lambda d=d: sweep_files(Path(d).glob("*"), grace_seconds))
        if deleted or temps:
            log.info("storage sweep: %d unreferenced blobs and %d stale temp files deleted", deleted, temps)
        return SweepReport(deleted, temps)
