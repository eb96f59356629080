"""Content-addressed blob store over a local directory or any fsspec URL.

A blob's name is the sha256 hex of its bytes; it lives at ``<root>/<h[:2]>/<h[2:4]>/<h>``. Because names come
from content, writes are idempotent (an existing blob is never rewritten) and two identical puts racing each other
are harmless. Local writes are atomic: a temp file in the destination directory, fsync, ``os.replace``, then a
directory fsync, so a crash leaves either the whole blob or nothing (plus, at worst, a ``.tmp-*`` file that
:meth:`BlobStore.sweep_temp_files` removes).

Every hash is validated (64 lowercase hex) before it touches a path, so nothing user-supplied becomes a path.
Blocking I/O runs in a thread (``asyncio.to_thread``) so the event loop keeps serving Discord while files move.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

from storage.errors import InvalidInput, NotFound
from storage.redact import mask_urls

if TYPE_CHECKING:
    from storage.settings import Settings

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
_TMP_PREFIX = ".tmp-"


class BlobNotFound(NotFound):
    """A blob that a row refers to is not in the store (deleted, or the store was moved)."""


def validate_hash(h: str) -> str:
    """Return ``h`` if it is a sha256 hex digest (64 lowercase hex chars), else raise :class:`InvalidInput`."""
    if not isinstance(h, str) or not _HASH_RE.fullmatch(h):
        raise InvalidInput(
            "That is not a valid file id.", "File ids are 64-character lowercase sha256 hex strings."
        )
    return h


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hash a file in 1 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _relpath(h: str) -> str:
    return f"{h[:2]}/{h[2:4]}/{h}"


def _is_local_url(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


class BlobStore:
    """Blob store rooted at ``url``: a local folder (default) or an fsspec URL (``s3://bucket/prefix``, ``memory://x``).

    ``cache_dir`` is where :meth:`open_local` materialises remote blobs (ignored for local stores); by default a
    per-store folder under the system temp directory, created on first use.
    ``storage_options`` are passed to fsspec (credentials, endpoint URL, …).
    """

    def __init__(
        self, url: str, *, cache_dir: Path | str | None = None, storage_options: dict[str, Any] | None = None
    ) -> None:
        if not url:
            raise ValueError("blob store URL is empty")
        self.url = url
        self.is_local = _is_local_url(url)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.is_local:
            self._root = Path(url.removeprefix("file://")).expanduser().resolve()
            self._fs = None
            self._fs_root = ""
        else:
            self._root = None
            # Other machines write and delete here too: a cached listing could call a blob present after
            # another process removed it (and a put would then skip writing it back).
            options = {"use_listings_cache": False, **(storage_options or {})}
            self._fs, self._fs_root = fsspec.core.url_to_fs(url, **options)
            self._fs_root = self._fs_root.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        return cls(settings.resolved_blob_url, cache_dir=settings.data_dir / "cache" / "blobs",
                   storage_options=settings.blob_options)

    def __repr__(self) -> str:

        return f"BlobStore({mask_urls(self.url)!r})"

    # ---- paths -----------------------------------------------------------------------------------------------

    def path_for(self, h: str) -> Path | None:
        """Where blob ``h`` lives (or would live) on this machine; ``None`` for remote stores. No I/O."""
        validate_hash(h)
        return self._root / _relpath(h) if self._root is not None else None

    def _remote_path(self, h: str) -> str:
        return f"{self._fs_root}/{_relpath(validate_hash(h))}"

    def _cache_path(self, h: str) -> Path:
        if self._cache_dir is None:
            tag = hashlib.sha256(self.url.encode()).hexdigest()[:16]
            self._cache_dir = Path(tempfile.gettempdir()) / f"atelier-blob-cache-{tag}"
        return self._cache_dir / _relpath(h)

    # ---- sync implementation (also usable from worker threads/processes) ---------------------------------------

    def put_bytes_sync(self, data: bytes) -> str:
        h = sha256_bytes(data)
        if self._root is not None:
            dest = self._root / _relpath(h)
            if not dest.exists():
                _atomic_write(dest, [data])
        else:
            rp = self._remote_path(h)
            if not self._fs.exists(rp):
                self._fs.pipe_file(rp, data)
        return h

    def put_file_sync(self, path: Path | str) -> str:
        """Store a file's content without loading it whole (hash pass, then a streamed copy that re-verifies)."""
        h = sha256_file(path)
        if self._root is not None:
            dest = self._root / _relpath(h)
            if not dest.exists():
                _atomic_copy(Path(path), dest, h)
        else:
            rp = self._remote_path(h)
            if not self._fs.exists(rp):
                self._fs.makedirs(rp.rsplit("/", 1)[0], exist_ok=True)
                self._fs.put_file(str(path), rp)
        return h

    def get_bytes_sync(self, h: str) -> bytes:
        try:
            if self._root is not None:
                return (self._root / _relpath(validate_hash(h))).read_bytes()
            return self._fs.cat_file(self._remote_path(h))
        except FileNotFoundError:
            raise _missing(h) from None

    def exists_sync(self, h: str) -> bool:
        if self._root is not None:
            return (self._root / _relpath(validate_hash(h))).is_file()
        return bool(self._fs.exists(self._remote_path(h)))

    def delete_sync(self, h: str) -> None:
        if self._root is not None:
            (self._root / _relpath(validate_hash(h))).unlink(missing_ok=True)
        else:
            try:
                self._fs.rm_file(self._remote_path(h))
            except FileNotFoundError:
                pass
        if self._cache_dir is not None:
            self._cache_path(h).unlink(missing_ok=True)

    def open_local_sync(self, h: str) -> Path:
        if self._root is not None:
            p = self._root / _relpath(validate_hash(h))
            if not p.is_file():
                raise _missing(h)
            return p
        cached = self._cache_path(validate_hash(h))
        if cached.is_file():
            return cached
        try:
            with self._fs.open(self._remote_path(h), "rb") as src:
                _atomic_write(cached, iter(lambda: src.read(_CHUNK), b""), expect_hash=h)
        except FileNotFoundError:
            raise _missing(h) from None
        return cached

    def iter_hashes_sync(self) -> Iterator[str]:
        """Every stored hash (for garbage collection / integrity checks); order unspecified."""
        if self._root is not None:
            if not self._root.is_dir():
                return
            for p in self._root.glob("??/??/*"):
                if _HASH_RE.fullmatch(p.name) and p.name.startswith(p.parent.parent.name + p.parent.name):
                    yield p.name
            return
        if not self._fs.exists(self._fs_root):
            return
        for p in self._fs.find(self._fs_root):
            name = p.rsplit("/", 1)[-1]
            if _HASH_RE.fullmatch(name):
                yield name

    def iter_hashes_older_than_sync(self, cutoff: float) -> Iterator[str]:
        """Stored hashes whose file was last written before ``cutoff`` (a Unix time). A blob just written has no
        row yet (files first, then rows): only old ones may be judged unreferenced. Remote files whose listing
        gives no time are skipped."""
        if self._root is not None:
            for h in self.iter_hashes_sync():
                try:
                    if (self._root / _relpath(h)).stat().st_mtime < cutoff:
                        yield h
                except FileNotFoundError:
                    continue
            return
        if not self._fs.exists(self._fs_root):
            return
        for p, info in self._fs.find(self._fs_root, detail=True).items():
            name = p.rsplit("/", 1)[-1]
            when = info.get("LastModified") or info.get("mtime") or info.get("created")
            if hasattr(when, "timestamp"):
                when = when.timestamp()
            if _HASH_RE.fullmatch(name) and isinstance(when, int | float) and when < cutoff:
                yield name

    def sweep_temp_files(self, older_than: float = 0.0) -> int:
        """Remove temp files left by a crash mid-write (local stores) that were last touched more than
        ``older_than`` seconds ago (a write in progress is younger). Returns how many were removed."""
        if self._root is None or not self._root.is_dir():
            return 0
        return sweep_files(self._root.glob(f"??/??/{_TMP_PREFIX}*"), older_than)

    # ---- async API ---------------------------------------------------------------------------------------------

    async def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its sha256 hex. Idempotent: an existing blob is not rewritten."""
        return await asyncio.to_thread(self.put_bytes_sync, data)

    async def put_file(self, path: Path | str) -> str:
        """Store a file's content (streamed); returns its sha256 hex."""
        return await asyncio.to_thread(self.put_file_sync, path)

    async def get_bytes(self, h: str) -> bytes:
        """The blob's bytes; :class:`BlobNotFound` if missing."""
        return await asyncio.to_thread(self.get_bytes_sync, h)

    async def exists(self, h: str) -> bool:
        return await asyncio.to_thread(self.exists_sync, h)

    async def delete(self, h: str) -> None:
        """Remove the blob (and any cached copy). Deleting a missing blob is fine."""
        await asyncio.to_thread(self.delete_sync, h)

    async def open_local(self, h: str) -> Path:
        """A path on this machine holding the blob: the blob itself for local stores, a verified cached copy
        for remote ones. Treat it as read-only. :class:`BlobNotFound` if missing."""
        return await asyncio.to_thread(self.open_local_sync, h)

    async def local_path(self, h: str) -> Path | None:
        """The blob's path when this is a local store and the blob exists; ``None`` otherwise
        (remote stores: use :meth:`open_local`)."""
        p = self.path_for(h)
        if p is None:
            return None
        return p if await asyncio.to_thread(p.is_file) else None

    async def list_hashes(self) -> list[str]:
        return await asyncio.to_thread(lambda: list(self.iter_hashes_sync()))


def sweep_files(paths: Iterator[Path], older_than: float) -> int:
    """Delete the files among ``paths`` last modified more than ``older_than`` seconds ago; how many went."""

    cutoff, n = time.time() - older_than, 0
    for p in paths:
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                n += 1
        except FileNotFoundError:
            continue
    return n


def _missing(h: str) -> BlobNotFound:
    return BlobNotFound(
        f"Stored file {h[:12]}… is missing from the blob store.",
        "It may have been deleted; ask an admin to check the storage location.",
    )


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(dest: Path, chunks: Any, *, expect_hash: str | None = None) -> None:
    """Write ``chunks`` to ``dest`` atomically (temp file beside it, fsync, rename, fsync dir)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                if expect_hash:
                    digest.update(chunk)
            f.flush()
            os.fsync(f.fileno())
        if expect_hash and digest.hexdigest() != expect_hash:
            raise OSError(f"content of blob {expect_hash[:12]}… does not match its hash "
                          "(the source changed while being copied, or is corrupt)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _atomic_copy(src: Path, dest: Path, expect_hash: str) -> None:
    with open(src, "rb") as f:
        _atomic_write(dest, iter(lambda: f.read(_CHUNK), b""), expect_hash=expect_hash)
