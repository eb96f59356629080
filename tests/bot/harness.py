"""Run the real AtelierBot against a fresh DiscordEmulator: ``async with bot_harness(services, settings) as (emu, bot)``.

Reusable by every cog test (via the ``bot_harness`` fixture in conftest.py) and by bench/bench_discord.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from discord.gateway import DiscordWebSocket
from discord.http import Route
from pydantic import SecretStr

from bot.app import AtelierBot
from bot.cogs import COGS
from storage.settings import Settings, load_settings
from tests.discord_emulator import DiscordEmulator

WATCHED_LOGGERS = ("discord", "atelier")


class _ErrorLog(logging.Handler):
    """Collects ERROR records from discord.py and the bot so failures (and timeouts) can show them."""

    def __init__(self, emu: DiscordEmulator) -> None:
        super().__init__(logging.ERROR)
        self.emu = emu
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        line = f"[{record.name}] {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({record.exc_info[1]!r})"
        self.emu.state.diagnostics.append(line)


def emulator_settings(emu: DiscordEmulator, settings: Settings | None = None, *, dev_guild: bool = True,
                      **overrides: Any) -> Settings:
    """``settings`` (or defaults) pointed at ``emu``: token, API base, gateway and (``dev_guild``) the guild to
    sync commands to; ``dev_guild=False`` syncs globally, which makes commands usable in DMs too."""
    base = settings if settings is not None else load_settings(**overrides)
    return base.model_copy(update={
        "discord_token": SecretStr(emu.token), "discord_api_base": emu.api_base,
        "discord_gateway_url": emu.gateway_url, "dev_guild": emu.guild_id if dev_guild else None,
    })


@asynccontextmanager
async def bot_harness(services: Any = None, settings: Settings | None = None, *, cogs: Sequence[str] = COGS,
                      dev_guild: bool = True, strict: bool = True, startup_timeout: float = 15.0,
                      emulator: DiscordEmulator | None = None, **emulator_options: Any
                      ) -> AsyncIterator[tuple[DiscordEmulator, AtelierBot]]:
    """Start an emulator and the bot (logged in, commands synced to the emulator's guild, READY).

    ``emulator_options`` go to :class:`DiscordEmulator` (users=…, channels=…, callback_deadline_s=…).
    ``dev_guild=False``: sync globally. ``emulator``: a not-yet-started emulator, for tests that need user ids
    before building services, e.g. admins::

        emu = DiscordEmulator()
        settings = make_settings(admin_user_ids=[str(emu.user("alice").id)])
        services = await build_services(settings)
        async with bot_harness(services, settings, emulator=emu) as (emu, bot): ...

    ``strict``: fail at exit if discord.py or the bot logged an ERROR (an unhandled exception, a payload the
    client could not parse …) or the emulator hit an internal error. Tests of the "something went wrong"
    path pass ``strict=False``.
    """
    saved_endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)  # login points them at the emulator
    try:
        emu = emulator or DiscordEmulator(**emulator_options)
        async with _running(emu, services, settings, cogs, dev_guild, strict, startup_timeout) as pair:
            yield pair
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_endpoints


@asynccontextmanager
async def bot_on(emu: DiscordEmulator, services: Any = None, settings: Settings | None = None, *,
                 cogs: Sequence[str] = COGS, dev_guild: bool = True, startup_timeout: float = 15.0,
                 force_sync: bool = False) -> AsyncIterator[AtelierBot]:
    """A bot process on an already running emulator, e.g. the one after a restart::

        async with bot_harness(services, settings) as (emu, bot):
            ...
            await bot.close()                                   # the first process goes away
            async with bot_on(emu, services, settings) as bot:  # …and a new one starts on the same database
                ...
    """
    bot_settings = emulator_settings(emu, settings, dev_guild=dev_guild)
    bot = AtelierBot(services=services, settings=bot_settings, cogs=cogs, guild_ready_timeout=0.05)
    bot.force_sync = force_sync
    async with bot:
        runner = asyncio.create_task(bot.start(emu.token), name="atelier-bot")
        runner.add_done_callback(lambda task: _note_crash(emu, task))
        try:
            await _wait_ready(bot, runner, emu, startup_timeout)
            yield bot
        finally:
            await bot.close()
            await asyncio.gather(runner, return_exceptions=True)


@asynccontextmanager
async def _running(emu: DiscordEmulator, services: Any, settings: Settings | None, cogs: Sequence[str],
                   dev_guild: bool, strict: bool, startup_timeout: float
                   ) -> AsyncIterator[tuple[DiscordEmulator, AtelierBot]]:
    async with emu:
        errors = _ErrorLog(emu)
        loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
        for logger in loggers:
            logger.addHandler(errors)
        try:
            async with bot_on(emu, services, settings, cogs=cogs, dev_guild=dev_guild,
                              startup_timeout=startup_timeout) as bot:
                yield emu, bot
        finally:
            for logger in loggers:
                logger.removeHandler(errors)
        problems = list(emu.state.internal_errors)
        if strict:
            problems += [f"[{r.name}] {r.getMessage()}" for r in errors.records]
        if problems:
            raise AssertionError("bot harness saw errors: " + " | ".join(problems))


def _note_crash(emu: DiscordEmulator, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        emu.state.diagnostics.append(f"the bot stopped: {task.exception()!r}")


async def _wait_ready(bot: AtelierBot, runner: asyncio.Task[None], emu: DiscordEmulator, limit_s: float) -> None:
    ready = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait({runner, ready}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        ready.cancel()
        runner.result()  # re-raise the startup failure (LoginFailure, …)
        raise AssertionError("the bot stopped before it was ready" + emu.state.recent_problems())
    if not done:
        ready.cancel()
        raise AssertionError(f"the bot was not ready after {limit_s:g}s" + emu.state.recent_problems())
