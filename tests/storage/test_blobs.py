"""Blob store: content addressing, atomic idempotent writes, hash validation, local and fsspec (memory://, and
S3 on a moto server with ``ATELIER_TEST_S3=1 … -m s3``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import pytest

from storage.db.blobs import BlobNotFound, BlobStore, validate_hash
from storage.errors import InvalidInput, NotFound
from storage.settings import load_settings
from tests.s3_server import s3_selected

BAD_HASHES = ["../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "g" * 64, "", "/" + "a" * 63, "a" * 62 + "/."]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["memory", *([pytest.param("s3", marks=pytest.mark.s3)] if s3_selected() else [])])
def memory_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """A remote (non-local) store: fsspec's memory filesystem, or a fresh bucket on the moto S3 server."""
    if request.param == "s3":
        server = request.getfixturevalue("moto_server")
        return BlobStore(f"s3://{server.new_bucket()}/blobs", cache_dir=tmp_path / "cache",
                         storage_options=server.options())
    return BlobStore(f"memory://blobs-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")


async def test_local_put_get_layout(tmp_path: Path):
    store = BlobStore(str(tmp_path / "blobs"))
    data = b"hello blob"
    h = await store.put_bytes(data)
    assert h == hashlib.sha256(data).hexdigest()
    path = tmp_path / "blobs" / h[:2] / h[2:4] / h
    assert path.read_bytes() == data
    assert await store.get_bytes(h) == data
    assert await store.exists(h)
    assert await store.local_path(h) == path
    assert await store.open_local(h) == path
    assert files_under(tmp_path / "blobs") == [path]  # no temp files left behind
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


async def test_put_is_idempotent(tmp_path: Path):
    store = BlobStore(str(tmp_path))
    h = await store.put_bytes(b"same")
    path = store.path_for(h)
    before = path.stat()
    os.utime(path, ns=(1, 1))
    assert await store.put_bytes(b"same") == h
    after = path.stat()
    assert after.st_ino == before.st_ino and after.st_mtime_ns == 1  # not rewritten


async def test_concurrent_identical_puts(tmp_path: Path):
    store = BlobStore(str(tmp_path))
    data = os.urandom(512 * 1024)
    hashes = await asyncio.gather(*(store.put_bytes(data) for _ in range(16)))
    assert len(set(hashes)) == 1
    assert files_under(tmp_path) == [store.path_for(hashes[0])]
    assert await store.get_bytes(hashes[0]) == data


async def test_put_file_streams_and_matches_put_bytes(tmp_path: Path):
    src = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    store = BlobStore(str(tmp_path / "blobs"))
    h = await store.put_file(src)
    assert h == hashlib.sha256(data).hexdigest()
    assert (await store.open_local(h)).read_bytes() == data
    assert await store.put_file(src) == h
    assert len(files_under(tmp_path / "blobs")) == 1


async def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = BlobStore(str(tmp_path))

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)  # fault injection: the rename step fails
    with pytest.raises(OSError, match="disk full"):
        await store.put_bytes(b"never stored")
    assert files_under(tmp_path) == []


async def test_sweep_removes_crash_leftovers(tmp_path: Path):
    store = BlobStore(str(tmp_path))
    h = await store.put_bytes(b"x")
    leftover = store.path_for(h).parent / ".tmp-abc123"
    leftover.write_bytes(b"partial")
    assert store.sweep_temp_files() == 1
    assert files_under(tmp_path) == [store.path_for(h)]
    assert await store.list_hashes() == [h]


async def test_delete_and_missing(tmp_path: Path):
    store = BlobStore(str(tmp_path))
    h = await store.put_bytes(b"to delete")
    await store.delete(h)
    await store.delete(h)  # missing is fine
    assert not await store.exists(h)
    assert await store.local_path(h) is None
    with pytest.raises(BlobNotFound) as info:
        await store.get_bytes(h)
    assert isinstance(info.value, NotFound) and info.value.hint
    with pytest.raises(BlobNotFound):
        await store.open_local(h)


