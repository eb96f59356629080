"""Fixtures for bot tests: the real AtelierBot against the Discord emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.app import AtelierBot
from storage.settings import Settings, load_settings
from tests.bot.harness import bot_harness as _bot_harness
from tests.discord_emulator import DiscordEmulator


@pytest.fixture
def bot_harness():
    """The harness factory: ``async with bot_harness(services, settings) as (emu, bot): ...``."""
    return _bot_harness


@pytest.fixture
def bot_settings(tmp_path) -> Settings:
    """Plain settings with a private data dir (the harness adds the emulator's token/URLs/guild)."""
    return load_settings(data_dir=tmp_path / "atelier-data")


@pytest.fixture
async def emu_bot(bot_settings: Settings) -> AsyncIterator[tuple[DiscordEmulator, AtelierBot]]:
    """Emulator + bot with no services and only the meta cog (enough for the wiring itself)."""
    async with _bot_harness(None, bot_settings, cogs=("bot.cogs.meta",)) as pair:
        yield pair
