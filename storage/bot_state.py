"""Front-end state that survives a restart, with an expiry: what a button press or a menu pick later needs.

Rows of :class:`storage.db.models.BotState`, keyed by ``(kind, key)``. A front end holds something (a training
confirmation until Start is pressed, a right-clicked message's attachments until a dataset is picked, the hash of
the commands it last synced) and later takes or reads it; an expired row reads as :data:`EXPIRED` (so the reply
can say "this expired" rather than "unknown"), a missing one as None. Expired rows are purged by :meth:`purge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from storage.db.engine import Database, dialect_insert
from storage.db.models import BotState, utcnow


@dataclass(frozen=True)
class Held:
    payload: dict[str, Any]
    owner: str | None
    expires_at: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


class BotStateStore:
    """``put`` / ``get`` / ``take`` / ``purge`` on the ``bot_state`` table (``db``: a :class:`Database`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, kind: str, key: str, payload: dict[str, Any], *, ttl_s: float | None = None,
                  owner: str | None = None) -> None:
        """Store (or replace) ``payload`` under ``(kind, key)``; ``ttl_s`` None keeps it until replaced."""
        expires = utcnow() + timedelta(seconds=ttl_s) if ttl_s is not None else None
        values = {"kind": kind, "key": key, "owner": owner, "payload": payload, "expires_at": expires,
                  "created_at": utcnow()}
        async with self.db.transaction() as session:
            stmt = dialect_insert(self.db, BotState).values(**values)
            await session.execute(stmt.on_conflict_do_update(
                index_elements=[BotState.kind, BotState.key],
                set_={k: v for k, v in values.items() if k not in ("kind", "key")}))

    async def get(self, kind: str, key: str) -> Held | None:
        """What is held (check ``.expired``), or None."""
        async with self.db.read() as session:
            row = await session.get(BotState, (kind, key))
            return Held(dict(row.payload or {}), row.owner, row.expires_at) if row is not None else None

    async def take(self, kind: str, key: str) -> Held | None:
        """Remove and return what is held (once: a second take, e.g. a double click, gets None)."""
        async with self.db.transaction() as session:
            row = await session.get(BotState, (kind, key), with_for_update=True, populate_existing=True)
            if row is None:
                return None
            held = Held(dict(row.payload or {}), row.owner, row.expires_at)
            result = await session.execute(delete(BotState).where(BotState.kind == kind, BotState.key == key))
        # two takes racing: only the one whose DELETE removed the row gets it
        return held if result.rowcount else None  # type: ignore[attr-defined]

    async def drop(self, kind: str, key: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(delete(BotState).where(BotState.kind == kind, BotState.key == key))

    async def purge(self, *, older_than_s: float = 0.0) -> int:
        """Delete rows that expired more than ``older_than_s`` seconds ago; returns how many."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        async with self.db.transaction() as session:
            result = await session.execute(delete(BotState).where(BotState.expires_at.is_not(None),
                                                                  BotState.expires_at <= cutoff))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def count(self, kind: str) -> int:
        async with self.db.read() as session:
            return len((await session.execute(select(BotState.key).where(BotState.kind == kind))).all())
