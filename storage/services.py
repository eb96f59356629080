"""Composition root: build every long-lived resource once at start-up and pass it in (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.bot_state import BotStateStore
from storage.datasets import DatasetService
from storage.db.blobs import BlobStore
from storage.db.engine import Database
from storage.elements import ElementService
from storage.generation_actions import GenerationService
from storage.guilds import GuildService
from storage.jobs import JobService
from storage.quotas import QuotaService
from storage.settings import Settings
from storage.users import UserService

if TYPE_CHECKING:
    from storage.queue.arq_jobs import Enqueuer


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
    # The job side, built by :meth:`attach_jobs` in the processes that queue or run jobs; None elsewhere (the
    # CLI's dataset commands).
    jobs: JobService | None = None
    generations: GenerationService | None = None
    enqueuer: Enqueuer | None = None

    async def attach_jobs(self, redis_url: str | None) -> JobService:
        """Build the job side: ``jobs``, ``generations``, and ``enqueuer`` when ``redis_url`` is given (None keeps
        rows queued for an in-process run or the reconciler). :meth:`aclose` closes the Redis connection."""
        if redis_url:
            from storage.queue.arq_jobs import Enqueuer  # arq: only for the processes that talk to Redis

            self.enqueuer = await Enqueuer.connect(redis_url)
        self.jobs = JobService(self.db, self.settings, quotas=self.quotas, elements=self.elements,
                               datasets=self.datasets, enqueuer=self.enqueuer, guilds=self.guilds)
        self.generations = GenerationService(self.db, self.blobs, self.jobs, self.datasets)
        return self.jobs

    async def aclose(self) -> None:
        """Release what was built (queue side first, then the database)."""
        for part in (self.enqueuer, self.jobs):
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
