"""The bot's wiring end to end: real discord.py client ↔ emulator (login, READY, sync, replies, DMs, errors)."""

from __future__ import annotations

import discord
import pytest
from pydantic import SecretStr

from bot.app import AtelierBot, run_bot
from bot.context import send_dm
from bot.errors import BotStartupError
from tests.bot.harness import emulator_settings
from tests.discord_emulator import DiscordEmulator
from tests.discord_emulator.gateway import PRIVILEGED_INTENTS


async def test_login_ready_and_dev_guild_sync(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, bot = emu_bot
    assert bot.user is not None and bot.user.id == emu.application_id
    guild = bot.get_guild(emu.guild_id)
    assert guild is not None and {c.name for c in guild.text_channels} == {"general", "gallery"}
    assert guild.member_count == 4 and guild.me is not None  # alice, bob, carol + the bot
    # synced instantly to the dev guild only, with ids the bot got back
    assert set(emu.state.commands) == {emu.guild_id}
    assert {c["name"] for c in emu.state.commands[emu.guild_id]} == {"help", "ping"}
    assert {c.name for c in bot.synced_commands} == {"help", "ping"}
    assert all(c.id for c in bot.synced_commands)
    session = emu.gateway.current
    assert session is not None and emu.gateway.stats.identifies == 1
    assert session.intents & PRIVILEGED_INTENTS == 0


async def test_help_is_an_ephemeral_reply_listing_commands(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = emu_bot
    handle = await emu.slash(emu.user("alice"), "help")
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    msg = await handle.reply()
    assert msg.ephemeral and msg is handle.original()
    text = msg.text()
    assert "Atelier — what I can do" in text
    assert "/ping" in text and "flux-dev" in text and "generation only" in text
    assert msg.allowed_mentions == {"parse": []}  # AllowedMentions.none() on every message


async def test_help_topic_autocomplete_and_detail(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = emu_bot
    alice = emu.user("alice")
    choices = await emu.autocomplete(alice, "help", focused="topic", value="pi")
    assert [c["value"] for c in choices] == ["ping"]
    msg = await (await emu.slash(alice, "help", topic="ping")).reply()
    assert msg.ephemeral and msg.embeds[0]["title"] == "/ping"
    assert "`dm` (optional)" in msg.text()


async def test_domain_error_becomes_friendly_ephemeral_reply(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = emu_bot
    msg = await (await emu.slash(emu.user("bob"), "help", topic="nope")).reply()
    assert msg.ephemeral
    assert msg.content.startswith("❌ There is no command called /nope.")
    assert "💡 Topics: /help, /ping." in msg.content


async def test_ping_button_answers_only_its_owner(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = emu_bot
    alice, bob = emu.user("alice"), emu.user("bob")
    handle = await emu.slash(alice, "ping")
    assert (await handle.response()).type == 5  # deferred first, then followed up
    msg = await handle.reply()
    assert not msg.ephemeral and "Pong!" in msg.content
    assert msg.custom_ids == [f"atelier:meta:ping:@{alice.id}"]
    edits = len(msg.history)

    other = await emu.click(bob, msg, msg.custom_ids[0])
    refusal = await other.reply()
    assert refusal.ephemeral and "belongs to someone else" in refusal.content
    assert len(msg.history) == edits  # bob changed nothing

    mine = await emu.click(alice, msg, msg.custom_ids[0])
    assert (await mine.response()).type == 7  # the button's own message is updated in place
    assert len(msg.history) == edits + 1 and "Pong!" in msg.content
    assert msg.custom_ids == [f"atelier:meta:ping:@{alice.id}"]


async def test_ping_sends_a_test_dm(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = emu_bot
    alice = emu.user("alice")
    msg = await (await emu.slash(alice, "ping", dm=True)).reply()
    assert "I sent you a test DM" in msg.content
    dm = await emu.wait_for_message(alice, lambda m: "Test DM from Atelier" in m.content)
    assert dm.channel_id == emu.dm(alice).id and not dm.ephemeral


async def test_closed_dms_reach_the_bot_as_forbidden(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, bot = emu_bot
    bob = emu.user("bob")
    emu.set_dms_open(bob, False)
    user = await bot.fetch_user(bob.id)
    with pytest.raises(discord.Forbidden) as caught:
        await user.send("hello")
    assert caught.value.status == 403 and caught.value.code == 50007
    assert await send_dm(bot, bob.id, "hello") is None
    msg = await (await emu.slash(bob, "ping", dm=True)).reply()
    assert "couldn't DM you" in msg.content
    assert emu.messages(bob) == []


async def test_user_dm_with_attachment_reaches_the_bot(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    import asyncio
    import io

    from PIL import Image

    emu, bot = emu_bot
    alice = emu.user("alice")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buf, format="PNG")
    att = emu.upload("cat.png", buf.getvalue())
    received = asyncio.ensure_future(bot.wait_for("message", check=lambda m: m.author.id == alice.id, timeout=5))
    await emu.send_dm(alice, "my cat", [att])
    message: discord.Message = await received
    assert isinstance(message.channel, discord.DMChannel) and message.content == "my cat"
    [attachment] = message.attachments
    assert (attachment.filename, attachment.width, attachment.height) == ("cat.png", 64, 48)
    assert attachment.content_type == "image/png"
    assert await attachment.read() == buf.getvalue()


async def test_resume_after_reconnect(emu_bot: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = emu_bot
    await emu.reconnect()
    assert emu.gateway.stats.resumes == 1 and emu.gateway.stats.identifies == 1
    msg = await (await emu.slash(emu.user("carol"), "help")).reply()
    assert "what I can do" in msg.text()


async def test_wrong_token_is_one_clear_line() -> None:
    async with DiscordEmulator() as emu:
        settings = emulator_settings(emu).model_copy(update={"discord_token": SecretStr("not-the-token")})
        with pytest.raises(BotStartupError) as caught:
            await run_bot(settings, None)
    message = str(caught.value)
    assert message.startswith("Discord rejected the token in ATELIER_DISCORD_TOKEN") and "\n" not in message
    assert any("401" in line for line in emu.state.rejections)


async def test_missing_token_names_the_variable() -> None:
    async with DiscordEmulator() as emu:
        settings = emulator_settings(emu).model_copy(update={"discord_token": None})
        with pytest.raises(BotStartupError, match=r"^set ATELIER_DISCORD_TOKEN"):
            await run_bot(settings, None)