@pytest.mark.parametrize("bad", BAD_HASHES)
async def test_invalid_hashes_never_become_paths(tmp_path: Path, bad: str):
    store = BlobStore(str(tmp_path))
    for call in (store.get_bytes, store.exists, store.delete, store.open_local, store.local_path):
        with pytest.raises(InvalidInput):
            await call(bad)
    with pytest.raises(InvalidInput):
        validate_hash(bad)


async def test_memory_store_roundtrip(memory_store: BlobStore, tmp_path: Path):
    assert not memory_store.is_local
    data = os.urandom(200_000)
    h = await memory_store.put_bytes(data)
    assert await memory_store.put_bytes(data) == h
    assert await memory_store.exists(h)
    assert await memory_store.get_bytes(h) == data
    assert await memory_store.local_path(h) is None
    assert memory_store.path_for(h) is None
    local = await memory_store.open_local(h)
    assert local.is_relative_to(tmp_path / "cache") and local.read_bytes() == data
    assert await memory_store.open_local(h) == local  # cached
    assert await memory_store.list_hashes() == [h]
    await memory_store.delete(h)
    assert not await memory_store.exists(h) and not local.exists()
    await memory_store.delete(h)
    with pytest.raises(BlobNotFound):
        await memory_store.get_bytes(h)
    with pytest.raises(BlobNotFound):
        await memory_store.open_local(h)


async def test_memory_store_put_file(memory_store: BlobStore, tmp_path: Path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"file content" * 1000)
    h = await memory_store.put_file(src)
    assert await memory_store.get_bytes(h) == src.read_bytes()


async def test_memory_store_concurrent_puts(memory_store: BlobStore):
    data = b"z" * 10_000
    assert len(set(await asyncio.gather(*(memory_store.put_bytes(data) for _ in range(8))))) == 1
    assert len(await memory_store.list_hashes()) == 1


async def test_file_url_and_settings(tmp_path: Path):
    store = BlobStore(f"file://{tmp_path}/fb")
    assert store.is_local
    h = await store.put_bytes(b"via file url")
    assert (tmp_path / "fb" / h[:2] / h[2:4] / h).exists()
    s = load_settings(data_dir=tmp_path / "data")
    from_settings = BlobStore.from_settings(s)
    assert from_settings.is_local and from_settings.url == str((tmp_path / "data" / "blobs").resolve())
    s3 = BlobStore.from_settings(load_settings(data_dir=tmp_path, blob_url="memory://from-settings"))
    assert not s3.is_local


async def test_remote_blob_corrupted_at_source_is_not_cached(memory_store: BlobStore, tmp_path: Path):
    h = await memory_store.put_bytes(b"original")
    memory_store._fs.pipe_file(memory_store._remote_path(h), b"tampered")  # someone edits the bucket
    with pytest.raises(OSError, match="does not match its hash"):
        await memory_store.open_local(h)
    assert not (tmp_path / "cache").exists() or files_under(tmp_path / "cache") == []


def test_storage_modules_import_neither_torch_nor_discord():
    import subprocess
    import sys

    mods = ["db.blobs", "images.ingest", "images.sniff", "images.archive", "images.lint", "images.contact_sheet", "names"]
    code = (f"import sys; import {', '.join('storage.' + m for m in mods)}; "
            "bad = [m for m in ('torch', 'discord') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


async def test_a_blob_another_machine_deleted_is_written_again(memory_store: BlobStore, tmp_path: Path):
    """Two machines on one bucket: machine A has listed the store, machine B deletes a blob, A stores the same
    content again — A must really write it (no stale listing saying it is still there)."""
    other = BlobStore(memory_store.url, cache_dir=tmp_path / "cache-b",
                      storage_options={**_options(memory_store), "skip_instance_cache": True})
    h = await memory_store.put_bytes(b"shared content")
    assert await memory_store.list_hashes() == [h] and await memory_store.exists(h)  # A's view, listed
    await other.delete(h)
    assert await memory_store.put_bytes(b"shared content") == h
    assert await other.get_bytes(h) == b"shared content"


def _options(store: BlobStore) -> dict:
    return {k: v for k, v in store._fs.storage_options.items() if k != "use_listings_cache"}
