"""Download Discord attachments at once (CDN URLs expire), capped in size, and sort them into images and .zips.

Size caps: an image may be at most ``min(the interaction's attachment_size_limit, ATELIER_MAX_UPLOAD_BYTES)``, a
.zip at most ``min(attachment_size_limit, ATELIER_MAX_ZIP_BYTES)``. The size Discord reports is checked before
downloading, and the download itself stops as soon as it passes the cap (a reported size is not trusted).
Whether a file is a .zip is decided by its content (the ``PK`` signature), never by its name; everything else
is an image candidate that :mod:`storage.images.ingest` validates by content.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

import aiohttp

from bot.render import human_bytes
from storage.dataset_views import FileResult, IncomingFile
from storage.names import display_filename
from storage.settings import Settings

log = logging.getLogger("atelier.bot")

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty archive
ZIP_CONTENT_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-zip"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp")
_CHUNK = 64 * 1024
_CONCURRENCY = 4
_SPOOL_IN_MEMORY = 1024 * 1024  # archives larger than this go to a temporary file while downloading


class AttachmentLike(Protocol):
    """What :class:`discord.Attachment` offers that we use (also satisfied by test doubles of the CDN)."""

    filename: str
    size: int
    url: str
    content_type: str | None


@dataclass(frozen=True)
class SizeCaps:
    image: int
    archive: int

    @classmethod
    def for_upload(cls, settings: Settings, interaction_limit: int | None = None) -> SizeCaps:
        """Caps for one interaction (``interaction.filesize_limit``) or, with None, for a DM upload."""
        limit = interaction_limit if interaction_limit and interaction_limit > 0 else None
        image = settings.max_upload_bytes if limit is None else min(limit, settings.max_upload_bytes)
        archive = settings.max_zip_bytes if limit is None else min(limit, settings.max_zip_bytes)
        return cls(image=image, archive=archive)


@dataclass
class Archive:
    """A downloaded .zip: spooled to an anonymous temporary file past 1 MiB (gone when closed), so a large archive
    is never held in memory; :meth:`storage.datasets.DatasetService.import_zip` reads it one entry at a time."""

    filename: str
    file: IO[bytes]

    def close(self) -> None:
        self.file.close()


@dataclass
class Downloaded:
    """Attachments sorted by content: images to ingest, archives to import, and files refused already.
    Close it (:meth:`close`) when done: archives are temporary files."""

    images: list[IncomingFile] = field(default_factory=list)
    archives: list[Archive] = field(default_factory=list)
    refused: list[FileResult] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # file names in the order they were attached

    @property
    def empty(self) -> bool:
        return not (self.images or self.archives or self.refused)

    def close(self) -> None:
        for archive in self.archives:
            archive.close()


def is_zip(data: bytes) -> bool:
    return data[:4] in ZIP_SIGNATURES


def looks_like_zip(att: AttachmentLike) -> bool:
    """A hint only (used to pick the size cap before downloading); content decides afterwards."""
    ctype = (att.content_type or "").split(";")[0].strip().lower()
    return att.filename.lower().endswith(".zip") or ctype in ZIP_CONTENT_TYPES


def looks_like_image(att: AttachmentLike) -> bool:
    """Whether a message attachment is worth offering to add (image or .zip by type or name)."""
    ctype = (att.content_type or "").split(";")[0].strip().lower()
    return ctype.startswith("image/") or att.filename.lower().endswith(IMAGE_EXTENSIONS) or looks_like_zip(att)


def too_large(name: str, size: int | None, cap: int, *, archive: bool) -> FileResult:
    """The refusal for a file over ``cap`` (``size`` None: known only to be larger, the download was cut)."""
    what = "a .zip" if archive else "an image"
    shown = human_bytes(size) if size is not None else f"over {human_bytes(cap)}"
    return FileResult(name, "refused", reason=f"{name} is {shown}; the limit for {what} here is "
                                              f"{human_bytes(cap)}.",
                      hint=("Split the archive into smaller .zip files." if archive else
                            "Resize or re-save it (e.g. JPEG at quality 90) and try again."),
                      code="too_large")


def _download_failed(name: str, exc: BaseException) -> FileResult:
    log.info("attachment download failed for %s: %r", name, exc)
    return FileResult(name, "refused", reason=f"I couldn't download {name} from Discord.",
                      hint="Discord may have removed it; upload it again.", code="download")


class _TooLarge(Exception):
    def __init__(self, declared: int | None) -> None:
        super().__init__(declared)
        self.declared = declared  # the size the server announced, if it did


class AttachmentDownloader:
    """Owns one HTTP session for attachment downloads; start with :meth:`start`, close with :meth:`aclose`."""

    def __init__(self, *, timeout_s: float = 120.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=15)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, attachments: Sequence[AttachmentLike], caps: SizeCaps) -> Downloaded:
        """Download every attachment (a few at a time); each ends up in exactly one list of the result."""
        await self.start()
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one(att: AttachmentLike) -> IncomingFile | FileResult:
            async with sem:
                return await self._one(att, caps)

        results = await asyncio.gather(*(one(a) for a in attachments))
        out = Downloaded(order=[display_filename(a.filename) for a in attachments])
        for res in results:
            if isinstance(res, FileResult):
                out.refused.append(res)
            elif isinstance(res, Archive):
                out.archives.append(res)
            elif is_zip(res.data):  # a .zip under another name (small: it was downloaded under the image cap)
                out.archives.append(Archive(res.filename, io.BytesIO(res.data)))
            else:
                out.images.append(res)
        return out

    async def _one(self, att: AttachmentLike, caps: SizeCaps) -> IncomingFile | Archive | FileResult:
        name = display_filename(att.filename)
        archive_hint = looks_like_zip(att)
        cap = caps.archive if archive_hint else caps.image
        if att.size > cap:  # Discord's own figure: refuse without downloading anything
            return too_large(name, att.size, cap, archive=archive_hint)
        if archive_hint:
            return await self._archive(att, name, caps)
        try:
            data = await self._download(att.url, cap)
        except _TooLarge as exc:
            return too_large(name, exc.declared, cap, archive=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _download_failed(name, exc)
        # decided by content: a .zip named .png is still an archive; a "cat.zip" that is not one is checked as
        # an image (and refused by ingest unless it really is one) under the image cap
        if not is_zip(data) and len(data) > caps.image:
            return too_large(name, len(data), caps.image, archive=False)
        return IncomingFile(name, data)

    async def _archive(self, att: AttachmentLike, name: str, caps: SizeCaps) -> IncomingFile | Archive | FileResult:
        """Download what looks like a .zip into a spooled temporary file; content decides what it is."""
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 — closed by the caller
        try:
            await self._download(att.url, caps.archive, spool)
            spool.seek(0)
            if spool.read(4) in ZIP_SIGNATURES:
                spool.seek(0)
                return Archive(name, spool)
            size = spool.seek(0, io.SEEK_END)
            if size > caps.image:  # named .zip but not one: judged as an image, under the image cap
                spool.close()
                return too_large(name, size, caps.image, archive=False)
            spool.seek(0)
            data = spool.read()
            spool.close()
            return IncomingFile(name, data)
        except _TooLarge as exc:
            spool.close()
            return too_large(name, exc.declared, caps.archive, archive=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            spool.close()
            return _download_failed(name, exc)
        except BaseException:
            spool.close()
            raise

    async def _download(self, url: str, cap: int, spool: IO[bytes] | None = None) -> bytes | None:
        """The body (at most ``cap`` bytes), or None after writing it to ``spool`` when one is given."""
        assert self._session is not None
        async with self._session.get(url) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status)
            declared = resp.content_length
            if declared is not None and declared > cap:
                raise _TooLarge(declared)
            buf, size = bytearray(), 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise _TooLarge(None)
                if spool is not None:
                    await asyncio.to_thread(spool.write, chunk)
                else:
                    buf += chunk
            return None if spool is not None else bytes(buf)
