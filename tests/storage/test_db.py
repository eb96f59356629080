"""The database layer: migrations, SQLite settings, write serialisation, timestamps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text, update

from storage.db.engine import Database, alembic_config
from storage.db.models import Base, QuotaCharge, User, utcnow


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_migrations_create_every_table_from_empty(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert await db.current_revision() is None
        await db.upgrade()
        assert await db.current_revision() == _head()
        async with db.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            # The migrations describe exactly the models: autogenerate finds nothing to add or change.
            diff = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata))
        assert set(Base.metadata.tables) <= tables
        assert "alembic_version" in tables
        assert diff == []
        await db.upgrade()  # already at head: a no-op
        assert await db.current_revision() == _head()
    finally:
        await db.dispose()


async def test_downgrade_to_base_and_back(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await db.upgrade()
        await db.downgrade("base")
        async with db.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert not (set(Base.metadata.tables) & tables)
        await db.upgrade()
        assert await db.current_revision() == _head()
    finally:
        await db.dispose()


async def test_concurrent_upgrades_from_two_processes_worth_of_engines(empty_database_url: str) -> None:
    # Bot and worker starting together both upgrade: one creates the tables, the other finds them done.
    dbs = [Database(empty_database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(d.upgrade() for d in dbs))
        assert {await d.current_revision() for d in dbs} == {_head()}
    finally:
        for d in dbs:
            await d.dispose()


async def test_sqlite_runs_wal_with_foreign_keys_and_busy_timeout(tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'dir' / 'a.db'}")  # creates the folder
    try:
        async with db.read() as session:
            mode = (await session.execute(text("PRAGMA journal_mode"))).scalar()
            fk = (await session.execute(text("PRAGMA foreign_keys"))).scalar()
            busy = (await session.execute(text("PRAGMA busy_timeout"))).scalar()
        assert (mode, fk) == ("wal", 1)
        assert busy >= 5000
    finally:
        await db.dispose()


def test_unsupported_urls_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="aiosqlite"):
        Database("sqlite:///x.db")
    with pytest.raises(ValueError, match="asyncpg"):
        Database("postgresql://u@h/db")
    with pytest.raises(ValueError, match="unsupported"):
        Database("mysql+aiomysql://u@h/db")


async def test_concurrent_read_modify_write_transactions_never_lose_updates(empty_database_url: str) -> None:
    # Each transaction reads a counter then writes counter+1. With deferred SQLite transactions this fails with
    # "database is locked" (or loses updates on other engines without locking); IMMEDIATE/FOR UPDATE serialise.
    db = Database(empty_database_url)
    try:
        await db.upgrade()
        async with db.transaction() as session:
            session.add(User(external_id="local:counter", display_name="", train_slots_override=0))

        async def bump() -> None:
            async with db.transaction() as session:
                user = (await session.execute(
                    select(User).where(User.external_id == "local:counter").with_for_update())).scalar_one()
                await asyncio.sleep(0)  # let the others interleave
                await session.execute(update(User).where(User.id == user.id)
                                      .values(train_slots_override=user.train_slots_override + 1))

        await asyncio.gather(*(bump() for _ in range(40)))
        async with db.read() as session:
            value = (await session.execute(
                select(User.train_slots_override).where(User.external_id == "local:counter"))).scalar_one()
        assert value == 40
    finally:
        await db.dispose()


async def test_a_reader_is_not_blocked_by_an_open_writer(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await db.upgrade()
        async with db.transaction() as writer:
            writer.add(User(external_id="local:pending", display_name=""))
            await writer.flush()
            async with db.read() as reader:  # sees the last committed state, immediately
                found = (await reader.execute(select(User).where(User.external_id == "local:pending"))).first()
            assert found is None
        async with db.read() as reader:
            assert (await reader.execute(select(User).where(User.external_id == "local:pending"))).first()
    finally:
        await db.dispose()


async def test_transaction_rolls_back_on_error(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await db.upgrade()
        with pytest.raises(RuntimeError):
            async with db.transaction() as session:
                session.add(User(external_id="local:ghost", display_name=""))
                await session.flush()
                raise RuntimeError("boom")
        async with db.read() as session:
            assert (await session.execute(select(User).where(User.external_id == "local:ghost"))).first() is None
    finally:
        await db.dispose()


async def test_timestamps_are_timezone_aware_utc_and_naive_ones_are_refused(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await db.upgrade()
        when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(hours=0)
        async with db.transaction() as session:
            user = User(external_id="local:t", display_name="")
            session.add(user)
            await session.flush()
            session.add(QuotaCharge(user_id=user.id, charged_at=when))
        async with db.read() as session:
            got = (await session.execute(select(QuotaCharge.charged_at))).scalar_one()
            created = (await session.execute(select(User.created_at))).scalar_one()
        assert got == when and got.tzinfo is not None
        assert created.tzinfo is not None and abs(created - utcnow()) < timedelta(minutes=5)
        with pytest.raises(Exception, match="naive"):
            async with db.transaction() as session:
                session.add(QuotaCharge(user_id=user.id, charged_at=datetime(2030, 1, 1)))
    finally:
        await db.dispose()


async def test_foreign_keys_cascade_and_set_null(services, alice) -> None:
    from tests.storage.conftest import add_seeds, ready_element

    await services.datasets.create(alice, "fk")
    await add_seeds(services, alice, "fk", [1, 2])
    element = await ready_element(services, alice, "FkEl", "fkel", dataset="fk")
    assert element.dataset_id is not None
    async with services.db.transaction() as session:
        # Deleting the dataset row directly: images go (CASCADE), the Element stays with dataset_id NULL.
        await session.execute(text("DELETE FROM datasets"))
    async with services.db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM dataset_images"))).scalar() == 0
        assert (await session.execute(text("SELECT dataset_id FROM elements"))).scalar() is None
