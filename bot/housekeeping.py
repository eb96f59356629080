"""The bot's periodic chores: tell people their DM upload session timed out, and purge expired bot state
(training confirmations, menu picks) from the database. Every ``ATELIER_BOT_HOUSEKEEPING_SECONDS``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bot import render
from bot.context import send_dm
from bot.dataset_render import name as quoted
from bot.deliverer import discord_user_id

log = logging.getLogger("atelier.bot")
PURGE_AFTER_S = 24 * 3600  # keep expired rows a day, so a late press still hears "expired", not "unknown"


class Housekeeping:
    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.services = bot.services
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def announce_timeouts(self) -> int:
        """DM each owner of an upload session that ran out of time (once: the session ends as it is taken);
        returns how many were told."""
        told = 0
        for up in await self.services.datasets.take_timed_out_upload_sessions():
            uid = discord_user_id(up.owner_external_id)
            if uid is None:
                continue
            text = (f"⌛ Your upload session for {quoted(up.dataset)} timed out; the dataset has "
                    f"{render.plural(up.image_count, 'image')}. Images you send me now are not added — open a new "
                    f"session with `/dataset upload` to add more.")
            try:
                if await send_dm(self.bot, uid, text) is not None:
                    told += 1
            except Exception:  # noqa: BLE001 — one user's failure must not keep the others from hearing
                log.exception("could not announce the upload timeout to user %s", uid)
        return told

    async def run_once(self) -> int:
        told = await self.announce_timeouts()
        await self.services.bot_state.purge(older_than_s=PURGE_AFTER_S)
        return told

    async def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 — a failed pass must not stop later ones
                log.exception("bot housekeeping failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def start(self) -> None:
        interval = float(self.bot.settings.bot_housekeeping_seconds)
        self._task = asyncio.create_task(self._run(interval), name="atelier-housekeeping")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 10)
            self._task = None


def wants_housekeeping(bot: Any) -> bool:
    services = getattr(bot, "services", None)
    return services is not None and getattr(services, "bot_state", None) is not None
