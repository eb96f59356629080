"""Dataset archives: read a kohya-style .zip (``cat.png`` + ``cat.txt``) safely, and build one for export.

Reading never extracts to disk and never trusts the archive: names that would escape a folder (zip slip) are
refused per entry, sizes in the headers are ignored in favour of a running byte count while streaming each
entry (so a zip bomb stops after at most ``max_entry_bytes``), the entry count is read from the end record before
the central directory is parsed, and encrypted entries are refused. Which entries are images is decided later,
by content, in :mod:`storage.ingest`; here every file that is not a caption or OS clutter is an image candidate.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from storage.errors import InvalidInput
from storage.names import clean_caption, clean_text

if TYPE_CHECKING:
    from storage.settings import Settings

CAPTION_EXTS = (".txt", ".caption")
MAX_CAPTION_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# Below this size the compression ratio is not checked: short captions of repeated tags compress very well.
_RATIO_FLOOR = 1024 * 1024
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
_FIXED_TIME = (2000, 1, 1, 0, 0, 0)
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


class ArchiveRejected(InvalidInput):
    """The archive as a whole cannot be used (not a zip, too many files, too large)."""

    code = "archive_rejected"


@dataclass(frozen=True)
class ZipImage:
    name: str  # path inside the archive, cleaned for display (never use it as a file path)
    data: bytes
    caption: str  # cleaned; "" when there is no caption file


@dataclass
class ZipContents:
    entries: list[ZipImage] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason a person understands)


class _EntryRefused(Exception):
    pass


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 500
    max_total_uncompressed: int = 1024 * 1024 * 1024
    max_entry_bytes: int = 25 * 1024 * 1024
    max_ratio: float = 200.0
    max_archive_bytes: int | None = 200 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        return cls(
            max_entries=settings.max_zip_entries,
            max_total_uncompressed=settings.max_zip_uncompressed_bytes,
            max_entry_bytes=settings.max_upload_bytes,
            max_archive_bytes=settings.max_zip_bytes,
        )

    def read(self, source: bytes | Path) -> ZipContents:
        return read_zip(
            source, max_entries=self.max_entries, max_total_uncompressed=self.max_total_uncompressed,
            max_entry_bytes=self.max_entry_bytes, max_ratio=self.max_ratio,
            max_archive_bytes=self.max_archive_bytes,
        )

    async def read_async(self, source: bytes | Path) -> ZipContents:
        """:meth:`read` in a worker thread (decompression is CPU work)."""
        return await asyncio.to_thread(self.read, source)


def read_zip(
    source: bytes | Path,
    *,
    max_entries: int,
    max_total_uncompressed: int,
    max_entry_bytes: int,
    max_ratio: float = 200.0,
    max_archive_bytes: int | None = None,
) -> ZipContents:
    """Images and their captions from a zip; per-entry problems go to ``refused``, archive-level ones raise
    :class:`ArchiveRejected`. Entries come back in natural name order (``2.png`` before ``10.png``)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        with io.BytesIO(bytes(source)) as fp:
            return _read(fp, max_entries, max_total_uncompressed, max_entry_bytes, max_ratio, max_archive_bytes)
    with open(source, "rb") as fp:
        return _read(fp, max_entries, max_total_uncompressed, max_entry_bytes, max_ratio, max_archive_bytes)


def _read(fp: IO[bytes], max_entries: int, max_total: int, max_entry: int, max_ratio: float,
          max_archive: int | None) -> ZipContents:
    size = fp.seek(0, io.SEEK_END)
    if max_archive is not None and size > max_archive:
        raise ArchiveRejected(
            f"The archive is too large ({size / 2**20:.0f} MB; the limit is {max_archive / 2**20:.0f} MB).",
            "Split it into smaller zips.",
        )
    declared = _declared_entry_count(fp, size)
    if declared is None:
        raise ArchiveRejected("This file is not a .zip archive (or it is damaged).",
                              "Create the zip again (e.g. right-click the folder → Compress) and upload it.")
    budget = max_entries * 2 + 64  # room for folders and __MACOSX twins before we even parse names
    if declared > budget:
        raise _too_many(declared, max_entries)
    try:
        fp.seek(0)
        zf = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise ArchiveRejected("The .zip archive is damaged and can't be opened.",
                              "Create the zip again and upload it.") from None
    with zf:
        return _collect(zf, max_entries, max_total, max_entry, max_ratio)


def _collect(zf: zipfile.ZipFile, max_entries: int, max_total: int, max_entry: int,
             max_ratio: float) -> ZipContents:
    out = ZipContents()
    files: list[zipfile.ZipInfo] = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        problem = _unsafe_name(info.orig_filename)  # before the junk check: ".." looks like a dotfile
        if problem:
            out.refused.append((_shown(info.orig_filename), problem))
        elif not _is_junk(info.filename):
            files.append(info)
    if len(files) > max_entries:
        raise _too_many(len(files), max_entries)
    files.sort(key=lambda i: _natural_key(i.filename))

    captions: dict[str, tuple[str, str]] = {}  # key → (shown name, caption)
    images: list[tuple[str, str, bytes]] = []  # (key, shown name, data)
    seen_keys: set[str] = set()
    total = 0
    for info in files:
        shown = _shown(info.filename)
        stem, ext = _split_ext(info.filename)
        key = stem.casefold()
        is_caption = ext in CAPTION_EXTS
        if not is_caption:
            seen_keys.add(key)
        try:
            if total >= max_total:
                raise _EntryRefused(_over_total(max_total))
            data = _read_entry(zf, info, is_caption, max_entry, max_ratio, max_total - total, max_total)
        except _EntryRefused as exc:
            out.refused.append((shown, str(exc)))
            continue
        total += len(data)
        if is_caption:
            captions[key] = (shown, clean_caption(_decode_caption(data)))
        else:
            images.append((key, shown, data))

    used: set[str] = set()
    for key, shown, data in images:
        caption = captions.get(key, ("", ""))[1]
        used.add(key)
        out.entries.append(ZipImage(name=shown, data=data, caption=caption))
    for key, (shown, _) in captions.items():
        if key not in used and key not in seen_keys:
            out.refused.append((shown, "caption file with no image of the same name next to it"))
    return out


