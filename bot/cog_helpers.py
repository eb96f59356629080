"""Small helpers shared by the element, generate and jobs cogs."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import discord
from discord import app_commands

from bot import render
from bot.context import actor, services_of
from storage.actors import Actor
from storage.errors import NotFound

WORK_SLOTS = 6  # storage-heavy handler bodies running at once (after their acknowledgement)


@asynccontextmanager
async def work_slot(interaction: discord.Interaction) -> AsyncIterator[None]:
    """Bound the storage work running at once, after the handler has acknowledged the interaction.

    Under a burst, a hundred handlers each doing a dozen database round trips keep the event loop so busy that
    new interactions wait to be acknowledged (Discord drops them after 3 s). With a bound, the queued bodies
    wait cheaply on a semaphore and new events get their ``defer`` out at once; SQLite serialises writes
    anyway, so throughput hardly changes.
    """
    client = interaction.client
    slots = getattr(client, "_atelier_work_slots", None)
    if slots is None:
        slots = asyncio.Semaphore(WORK_SLOTS)
        client._atelier_work_slots = slots  # type: ignore[attr-defined]
    async with slots:
        yield


def origin_of(interaction: discord.Interaction) -> dict[str, Any]:
    """Where a request came from, stored on the job so its result can be delivered with the bot token."""
    return {"guild_id": str(interaction.guild_id) if interaction.guild_id else None,
            "channel_id": str(interaction.channel_id) if interaction.channel_id else None,
            "dm": interaction.guild_id is None, "user_id": str(interaction.user.id),
            "interaction_id": str(interaction.id)}


async def read_actor(interaction: discord.Interaction) -> Actor:
    """Like :func:`bot.context.actor` but read-only for users already known (autocomplete runs per keystroke)."""
    guild = str(interaction.guild_id) if interaction.guild_id else None
    try:
        return await services_of(interaction).users.get(f"discord:{interaction.user.id}", guild_id=guild)
    except NotFound:
        return await actor(interaction)


def choices(pairs: Sequence[tuple[str, str]]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=render.truncate(label, 100), value=value[:100]) for label, value in pairs[:25]]


async def safe_choices(make: Callable[[], Awaitable[list[app_commands.Choice[str]]]]
                       ) -> list[app_commands.Choice[str]]:
    """Autocomplete must always answer (an error would only leave an empty, spinning list)."""
    try:
        return await make()
    except Exception:  # noqa: BLE001 — e.g. a database hiccup: show nothing rather than fail the request
        return []


def pack_text(text: str | None, limit: int = 30) -> str:
    """User text made safe for a custom_id argument (no ':'), or "-" for none."""
    if not text:
        return "-"
    return base64.urlsafe_b64encode(text[:limit].encode()).decode().rstrip("=") or "-"


def unpack_text(value: str) -> str | None:
    if value == "-":
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode(errors="replace")
    except (binascii.Error, ValueError):
        return None
