"""Register the slash commands with Discord only when their definitions changed.

Discord limits command creates per day (200 per scope) and a sync on every start burns through them on a bot
that restarts often. So the bot hashes the exact payload it would PUT (with the scope and application id) and
keeps the hash in the database (``bot_state``, kind ``command_sync``): an unchanged hash only reads the
commands back (one GET, no write), unless Discord no longer has the same set (someone removed them by hand).
``atelier bot --sync`` forces the PUT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger("atelier.bot")
KIND = "command_sync"


@dataclass(frozen=True)
class SyncResult:
    commands: list[app_commands.AppCommand]
    synced: bool  # True: the definitions were PUT to Discord; False: unchanged, only read back
    digest: str


def payload_digest(payload: list[dict[str, Any]], scope: str, application_id: int | None) -> str:
    blob = json.dumps({"scope": scope, "app": application_id, "commands": payload}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _names(commands: list[Any]) -> set[tuple[str, int]]:
    return {(c["name"] if isinstance(c, dict) else c.name,
             int(c.get("type", 1) if isinstance(c, dict) else c.type.value)) for c in commands}


async def sync_if_changed(tree: app_commands.CommandTree, store: Any, *, guild_id: int | None,
                          force: bool = False) -> SyncResult:
    """Sync ``tree`` to ``guild_id`` (copying the global commands there) or globally, when needed.

    ``store``: a :class:`storage.bot_state.BotStateStore`, or None to always sync (no database)."""
    guild = discord.Object(id=guild_id) if guild_id else None
    if guild is not None:
        tree.copy_global_to(guild=guild)
    scope = f"guild:{guild_id}" if guild_id else "global"
    payload = [c.to_dict(tree) for c in tree.get_commands(guild=guild)]
    digest = payload_digest(payload, scope, tree.client.application_id)
    if store is not None and not force:
        held = await store.get(KIND, scope)
        if held is not None and held.payload.get("digest") == digest:
            current = await tree.fetch_commands(guild=guild)  # a read: not counted against command creates
            if _names(current) == _names(payload):
                log.info("commands unchanged since the last sync (%s…): not syncing %s", digest[:12], scope)
                return SyncResult(current, False, digest)
            log.info("Discord's commands differ from the last sync: syncing %s again", scope)
    commands = await tree.sync(guild=guild)
    if store is not None:
        await store.put(KIND, scope, {"digest": digest, "count": len(commands)})
    return SyncResult(commands, True, digest)
