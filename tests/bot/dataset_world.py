"""A running world for dataset/admin cog tests: real services on a temp data dir + the real bot + the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bot.app import AtelierBot
from storage.actors import Actor
from storage.services import Services, build_services
from tests.discord_emulator import DiscordEmulator
from tests.discord_emulator.handle import InteractionHandle
from tests.discord_emulator.state import Message, User

COGS = ("bot.cogs.meta", "bot.cogs.dataset", "bot.cogs.admin")


@dataclass
class World:
    emu: DiscordEmulator
    bot: AtelierBot
    services: Services

    async def ds(self, user: User, sub: str, **options: Any) -> InteractionHandle:
        """``/dataset <sub>`` (options by name; ``name`` clashes with the driver's own argument)."""
        return await self.emu.slash(user, "dataset", sub, options=options)

    async def ds_reply(self, user: User, sub: str, **options: Any) -> Message:
        return await (await self.ds(user, sub, **options)).reply()

    async def actor(self, user: User) -> Actor:
        return await self.services.users.ensure(f"discord:{user.id}")

    async def count(self, user: User, dataset: str) -> int:
        return (await self.services.datasets.get(await self.actor(user), dataset)).image_count


@asynccontextmanager
async def dataset_world(bot_harness: Any, make_settings: Any, database_url: str, *,
                        emulator: DiscordEmulator | None = None, dev_guild: bool = True, strict: bool = True,
                        **overrides: Any) -> AsyncIterator[World]:
    """Settings (tiny images allowed) → services → bot harness; everything closed afterwards."""
    overrides.setdefault("min_image_side", 32)
    settings = make_settings(database_url=database_url, **overrides)
    services = await build_services(settings)
    try:
        async with bot_harness(services, settings, cogs=COGS, emulator=emulator, dev_guild=dev_guild,
                               strict=strict) as (emu, bot):
            yield World(emu, bot, services)
    finally:
        await services.aclose()
