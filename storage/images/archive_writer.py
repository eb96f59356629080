"""Export archives: a dataset as a kohya-style .zip (``0001.png`` + ``0001.txt``), the format
:mod:`storage.images.archive` reads back; written straight to a file, nothing held whole in memory."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from storage.images.archive import _is_junk, _split_ext, _unsafe_name

_FIXED_TIME = (2000, 1, 1, 0, 0, 0)
_JPEG_MAGIC = b"\xff\xd8\xff"
# Bytes an entry adds beyond its data (headers, zip64 extras, name): an export's size is known before it is built.
ZIP_ENTRY_OVERHEAD = 30 + 46 + 40 + 2 * 16


class ZipWriter:
    """Export archive written straight to ``path``: each image plus ``<stem>.txt`` when captioned.

    Deterministic (fixed timestamps, stored images, deflated captions), so the same dataset exports to the same
    bytes. Images are copied from files in 1 MiB chunks; nothing is held whole in memory. Names must be plain
    relative paths (``0001.png``, ``set/0001.png``).
    """

    def __init__(self, target: Path | IO[bytes]) -> None:
        self._zf = zipfile.ZipFile(target, "w", allowZip64=True)
        self._seen: set[str] = set()

    def __enter__(self) -> ZipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zf.close()

    def _claim(self, name: str, caption: str) -> str:
        problem = _unsafe_name(name) if name else "empty name"
        if problem or _is_junk(name) or name.endswith("/"):
            raise ValueError(f"unsafe export name {name!r}: {problem or 'hidden or folder name'}")
        stem, _ = _split_ext(name)
        caption_name = stem + ".txt"
        for n in (name, caption_name) if caption else (name,):
            if n in self._seen:
                raise ValueError(f"duplicate export name {n!r}")
            self._seen.add(n)
        return caption_name

    def _caption(self, caption_name: str, caption: str) -> None:
        if caption:
            self._zf.writestr(zipfile.ZipInfo(caption_name, _FIXED_TIME), caption.encode("utf-8"),
                              compress_type=zipfile.ZIP_DEFLATED)

    def add_bytes(self, name: str, data: bytes, caption: str = "") -> None:
        caption_name = self._claim(name, caption)
        self._zf.writestr(zipfile.ZipInfo(name, _FIXED_TIME), data, compress_type=zipfile.ZIP_STORED)
        self._caption(caption_name, caption)

    def add_file(self, stem: str, path: Path, caption: str = "") -> str:
        """Add the stored image at ``path`` as ``<stem>.jpg`` or ``<stem>.png`` (by content); returns the name."""
        with open(path, "rb") as src:
            name = f"{stem}.{'jpg' if src.read(3) == _JPEG_MAGIC else 'png'}"
            caption_name = self._claim(name, caption)
            src.seek(0)
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = os.fstat(src.fileno()).st_size
            with self._zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
        self._caption(caption_name, caption)
        return name


def build_zip(items: Iterable[tuple[str, bytes, str]]) -> bytes:
    """An export archive in memory (small archives and tests; exports use :class:`ZipWriter` on a file)."""
    buf = io.BytesIO()
    with ZipWriter(buf) as writer:
        for name, data, caption in items:
            writer.add_bytes(name, data, caption)
    return buf.getvalue()
