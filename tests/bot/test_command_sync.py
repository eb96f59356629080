"""Slash commands are registered with Discord only when their definitions changed (a stored hash), or when
forced; a restart with the same commands only reads them back."""

from __future__ import annotations

import pytest

from storage.services import build_services
from tests.bot.harness import bot_on

META = ("bot.cogs.meta",)


@pytest.mark.slow
async def test_commands_sync_only_when_their_definitions_change(bot_harness, make_settings, database_url) -> None:
    settings = make_settings(database_url=database_url)
    services = await build_services(settings)
    try:
        async with bot_harness(services, settings, cogs=META) as (emu, bot):
            assert bot.commands_synced and emu.state.command_puts == [emu.guild_id]
            await bot.close()
            async with bot_on(emu, services, settings, cogs=META) as again:  # a restart, same commands
                assert not again.commands_synced
                assert {c.name for c in again.synced_commands} == {"help", "ping"}  # read back, with ids
                assert all(c.id for c in again.synced_commands)
                assert "Pong!" in (await (await emu.slash(emu.user("alice"), "ping")).reply()).content
            assert emu.state.command_puts == [emu.guild_id]

            async with bot_on(emu, services, settings, cogs=(*META, "tests.bot.probe_cog")) as changed:
                assert changed.commands_synced and emu.command("probe")  # new definitions: synced
            async with bot_on(emu, services, settings, cogs=(*META, "tests.bot.probe_cog"), force_sync=True) as forced:
                assert forced.commands_synced  # `atelier bot --sync`
            emu.state.commands[emu.guild_id] = []  # someone removed them on Discord's side
            async with bot_on(emu, services, settings, cogs=(*META, "tests.bot.probe_cog")) as healed:
                assert healed.commands_synced and emu.command("ping")
            assert len(emu.state.command_puts) == 4
            assert await services.bot_state.count("command_sync") == 1  # one row per scope
    finally:
        await services.aclose()
