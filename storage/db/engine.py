"""Database engine, session factories and schema upgrades (Alembic), for SQLite and PostgreSQL alike.

The use case owns the transaction::

    async with db.transaction() as session:   # write: BEGIN IMMEDIATE on SQLite
        ...
    async with db.read() as session:          # read-only snapshot: never blocks writers
        ...

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write transactions start with
``BEGIN IMMEDIATE`` so two writers never both read, then both try to upgrade to a write lock (the classic
"database is locked" failure of deferred transactions); they queue on the busy timeout instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Application-wide advisory lock keys (PostgreSQL). Arbitrary constants, stable forever.
_PG_LOCK_MIGRATE = 0x41544C01
_PG_LOCK_BLOBS = 0x41544C02
_READ_OPTION = "atelier_read_only"


class Database:
    """One engine + session factories for a database URL (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    For PostgreSQL a ``?search_path=schema`` query parameter is honoured (handy for a shared server and for
    test isolation); it is passed to the server as a session setting.
    """

    def __init__(self, url: str | URL, *, echo: bool = False, pool_size: int = 5, max_overflow: int = 10) -> None:
        sa_url = make_url(url)
        self.backend = sa_url.get_backend_name()
        connect_args: dict[str, Any] = {}
        engine_kw: dict[str, Any] = {"echo": echo, "pool_pre_ping": self.backend != "sqlite"}
        if self.backend == "sqlite":
            if sa_url.drivername != "sqlite+aiosqlite":
                raise ValueError(f"use the async SQLite driver: sqlite+aiosqlite:///... (got {sa_url.drivername})")
            if sa_url.database and sa_url.database != ":memory:" and not sa_url.database.startswith("file:"):
                Path(sa_url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
            engine_kw.update(pool_size=pool_size, max_overflow=max_overflow)
        elif self.backend == "postgresql":
            if sa_url.drivername != "postgresql+asyncpg":
                raise ValueError(f"use the async PostgreSQL driver: postgresql+asyncpg://... (got {sa_url.drivername})")
            search_path = sa_url.query.get("search_path")
            if search_path:
                sa_url = sa_url.difference_update_query(["search_path"])
                connect_args["server_settings"] = {"search_path": str(search_path)}
            engine_kw.update(pool_size=pool_size, max_overflow=max_overflow)
        else:
            raise ValueError(f"unsupported database {sa_url.drivername!r}: use SQLite (aiosqlite) or PostgreSQL (asyncpg)")
        self.url = make_url(url)  # as given (a PostgreSQL ?search_path= stays part of it)
        self.engine: AsyncEngine = create_async_engine(sa_url, connect_args=connect_args, **engine_kw)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        self._read_sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine.execution_options(**{_READ_OPTION: True}), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.backend == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block exits normally, rolled back on any exception."""
        if self.is_sqlite:
            # SQLite has one writer at a time anyway. Queueing this process's writers on an asyncio lock hands
            # the write lock over at once, instead of each waiter polling SQLite's busy handler (1–100 ms
            # sleeps) while holding a pooled connection. Other processes still queue on the busy timeout.
            async with self._sqlite_write_lock(), self.sessionmaker() as session, session.begin():
                yield session
            return
        async with self.sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _sqlite_write_lock(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        lock = self._write_locks.get(loop)
        if lock is None:
            lock = self._write_locks[loop] = asyncio.Lock()
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await lock.acquire()
        except TimeoutError:
            raise RuntimeError(
                "waited too long for the SQLite write lock (a write transaction opened inside another?)"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (a consistent snapshot; on SQLite it never takes the write lock)."""
        async with self._read_sessionmaker() as session, session.begin():
            yield session

    async def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision``; safe to call from several processes at once."""
        await self._migrate("upgrade", revision)

    async def downgrade(self, revision: str) -> None:
        await self._migrate("downgrade", revision)

    async def _migrate(self, command_name: str, revision: str) -> None:
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                # Batch migrations recreate tables; with foreign keys on, DROP TABLE would cascade-delete rows.
                # The pragma is a no-op inside a transaction, so set it on the raw connection before BEGIN.
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute("PRAGMA foreign_keys=OFF")
            try:
                async with conn.begin():
                    if self.is_postgresql:
                        # Two processes starting together (bot + worker) must not both create the tables.
                        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_MIGRATE})
                    await conn.run_sync(_run_alembic, command_name, revision)
                    if self.is_sqlite:
                        broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()
                        if broken:
                            raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")
            finally:
                if self.is_sqlite and raw.driver_connection is not None:  # None once a failure invalidated it
                    await raw.driver_connection.execute("PRAGMA foreign_keys=ON")

    async def current_revision(self) -> str | None:
        """The revision the database is at (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def hold_blob_references(self, session: AsyncSession, *, exclusive: bool = False) -> None:
        """Order this transaction against blob garbage collection.

        Writers that insert rows referencing blobs take the shared lock; the collector takes it exclusively
        while it checks references and deletes files. On SQLite the IMMEDIATE write transaction already
        serialises both, so nothing is needed.
        """
        if self.is_postgresql:
            fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            await session.execute(text(f"SELECT {fn}(:k)"), {"k": _PG_LOCK_BLOBS})

    async def dispose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def alembic_config(url: URL | str | None = None) -> Any:
    """Alembic configuration built in code, so migrations work from an installed package (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = make_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def _run_alembic(connection: Connection, command_name: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection  # env.py uses this connection instead of making its own
    getattr(command, command_name)(cfg, revision)


def make_revision(db: Database, message: str, *, autogenerate: bool = True) -> Any:
    """Developer helper: write a new migration file comparing the models to ``db`` (synchronous)."""
    import asyncio

    from alembic import command

    async def _go() -> Any:
        async with db.engine.begin() as conn:
            def _rev(sync_conn: Connection) -> Any:
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                return command.revision(cfg, message=message, autogenerate=autogenerate)

            return await conn.run_sync(_rev)

    return asyncio.run(_go())


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take over BEGIN from the sqlite3 driver (see SQLAlchemy "sqlite_transactions").
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, far fewer fsyncs
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """WAL is a property of the file: set once, every later connection finds it. Only while a new file is being
    set up by two starting processes (bot + worker) can the switch fail; SQLite does not call the busy handler
    for it, so retry briefly (a blocking wait, but only in that first instant of a database's life)."""
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, wrapped differently by each adapter
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_READ_OPTION):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def dialect_insert(db: Database, model: Any) -> Any:
    """``INSERT`` with ``on_conflict_do_nothing/do_update`` for the database's dialect."""
    if db.is_postgresql:
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)
