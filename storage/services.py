"""Composition root: build every long-lived resource once at start-up and pass it in (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.blobs import BlobStore
from storage.bot_state import BotStateStore
from storage.datasets import DatasetService
from storage.db import Database
from storage.elements import ElementService
from storage.guilds import GuildService
from storage.quotas import QuotaService
from storage.settings import Settings
from storage.users import UserService


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    users: UserService
    datasets: DatasetService
    elements: ElementService
    quotas: QuotaService
    guilds: GuildService
    bot_state: BotStateStore  # front-end state that survives a restart (storage/bot_state.py)
    # Job side (storage/jobs.py, outbox.py, queue.py): attached by whoever starts the queue machinery,
    # e.g. ``services.jobs = JobService(services, ...)``; None where a process does not need them (CLI datasets).
    jobs: Any = None
    outbox: Any = None
    enqueuer: Any = None

    async def aclose(self) -> None:
        """Release what was built (queue side first, then the database)."""
        for part in (self.enqueuer, self.outbox, self.jobs):
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()
        await self.db.dispose()


async def build_services(settings: Settings, *, upgrade: bool = True) -> Services:
    """Open the database (upgrading the schema unless told not to) and the blob store; wire the use cases."""
    db = Database(settings.resolved_database_url)
    try:
        if upgrade:
            await db.upgrade()
    except BaseException:
        await db.dispose()
        raise
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = BlobStore.from_settings(settings)
    guilds = GuildService(db)
    return Services(
        settings=settings, db=db, blobs=blobs,
        users=UserService(db, settings),
        datasets=DatasetService(db, blobs, settings),
        elements=ElementService(db, blobs, settings, guilds=guilds),
        quotas=QuotaService(db, settings),
        guilds=guilds,
        bot_state=BotStateStore(db),
    )
