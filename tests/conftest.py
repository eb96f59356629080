"""Fixtures shared by every test package: database URLs (SQLite always, PostgreSQL when configured), settings,
fully wired services, and small real images.

PostgreSQL: set ``ATELIER_TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test``. Each test then
gets a fresh schema (``?search_path=`` on the URL, honoured by ``storage.db.engine.Database``) created by the real
Alembic migrations, and dropped afterwards.

S3: set ``ATELIER_TEST_S3=1``. Tests that use ``settings`` then also run with the blob store in a fresh bucket of
a moto server (``tests/s3_server.py``, started once per session on 127.0.0.1) reached through s3fs; select them
with ``-m s3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.engine import make_url

from storage.settings import Settings, load_settings
from tests.s3_server import MotoServer, s3_selected

PG_ENV = "ATELIER_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``bash scripts/dev.sh test`` runs one worker per core), each worker's torch, and the
    processes it starts, use their share of the cores instead of all of them each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


def pg_url() -> str | None:
    url = os.environ.get(PG_ENV, "").strip()
    return url or None


def _backends() -> list[object]:
    params: list[object] = ["sqlite"]
    if pg_url():
        params.append(pytest.param("postgresql", marks=pytest.mark.postgres))
    return params


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host or "127.0.0.1",
                                 port=u.port or 5432, database=u.database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to the current schema once per session by the real migrations (migrating a
    fresh file costs each test about a quarter of a second; copying this one, a millisecond)."""
    from storage.db.engine import Database

    path = tmp_path_factory.mktemp("sqlite-template") / "atelier.db"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.upgrade()
        finally:
            await db.dispose()

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the requesting test runs in
        pool.submit(asyncio.run, migrate()).result()
    return path


@pytest.fixture(params=_backends())
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}"
        return
    base = pg_url()
    assert base is not None
    async with pg_schema(base) as url:
        yield url


@contextlib.asynccontextmanager
async def pg_schema(base: str) -> AsyncIterator[str]:
    """A URL of ``base`` whose search path is a fresh schema, dropped afterwards (tests share one database)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    await _pg_admin(base, f'CREATE SCHEMA "{schema}"')
    try:
        yield make_url(base).update_query_dict({"search_path": schema}).render_as_string(hide_password=False)
    finally:
        await _pg_admin(base, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def database_url(empty_database_url: str, request: pytest.FixtureRequest) -> str:
    """A database at the current schema: for SQLite a copy of :func:`sqlite_template`; a PostgreSQL schema stays
    empty until ``build_services`` migrates it (both go through the same real migrations)."""
    url = make_url(empty_database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        shutil.copyfile(request.getfixturevalue("sqlite_template"), url.database)
    return empty_database_url


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server (its own process on 127.0.0.1) for the whole session."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()


def _blob_backends() -> list[object]:
    params: list[object] = ["local"]
    if s3_selected():
        params.append(pytest.param("s3", marks=pytest.mark.s3))
    return params


@pytest.fixture(params=_blob_backends())
def blob_settings(request: pytest.FixtureRequest) -> dict[str, object]:
    """Settings for the blob store: none (a folder in the data dir) or an empty bucket on the moto server."""
    if request.param == "local":
        return {}
    server: MotoServer = request.getfixturevalue("moto_server")
    return {"blob_url": f"s3://{server.new_bucket()}/blobs", "blob_options": server.options()}


@pytest.fixture
def make_settings(tmp_path: Path, blob_settings: dict[str, object]) -> Callable[..., Settings]:
    """Settings with a private data dir (and the selected blob store); keyword overrides as for
    ``load_settings``."""

    def make(**overrides: object) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "atelier-data")
        for key, value in blob_settings.items():
            overrides.setdefault(key, value)
        return load_settings(**overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
async def services(settings: Settings):
    """Every storage use case wired to a migrated database and a blob folder (``storage.services``)."""
    from storage.services import build_services

    built = await build_services(settings)
    try:
        yield built
    finally:
        await built.aclose()


def noise_png(seed: int, size: int = 64) -> bytes:
    """A small PNG of random pixels: distinct seeds give far-apart perceptual hashes (no near-duplicates)."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@pytest.fixture
def make_png() -> Callable[..., bytes]:
    return noise_png