def _decode_caption(data: bytes) -> str:
    """UTF-8 (with or without BOM), or UTF-16 when it starts with a UTF-16 BOM (Windows Notepad "Unicode")."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _over_total(max_total: int) -> str:
    return f"skipped: the archive unpacks to more than {max_total / 2**20:.0f} MB in total; split it into smaller zips"


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, is_caption: bool, max_entry: int,
                max_ratio: float, total_left: int, max_total: int) -> bytes:
    """Stream one entry with a running byte cap; header sizes are never trusted."""
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise _EntryRefused("a symbolic link, not a file; zip the files themselves")
    if info.flag_bits & 0x1:
        raise _EntryRefused("encrypted (password-protected) entries can't be read; zip it without a password")
    limit = MAX_CAPTION_BYTES if is_caption else max_entry
    ratio_cap = max(info.compress_size * max_ratio, _RATIO_FLOOR)
    buf = bytearray()
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                buf += chunk
                if len(buf) > ratio_cap:
                    raise _EntryRefused("compresses suspiciously well (looks like a zip bomb); "
                                        "zip normal PNG/JPEG/WEBP files instead")
                if len(buf) > limit:
                    if is_caption:
                        raise _EntryRefused(f"caption file larger than {MAX_CAPTION_BYTES // 1024} KB")
                    raise _EntryRefused(f"file larger than {limit / 2**20:.0f} MB when unpacked; "
                                        "resize it before zipping")
                if len(buf) > total_left:
                    raise _EntryRefused(_over_total(max_total))
    except _EntryRefused:
        raise
    except NotImplementedError:
        raise _EntryRefused("uses a compression method we can't read; re-create the zip with normal "
                            "(deflate) compression") from None
    except Exception:  # BadZipFile (CRC, header mismatch), zlib/lzma/bz2 errors, EOF, RuntimeError…
        raise _EntryRefused("damaged inside the archive; re-create the zip") from None
    return bytes(buf)


def _declared_entry_count(fp: IO[bytes], size: int) -> int | None:
    """Total entries from the end-of-central-directory record (zip64 aware); None if there is none."""
    tail_len = min(size, 22 + 65535)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    (count,) = struct.unpack_from("<H", tail, i + 10)
    if count != 0xFFFF or i < 20 or tail[i - 20 : i - 16] != b"PK\x06\x07":
        return count
    (z64_off,) = struct.unpack_from("<Q", tail, i - 20 + 8)
    if z64_off + 40 > size:
        return None
    fp.seek(z64_off)
    rec = fp.read(40)
    if rec[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", rec, 32)[0]


def _too_many(n: int, limit: int) -> ArchiveRejected:
    return ArchiveRejected(f"The archive has too many files ({n}; the limit is {limit}).",
                           "Split it into smaller zips.")


def _unsafe_name(name: str) -> str | None:
    if "\x00" in name:
        return "unsafe name (contains a NUL byte); rename the file"
    if "\\" in name:
        return "unsafe path (contains backslashes, which can escape the folder); zip it again on this system"
    if name.startswith("/"):
        return "unsafe path (absolute path); zip the folder's contents, not absolute paths"
    if _DRIVE_RE.match(name):
        return "unsafe path (starts with a drive letter); zip the folder's contents instead"
    if any(part == ".." for part in name.split("/")):
        return "unsafe path (`..` points outside the archive); zip the folder's contents instead"
    if any(ord(ch) < 32 for ch in name) or len(name) > 1024:
        return "unsafe name (control characters or far too long); rename the file"
    return None


def _is_junk(name: str) -> bool:
    parts = [p for p in name.split("/") if p]
    return any(p.startswith(".") or p.casefold() in _JUNK_NAMES for p in parts)


def _split_ext(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return name, ""
    return name[: len(name) - len(base) + dot], base[dot:].casefold()


def _shown(name: str) -> str:
    return clean_text(name, max_len=255) or "(unnamed)"


def _natural_key(name: str) -> list[object]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name.casefold()) if t]


def build_zip(items: Iterable[tuple[str, bytes, str]]) -> bytes:
    """Export archive: each ``(name, data, caption)`` becomes ``name`` plus ``<stem>.txt`` when captioned.

    Deterministic (fixed timestamps), so the same dataset exports to the same bytes. Names must be plain
    relative paths (``0001.png``, ``set/0001.png``).
    """
    buf = io.BytesIO()
    seen: set[str] = set()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, caption in items:
            problem = _unsafe_name(name) if name else "empty name"
            if problem or _is_junk(name) or name.endswith("/"):
                raise ValueError(f"unsafe export name {name!r}: {problem or 'hidden or folder name'}")
            stem, _ = _split_ext(name)
            caption_name = stem + ".txt"
            for n in (name, caption_name) if caption else (name,):
                if n in seen:
                    raise ValueError(f"duplicate export name {n!r}")
                seen.add(n)
            zf.writestr(zipfile.ZipInfo(name, _FIXED_TIME), data, compress_type=zipfile.ZIP_STORED)
            if caption:
                zf.writestr(zipfile.ZipInfo(caption_name, _FIXED_TIME), caption.encode("utf-8"),
                            compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()
