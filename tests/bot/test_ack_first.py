"""Every slash command acknowledges before it touches the database or the network: with the database's write
lock held by another process, each command (run by a first-time user, whose first step would be a write) is
still acknowledged within Discord's 3 s, and answers once the lock is released."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import png
from tests.discord_emulator import DiscordEmulator

SUBCOMMAND, GROUP = 1, 2
NO_STORAGE = {("help",)}  # static answers: may reply at once (type 4)


def leaf_commands(commands: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """(path, options) of every invocable slash command: ``("dataset", "add")``, ``("admin", "channels", "add")``."""
    for cmd in commands:
        if cmd.get("type", 1) != 1:
            continue
        yield from _leaves((cmd["name"],), cmd.get("options") or [])


def _leaves(path: tuple[str, ...], options: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    nested = [o for o in options if o["type"] in (SUBCOMMAND, GROUP)]
    if not nested:
        yield path, options
    for o in nested:
        yield from _leaves((*path, o["name"]), o.get("options") or [])


def required_values(emu: DiscordEmulator, options: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for o in options:
        if not o.get("required"):
            continue
        if o.get("choices"):
            values[o["name"]] = o["choices"][0]["value"]
        elif o["type"] == 3:
            values[o["name"]] = "1" * max(1, int(o.get("min_length") or 1))  # also valid image numbers
        elif o["type"] in (4, 10):
            values[o["name"]] = o.get("min_value") if o.get("min_value") is not None else 1
        elif o["type"] == 5:
            values[o["name"]] = False
        elif o["type"] == 6:
            values[o["name"]] = emu.user("alice")
        elif o["type"] == 7:
            values[o["name"]] = emu.channel("general")
        elif o["type"] == 11:
            values[o["name"]] = emu.upload("a.png", png(1))
        else:
            raise AssertionError(f"no test value for option type {o['type']} ({o['name']})")
    return values


async def test_every_command_acknowledges_while_the_database_is_locked(bot_harness, job_services, job_settings
                                                                       ) -> None:
    url = make_url(job_settings.resolved_database_url)
    if not url.drivername.startswith("sqlite"):
        pytest.skip("holds SQLite's write lock from another connection")
    async with bot_harness(job_services, job_settings) as (emu, bot):
        leaves = sorted(leaf_commands(emu.state.commands[emu.guild_id]))
        assert len(leaves) > 20, leaves
        lock = sqlite3.connect(url.database, isolation_level=None, timeout=10)
        lock.execute("BEGIN IMMEDIATE")  # another process is writing: every write now waits
        try:
            handles = {}
            for i, (path, options) in enumerate(leaves):
                user = emu.add_user(f"newcomer{i}", admin=True)  # first sight: actor() must write the user row
                handles[path] = await emu.slash(user, *path, options=required_values(emu, options))
            got = await asyncio.gather(*(h.response(timeout=5) for h in handles.values()), return_exceptions=True)
            answered = dict(zip(handles, got, strict=True))
            stuck = [" ".join(p) for p, r in answered.items() if isinstance(r, BaseException)]
            assert not stuck, f"not acknowledged while the database was busy: {stuck}"
            late = {" ".join(p): r.type for p, r in answered.items() if r.type != 5 and p not in NO_STORAGE}
            assert not late, f"answered without deferring first (callback types): {late}"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        replies = await asyncio.gather(*(h.reply(timeout=20) for h in handles.values()))
        assert all(r.text() for r in replies)  # each finished with a real answer once the database was free
