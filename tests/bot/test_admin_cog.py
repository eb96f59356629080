"""/quota and /admin quota|channels|banned-words: who may do what (checked in code) and the storage effect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.errors import InvalidInput
from tests.bot.dataset_world import World, dataset_world
from tests.discord_emulator import DiscordEmulator


@pytest.fixture
async def world(bot_harness, make_settings, database_url) -> AsyncIterator[World]:
    emu = DiscordEmulator()
    emu.add_user("dora", admin=True)  # a server admin (Discord ADMINISTRATOR) who is not an Atelier admin
    atelier_admin = str(emu.user("alice").id)
    async with dataset_world(bot_harness, make_settings, database_url, emulator=emu,
                             admin_user_ids=[atelier_admin], train_slots_per_period=3) as w:
        yield w


async def test_quota_shows_slots_used_left_and_when_the_next_frees(world: World) -> None:
    emu, bob, alice = world.emu, world.emu.user("bob"), world.emu.user("alice")
    fresh = await (await emu.slash(bob, "quota")).reply()
    assert fresh.ephemeral and fresh.content == ("🎟️ Training slots: **0 of 3** used in the last 30 days — **3 left**."
                                                 "\n🗄️ Dataset storage: **0 B of 2.0 GB** used.")
    async with world.services.db.transaction() as session:  # one slot consumed the way a training request does
        await world.services.quotas.charge(session, await world.actor(bob), None)
    used = await (await emu.slash(bob, "quota")).reply()
    assert "**1 of 3** used" in used.content and "**2 left**" in used.content
    assert "The next slot frees <t:" in used.content
    admin = await (await emu.slash(alice, "quota")).reply()
    assert admin.content.startswith("♾️ You have unlimited training slots")


async def test_admin_quota_is_for_atelier_admins_only(world: World) -> None:
    emu, alice, bob, dora = world.emu, world.emu.user("alice"), world.emu.user("bob"), world.emu.user("dora")
    for who in (bob, dora):  # a plain member, and a server admin: neither runs Atelier
        refused = await (await emu.slash(who, "admin", "quota", options={"user": bob, "slots": 50})).reply()
        assert refused.ephemeral and refused.content.startswith("❌ Only Atelier admins can change training quotas.")
    assert (await world.services.quotas.remaining(await world.actor(bob))).limit == 3

    granted = await (await emu.slash(alice, "admin", "quota", options={"user": bob, "slots": 7})).reply()
    assert granted.ephemeral and granted.content == "🎟️ bob now has 7 training slots per 30 days (0 used, 7 left)."
    assert "**0 of 7**" in (await (await emu.slash(bob, "quota")).reply()).content
    reset = await (await emu.slash(alice, "admin", "quota", options={"user": bob})).reply()
    assert reset.content.startswith("🎟️ bob is back to the default of 3 training slots per 30 days")
    closed = await (await emu.slash(alice, "admin", "quota", options={"user": dora, "slots": 0})).reply()
    assert "dora now has 0 training slots" in closed.content
    assert (await (await emu.slash(dora, "quota")).reply()).content.startswith("🚫 Training is not enabled")


async def test_generation_channels_by_server_admins(world: World) -> None:
    emu, bob, dora, alice = world.emu, world.emu.user("bob"), world.emu.user("dora"), world.emu.user("alice")
    gallery, general = emu.channel("gallery"), emu.channel("general")
    gid = str(emu.guild_id)
    for sub, opts in (("add", {"channel": gallery}), ("remove", {"channel": gallery}), ("list", {})):
        refused = await (await emu.slash(bob, "admin", "channels", sub, **opts)).reply()
        assert refused.ephemeral and refused.content.startswith("❌ Only server admins (Manage Server)"), sub
    assert (await world.services.guilds.get(gid)).generation_channels == []

    everywhere = await (await emu.slash(dora, "admin", "channels", "list")).reply()
    assert "every channel" in everywhere.content
    added = await (await emu.slash(dora, "admin", "channels", "add", channel=gallery)).reply()
    assert added.ephemeral and f"Generation is allowed only in: <#{gallery.id}>." in added.content
    assert added.allowed_mentions == {"parse": []}
    # the storage rule /generate uses (H8's side) now refuses other channels
    with pytest.raises(InvalidInput, match="not enabled in this channel"):
        await world.services.guilds.check_channel(gid, general.id)
    await world.services.guilds.check_channel(gid, gallery.id)

    also = await (await emu.slash(alice, "admin", "channels", "add", channel=general)).reply()  # Atelier admin
    assert f"<#{gallery.id}>, <#{general.id}>" in also.content
    await (await emu.slash(dora, "admin", "channels", "remove", channel=gallery)).reply()
    removed = await (await emu.slash(dora, "admin", "channels", "remove", channel=general)).reply()
    assert "every channel" in removed.content
    not_listed = await (await emu.slash(dora, "admin", "channels", "remove", channel=general)).reply()
    assert not_listed.content.startswith(f"❌ <#{general.id}> is not on the list.")
    await world.services.guilds.check_channel(gid, general.id)  # allowed again


async def test_banned_words_by_server_admins(world: World) -> None:
    emu, bob, dora = world.emu, world.emu.user("bob"), world.emu.user("dora")
    gid = str(emu.guild_id)
    refused = await (await emu.slash(bob, "admin", "banned-words", "add", words="dragon")).reply()
    assert refused.content.startswith("❌ Only server admins (Manage Server)")
    await world.services.guilds.check_text(gid, "a dragon")  # nothing was banned

    saved = await (await emu.slash(dora, "admin", "banned-words", "add", words="dragon, evil wizard")).reply()
    assert saved.ephemeral and saved.content == "✅ Saved. 🚫 Banned words (2): `dragon`, `evil wizard`"
    for prompt in ("a DRAGON at dawn", "an evil   wizard"):
        with pytest.raises(InvalidInput, match="is not allowed on this server"):
            await world.services.guilds.check_text(gid, prompt)
    await world.services.guilds.check_text(gid, "dragonfly on a leaf")  # whole words only

    listed = await (await emu.slash(dora, "admin", "banned-words", "list")).reply()
    assert listed.content == "🚫 Banned words (2): `dragon`, `evil wizard`"
    removed = await (await emu.slash(dora, "admin", "banned-words", "remove", words="Dragon")).reply()
    assert removed.content == "✅ Removed. 🚫 Banned words (1): `evil wizard`"
    await world.services.guilds.check_text(gid, "a dragon")
    unknown = await (await emu.slash(dora, "admin", "banned-words", "remove", words="unicorn")).reply()
    assert unknown.content.startswith("❌ None of those words were banned.")
