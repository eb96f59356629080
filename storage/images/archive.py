"""Dataset archives: read a kohya-style .zip (``cat.png`` + ``cat.txt``) safely (exports: :mod:`storage.images.archive_writer`).

Reading never extracts to disk and never trusts the archive: names that would escape a folder (zip slip) are
refused per entry, sizes in the headers are ignored in favour of a running byte count while streaming each
entry (so a zip bomb stops after at most ``max_entry_bytes``), the entry count is checked from the end record and
again by counting the central directory's records before zipfile parses them (an end record may lie), encrypted
entries are refused, and an import reads one image entry at a time (:class:`ZipReader`). Which entries are images is decided later,
by content, in :mod:`storage.images.ingest`; here every file that is not a caption or OS clutter is an image candidate.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from storage.errors import InvalidInput
from storage.images.sniff import accepted_formats
from storage.names import clean_caption, clean_text

if TYPE_CHECKING:
    from storage.settings import Settings

CAPTION_EXTS = (".txt", ".caption")
MAX_CAPTION_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# Below this size the compression ratio is not checked: short captions of repeated tags compress very well.
_RATIO_FLOOR = 1024 * 1024
_JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


class ArchiveRejected(InvalidInput):
    """The archive as a whole cannot be used (not a zip, too many files, too large)."""

    code = "archive_rejected"


class EntryRefused(InvalidInput):
    """One entry of an archive cannot be used; ``message`` says why (the rest of the archive still is)."""

    code = "archive_entry"


@dataclass(frozen=True)
class ZipImage:
    name: str  # path inside the archive, cleaned for display (never use it as a file path)
    data: bytes
    caption: str  # cleaned; "" when there is no caption file


@dataclass
class ZipContents:
    entries: list[ZipImage] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason a person understands)


@dataclass(frozen=True)
class ZipEntry:
    """An image candidate of an open archive, not read yet (see :meth:`ZipReader.read`)."""

    name: str  # cleaned for display
    caption: str
    info: zipfile.ZipInfo


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

    def open(self, source: bytes | Path | IO[bytes]) -> ZipReader:
        """An open :class:`ZipReader` (captions read, images listed); close it when done."""
        return ZipReader(source, self)

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
    """Images and their captions from a zip, all read into memory (small archives, tests; imports use
    :class:`ZipReader` one entry at a time); per-entry problems go to ``refused``, archive-level ones raise
    :class:`ArchiveRejected`. Entries come back in natural name order (``2.png`` before ``10.png``)."""
    limits = ZipLimits(max_entries, max_total_uncompressed, max_entry_bytes, max_ratio, max_archive_bytes)
    with ZipReader(source, limits) as reader:
        out = ZipContents(refused=list(reader.refused))
        for entry in reader.entries:
            try:
                out.entries.append(ZipImage(entry.name, reader.read(entry), entry.caption))
            except EntryRefused as exc:
                out.refused.append((entry.name, exc.message))
        out.refused += reader.orphan_captions
        return out


class ZipReader:
    """An archive opened for import: the central directory is checked and parsed, captions are read (64 KB each
    at most), and each image is read on demand with :meth:`read` — so an import holds one entry at a time.

    Reads may come from worker threads; they are serialised (one file position).
    """

    def __init__(self, source: bytes | Path | IO[bytes], limits: ZipLimits) -> None:
        self.limits = limits
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._fp: IO[bytes] = io.BytesIO(bytes(source))
        elif hasattr(source, "read"):  # an open, seekable file (a spooled download); closed with the reader
            self._fp = source  # type: ignore[assignment]
        else:
            self._fp = open(source, "rb")  # noqa: SIM115 — closed by close()
        self._lock = threading.Lock()
        self._total = 0
        self.entries: list[ZipEntry] = []
        self.refused: list[tuple[str, str]] = []
        self.orphan_captions: list[tuple[str, str]] = []
        try:
            self._zf = _open(self._fp, limits)
            self._list()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ZipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        zf = getattr(self, "_zf", None)
        if zf is not None:
            zf.close()
        self._fp.close()

    def _list(self) -> None:
        lim = self.limits
        files: list[zipfile.ZipInfo] = []
        for info in self._zf.infolist():
            if info.is_dir():
                continue
            problem = _unsafe_name(info.orig_filename)  # before the junk check: ".." looks like a dotfile
            if problem:
                self.refused.append((_shown(info.orig_filename), problem))
            elif not _is_junk(info.filename):
                files.append(info)
        if len(files) > lim.max_entries:
            raise _too_many(len(files), lim.max_entries)
        files.sort(key=lambda i: _natural_key(i.filename))
        captions: dict[str, tuple[str, str]] = {}  # key → (shown name, caption)
        images: list[tuple[str, zipfile.ZipInfo]] = []
        for info in files:
            stem, ext = _split_ext(info.filename)
            if ext in CAPTION_EXTS:
                try:
                    data = self._read(info, is_caption=True)
                except EntryRefused as exc:
                    self.refused.append((_shown(info.filename), exc.message))
                    continue
                captions[stem.casefold()] = (_shown(info.filename), clean_caption(_decode_caption(data)))
            else:
                images.append((stem.casefold(), info))
        keys = {key for key, _ in images}
        for key, info in images:
            self.entries.append(ZipEntry(_shown(info.filename), captions.get(key, ("", ""))[1], info))
        for key, (shown, _) in captions.items():
            if key not in keys:
                self.orphan_captions.append((shown, "caption file with no image of the same name next to it"))

    def read(self, entry: ZipEntry) -> bytes:
        """The entry's bytes, streamed with a running byte cap; :class:`EntryRefused` says why not."""
        return self._read(entry.info, is_caption=False)

    def _read(self, info: zipfile.ZipInfo, *, is_caption: bool) -> bytes:
        lim = self.limits
        with self._lock:
            if self._total >= lim.max_total_uncompressed:
                raise EntryRefused(_over_total(lim.max_total_uncompressed))
            data = _read_entry(self._zf, info, is_caption, lim.max_entry_bytes, lim.max_ratio,
                               lim.max_total_uncompressed - self._total, lim.max_total_uncompressed)
            self._total += len(data)
            return data


