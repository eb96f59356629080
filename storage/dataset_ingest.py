"""Adding a batch of images to a dataset: decode off-loop → blobs → one transaction → per-file results.

Duplicates are decided twice: once against a read snapshot (so refused files are never written to the blob
store), then authoritatively inside the write transaction (another upload may have landed meanwhile). Blobs
written for files the transaction then refuses get a tombstone, so nothing is left behind.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage.actors import Actor
from storage.dataset_views import AddReport, FileResult, IncomingFile, LazyFile, ProgressFn
from storage.db.blob_gc import tombstone
from storage.db.models import DatasetImage, ImageSource, utcnow
from storage.disk_quota import StorageUse, full_reason, member_bytes
from storage.errors import InvalidInput
from storage.images.ingest import (
    ImageRejected,
    IngestLimits,
    NormalizedImage,
    find_near_duplicate,
    normalize_many,
)
from storage.names import clean_caption, display_filename
from storage.quotas import QuotaService

if TYPE_CHECKING:
    from storage.datasets import DatasetService

log = logging.getLogger(__name__)
DECODE_CHUNK = 8  # files decoded per step: bounds memory and gives progress updates


@dataclass
class _Known:
    """Images already in the dataset (or accepted earlier in this batch), for duplicate checks."""

    by_hash: dict[str, str] = field(default_factory=dict)  # sha256 → label
    phashes: list[tuple[str, str]] = field(default_factory=list)  # (label, phash)

    def add(self, label: str, sha: str, phash: str) -> None:
        self.by_hash.setdefault(sha, label)
        self.phashes.append((label, phash))

    def refusal(self, img: NormalizedImage, max_distance: int) -> FileResult | None:
        if (label := self.by_hash.get(img.sha256)) is not None:
            return FileResult("", "refused", reason=f"Duplicate of {label}: the same picture is already there.",
                              hint="Nothing to do — it is in the dataset once.", code="duplicate")
        if (label := find_near_duplicate(img.phash, self.phashes, max_distance)) is not None:
            return FileResult("", "refused", reason=f"Near-duplicate of {label}: it looks almost the same.",
                              hint="Near-identical images make the Element overfit; keep the better one "
                                   "(remove the other first if you prefer this one).", code="near_duplicate")
        return None


def _source(f: IncomingFile | LazyFile) -> bytes | Callable[[], bytes]:
    return f.read if isinstance(f, LazyFile) else f.data


def _label(position: int, name: str) -> str:
    return f"#{position} ({name})" if name else f"#{position}"


# Before the transaction, images of this batch have no number yet: refer to them by a placeholder that is
# replaced by "#<n> (<name>)" once the batch is in.
_PENDING = re.compile(r"@@(\d+)@@")


def _resolve_pending(result: FileResult, results: list[FileResult | None], names: list[str]) -> FileResult:
    def sub(m: re.Match[str]) -> str:
        other = results[int(m.group(1))]
        if other is not None and other.index is not None:
            return _label(other.index, names[int(m.group(1))])
        return f"{names[int(m.group(1))]} (in this upload)"

    if "@@" not in result.reason:
        return result
    return FileResult(result.filename, result.status, result.index, _PENDING.sub(sub, result.reason),
                      result.hint, result.warnings, result.code)


def _refused(filename: str, template: FileResult) -> FileResult:
    return FileResult(filename, "refused", reason=template.reason, hint=template.hint, code=template.code)


def _no_room(filename: str, use: StorageUse) -> FileResult:
    reason, hint = full_reason(use)
    return FileResult(filename, "refused", reason=reason, hint=hint, code="storage_full")


def _full(filename: str, capacity: int) -> FileResult:
    return FileResult(filename, "refused",
                      reason=f"The dataset is full ({capacity} images, the most any base model trains on).",
                      hint="Remove some images, or start another dataset.", code="full")


async def add_images(svc: DatasetService, actor: Actor, name: str, files: Sequence[IncomingFile | LazyFile], *,
                     source: str = "upload", on_progress: ProgressFn | None = None) -> AddReport:
    """See :meth:`DatasetService.add_images`; a :class:`LazyFile` is read only when its turn comes, and not at
    all once the dataset (or the member's storage) is full."""
    try:
        src = ImageSource(source).value
    except ValueError:
        raise InvalidInput(f"Unknown image source {source!r}.", "Use upload, generated or zip.") from None
    files = list(files)
    names = [display_filename(f.filename) for f in files]
    total = len(files)
    limits = IngestLimits.from_settings(svc.settings)
    capacity = svc.capacity
    results: list[FileResult | None] = [None] * total

    # 1. Snapshot of what is there (also: NotFound before any decoding work).
    async with svc.db.read() as session:
        ds = await svc.load_owned(session, actor, name)
        known = _Known()
        for img in await svc.images_of(session, ds.id):
            known.add(_label(img.position, img.original_name), img.blob_hash, img.phash)
        room = capacity - len(known.phashes)
        quota = None if actor.is_admin else svc.settings.member_storage_bytes
        stored = await member_bytes(session, actor.user_id)

    # 2. Decode in small chunks off the event loop; keep only tentatively accepted images in memory.
    # A step never decodes more files than still fit, so a zip is read no further than the dataset's room.
    accepted: list[tuple[int, NormalizedImage]] = []
    done = start = 0
    while start < total:
        left = room - len(accepted)
        step = min(DECODE_CHUNK, left) if left > 0 else DECODE_CHUNK
        chunk = list(range(start, min(total, start + step)))
        start += len(chunk)
        if len(accepted) >= room:  # no room left: refuse the rest without decoding them
            for i in chunk:
                results[i] = _full(names[i], capacity)
        elif quota is not None and stored >= quota:
            for i in chunk:
                results[i] = _no_room(names[i], StorageUse(stored, quota))
        else:
            decoded = await normalize_many([_source(files[i]) for i in chunk], limits)
            for i, res in zip(chunk, decoded, strict=True):
                if isinstance(res, ImageRejected):
                    results[i] = FileResult(names[i], "refused", reason=res.message, hint=res.hint, code=res.reason)
                elif (dup := known.refusal(res, limits.near_duplicate_distance)) is not None:
                    results[i] = _refused(names[i], dup)
                elif len(accepted) >= room:
                    results[i] = _full(names[i], capacity)
                elif quota is not None and stored + res.byte_size > quota:
                    results[i] = _no_room(names[i], StorageUse(stored, quota))
                else:
                    stored += res.byte_size
                    accepted.append((i, res))
                    known.add(f"@@{i}@@", res.sha256, res.phash)
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, total)

    # 3. Files first.
    written = [await svc.blobs.put_bytes(img.data) for _, img in accepted]

    # 4. One transaction: re-check against the current state, insert, tombstone what was not used.
    inserted: dict[str, bytes] = {}
    try:
        async with svc.db.transaction() as session:
            await svc.db.hold_blob_references(session)
            ds = await svc.load_owned(session, actor, name, for_update=True)
            await QuotaService.lock_member(session, actor)  # adds to two datasets of one member: one at a time
            stored = await member_bytes(session, actor.user_id)
            current = await svc.images_of(session, ds.id)
            known = _Known()
            for img in current:
                known.add(_label(img.position, img.original_name), img.blob_hash, img.phash)
            position = max((img.position for img in current), default=0)
            for i, img in accepted:
                if (dup := known.refusal(img, limits.near_duplicate_distance)) is not None:
                    results[i] = _refused(names[i], dup)
                    continue
                if len(known.phashes) >= capacity:
                    results[i] = _full(names[i], capacity)
                    continue
                if quota is not None and stored + img.byte_size > quota:
                    results[i] = _no_room(names[i], StorageUse(stored, quota))
                    continue
                stored += img.byte_size
                position += 1
                caption = clean_caption(files[i].caption) if files[i].caption else ""
                session.add(DatasetImage(
                    dataset_id=ds.id, position=position, blob_hash=img.sha256, byte_size=img.byte_size,
                    width=img.width, height=img.height, phash=img.phash, caption=caption, source=src,
                    original_name=names[i],
                ))
                known.add(_label(position, names[i]), img.sha256, img.phash)
                inserted[img.sha256] = img.data
                results[i] = FileResult(names[i], "added", index=position, warnings=list(img.warnings))
            if inserted:
                ds.updated_at = utcnow()
            await tombstone(svc.db, session, [h for h in written if h not in inserted])
            count = len(current) + len(inserted)
    except BaseException:
        # The rows never landed: the blobs we wrote may now be unreferenced.
        try:
            async with svc.db.transaction() as session:
                await tombstone(svc.db, session, written)
            await svc.collector.collect()
        except Exception:  # the original error matters more; a leftover blob is only wasted space
            log.warning("could not tombstone blobs of a failed add", exc_info=True)
        raise

    # 5. A collector may have deleted a file between our write and our commit: put it back.
    for h, data in inserted.items():
        if not await svc.blobs.exists(h):
            await svc.blobs.put_bytes(data)
    if len(inserted) < len(written):
        await svc.collector.collect()
    final = [_resolve_pending(r, results, names) for r in results if r is not None]
    return AddReport(ds.name, final, count)
