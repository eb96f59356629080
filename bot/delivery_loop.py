"""Runs notification delivery inside the bot: the outbox pump with the Discord deliverer, and a refresher that
keeps running trainings' progress DMs current between the per-epoch notifications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from bot.deliverer import DiscordDeliverer, discord_user_id
from storage.queue.outbox import OutboxPump

log = logging.getLogger("atelier.bot.deliver")
POLL_INTERVAL = 0.5  # seconds between outbox polls when idle
REFRESH_INTERVAL = 15.0  # seconds between progress refreshes (Discord allows 5 edits / 5 s per channel)


class ProgressRefresher:
    """Edits the progress DM of each queued/running training when what it shows would change (bar in 5 %
    steps, phase, epoch, attempt, latest sample)."""

    def __init__(self, deliverer: DiscordDeliverer) -> None:
        self.deliverer = deliverer
        self._shown: dict[int, tuple[Any, ...]] = {}

    async def refresh_once(self) -> int:
        """One pass; returns how many messages were edited."""
        edited = 0
        active = await self.deliverer.log.active_progress()
        for a in active:
            pr = a.progress
            sig = (a.status, a.attempt, pr.get("phase"), pr.get("epoch"), round(float(pr.get("fraction") or 0) * 20),
                   tuple(pr.get("samples") or ())[:1])
            uid = discord_user_id(a.owner_external_id)
            lock = self.deliverer.lock(a.job_id)
            if uid is None or self._shown.get(a.job_id) == sig or lock.locked():
                continue  # nothing new, not a Discord user, or the deliverer is updating it right now
            async with lock:
                await self.deliverer.update_progress(a.job_id, uid)
            self._shown[a.job_id] = sig
            edited += 1
        live = {a.job_id for a in active}
        for job_id in [j for j in self._shown if j not in live]:
            del self._shown[job_id]
        return edited

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.refresh_once()
            except Exception:  # noqa: BLE001 — a failed pass must not stop later ones
                log.exception("progress refresh failed")


class DeliveryRunner:
    """The running pump + refresher of one bot; :meth:`stop` ends both (pending deliveries resume on restart)."""

    def __init__(self, bot: Any, *, fallback: Any | None = None, poll_interval: float = POLL_INTERVAL,
                 refresh_interval: float = REFRESH_INTERVAL) -> None:
        self.deliverer = DiscordDeliverer(bot, bot.services, fallback=fallback)
        consumer = f"bot:{socket.gethostname()}:{os.getpid()}:{id(bot):x}"
        self.pump = OutboxPump(bot.services.db, self.deliverer, consumer, poll_interval=poll_interval)
        self.refresher = ProgressRefresher(self.deliverer)
        self.refresh_interval = refresh_interval
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.pump.run(self._stop), name="atelier-outbox"),
                       asyncio.create_task(self.refresher.run(self._stop, self.refresh_interval),
                                           name="atelier-progress")]

    async def stop(self) -> None:
        self._stop.set()
        self.pump.wake.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:  # noqa: BLE001 — stopping must not fail the shutdown
                log.exception("delivery task %s failed", task.get_name())
        self._tasks = []


def wants_delivery(bot: Any) -> bool:
    """Deliver notifications when the bot has the job services (tests of single cogs may run without them)."""
    services = getattr(bot, "services", None)
    return services is not None and getattr(services, "jobs", None) is not None