def _open(fp: IO[bytes], limits: ZipLimits) -> zipfile.ZipFile:
    size = fp.seek(0, io.SEEK_END)
    max_archive = limits.max_archive_bytes
    if max_archive is not None and size > max_archive:
        raise ArchiveRejected(
            f"The archive is too large ({size / 2**20:.0f} MB; the limit is {max_archive / 2**20:.0f} MB).",
            "Split it into smaller zips.",
        )
    directory = _central_directory(fp, size)
    if directory is None:
        raise ArchiveRejected("This file is not a .zip archive (or it is damaged).",
                              "Create the zip again (e.g. right-click the folder → Compress) and upload it.")
    declared, start, length = directory
    budget = limits.max_entries * 2 + 64  # room for folders and __MACOSX twins before we even parse names
    if declared > budget:
        raise _too_many(declared, limits.max_entries)
    # The end record may lie about the count: count the records zipfile is about to parse, stopping early.
    counted = _count_directory_records(fp, start, length, budget)
    if counted > budget:
        raise _too_many(counted, limits.max_entries)
    try:
        fp.seek(0)
        return zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise ArchiveRejected("The .zip archive is damaged and can't be opened.",
                              "Create the zip again and upload it.") from None


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
        raise EntryRefused("a symbolic link, not a file; zip the files themselves")
    if info.flag_bits & 0x1:
        raise EntryRefused("encrypted (password-protected) entries can't be read; zip it without a password")
    limit = MAX_CAPTION_BYTES if is_caption else max_entry
    ratio_cap = max(info.compress_size * max_ratio, _RATIO_FLOOR)
    buf = bytearray()
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                buf += chunk
                if len(buf) > ratio_cap:
                    raise EntryRefused("compresses suspiciously well (looks like a zip bomb); "
                                       f"zip normal {accepted_formats()} files instead")
                if len(buf) > limit:
                    if is_caption:
                        raise EntryRefused(f"caption file larger than {MAX_CAPTION_BYTES // 1024} KB")
                    raise EntryRefused(f"file larger than {limit / 2**20:.0f} MB when unpacked; "
                                       "resize it before zipping")
                if len(buf) > total_left:
                    raise EntryRefused(_over_total(max_total))
    except EntryRefused:
        raise
    except NotImplementedError:
        raise EntryRefused("uses a compression method we can't read; re-create the zip with normal "
                           "(deflate) compression") from None
    except Exception:  # BadZipFile (CRC, header mismatch), zlib/lzma/bz2 errors, EOF, RuntimeError…
        raise EntryRefused("damaged inside the archive; re-create the zip") from None
    return bytes(buf)


def _central_directory(fp: IO[bytes], size: int) -> tuple[int, int, int] | None:
    """(declared entry count, start, byte length) of the central directory from the end record (zip64 aware);
    ``start`` is where zipfile will read it (the end record's position minus the directory's size, which
    allows for data prepended to the archive). None if there is no end record."""
    tail_len = min(size, 22 + 65535)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    (count,) = struct.unpack_from("<H", tail, i + 10)
    (length,) = struct.unpack_from("<I", tail, i + 12)
    end_at = size - tail_len + i
    if count != 0xFFFF or i < 20 or tail[i - 20 : i - 16] != b"PK\x06\x07":
        return count, max(0, end_at - length), length
    (z64_off,) = struct.unpack_from("<Q", tail, i - 20 + 8)
    if z64_off + 56 > size:
        return None
    fp.seek(z64_off)
    rec = fp.read(56)
    if rec[:4] != b"PK\x06\x06":
        return None
    count, length = struct.unpack_from("<QQ", rec, 32)
    return count, max(0, z64_off - length), length


def _count_directory_records(fp: IO[bytes], start: int, length: int, stop_after: int) -> int:
    """Central directory records in ``length`` bytes from ``start`` (as zipfile walks them), counting at most
    ``stop_after + 1`` — so a directory of millions of tiny records is refused after reading a few hundred."""
    fp.seek(start)
    pos, count = 0, 0
    while pos + 46 <= length and count <= stop_after:
        head = fp.read(46)
        if len(head) < 46 or head[:4] != b"PK\x01\x02":
            break
        n, m, k = struct.unpack_from("<HHH", head, 28)
        fp.seek(n + m + k, io.SEEK_CUR)
        pos += 46 + n + m + k
        count += 1
    return count


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


# Local header (30) + central record (46) + zip64/extra slack per entry, plus the name, for export size estimates.
