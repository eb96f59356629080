"""Every interaction path a cog will use, through the real client and the emulator (via tests/bot/probe_cog.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.app import AtelierBot
from tests.discord_emulator import DiscordEmulator, UsageError

PROBE_COGS = ("bot.cogs.meta", "tests.bot.probe_cog")


@pytest.fixture
async def probe(bot_harness, bot_settings) -> AsyncIterator[tuple[DiscordEmulator, AtelierBot]]:
    # strict=False: /boom logs an unhandled error on purpose
    async with bot_harness(None, bot_settings, cogs=PROBE_COGS, strict=False) as pair:
        yield pair


async def test_bug_gets_a_reference_and_domain_error_a_hint(probe: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = probe
    alice = emu.user("alice")
    bug = await (await emu.slash(alice, "boom")).reply()
    assert bug.ephemeral and bug.content.startswith("❌ Something went wrong (ref ")
    ref = bug.content.split("(ref ")[1].split(")")[0]
    assert any(f"ref {ref}" in line and "kaboom" in line for line in emu.state.diagnostics)
    # after a defer the error arrives as the follow-up that fills the "thinking…" message
    handle = await emu.slash(alice, "quota")
    quota = await handle.reply()
    assert (await handle.response()).type == 5 and quota is handle.original()
    assert quota.ephemeral and "❌ You have used all 5 training slots" in quota.content
    assert "💡 Slots free up on the 1st." in quota.content


async def test_routed_buttons_select_and_modal(probe: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, bot = probe
    alice, bob = emu.user("alice"), emu.user("bob")
    posted = await (await emu.slash(alice, "buttons")).reply()
    fail = await (await emu.click(alice, posted, "atelier:probe:fail:42")).reply()
    assert fail.ephemeral and "No slot for 42." in fail.content
    echo = await (await emu.click(bob, posted, "atelier:probe:echo:7:x")).reply()  # no owner: anyone may press
    assert echo.ephemeral and echo.content == "echo 7 x for bob"
    gone = await (await emu.click(alice, posted, "atelier:probe:missing")).reply()
    assert "outdated version" in gone.content

    pick_id = f"atelier:probe:pick:@{alice.id}"
    refused = await (await emu.select(bob, posted, pick_id, ["a"])).reply()
    assert "belongs to someone else" in refused.content
    with pytest.raises(UsageError, match="no option"):
        await emu.select(alice, posted, pick_id, ["z"])
    picked = await (await emu.select(alice, posted, pick_id, ["a", "c"])).reply()
    assert picked is posted, picked
    assert posted.content == "picked a,c"

    opener = await emu.click(alice, posted, "atelier:probe:rename:99")
    modal = (await opener.response()).modal
    assert modal["custom_id"] == "atelier:probe:renamed:99" and modal["title"] == "Rename"
    with pytest.raises(UsageError, match="required"):
        await emu.modal_submit(alice, opener, {})
    await (await emu.modal_submit(alice, opener, {"name": "Whiskers"})).reply()
    assert posted.content == "item 99 is now Whiskers"
    assert bot.router.routes == sorted(["atelier:meta:ping", "atelier:probe:echo", "atelier:probe:fail",
                                        "atelier:probe:pick", "atelier:probe:rename", "atelier:probe:renamed"])


async def test_message_context_menu_sees_the_attachments(probe: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = probe
    bob = emu.user("bob")
    post = await emu.send_message(bob, "gallery", "look", [emu.upload("a.png", b"x"), emu.upload("b.jpg", b"y")])
    answer = await (await emu.context_menu(emu.user("alice"), "Count attachments", post)).reply()
    assert answer.content == "2 attachment(s): a.png, b.jpg"


async def test_followups_edits_files_and_deletes(probe: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = probe
    handle = await emu.slash(emu.user("carol"), "steps")
    await handle.wait_original(lambda m: m.content == "step 1 (edited)")
    first, second, third = await handle.followups(3)
    assert first is handle.original() and not first.ephemeral
    assert [h["content"] for h in first.history] == ["", "step 1"]  # placeholder → step 1 → edited
    assert second.ephemeral and second.content == "step 2 done" and second.history[0]["content"] == "step 2"
    assert second.files == {"hello.txt": b"hi", "more.txt": b"more"}
    assert third.deleted
    async with aiohttp.ClientSession() as http:  # the CDN serves what the bot uploaded
        async with http.get(second.attachments[1].url) as resp:
            assert resp.status == 200 and await resp.read() == b"more"


async def test_attachment_option_and_file_in_the_initial_response(probe: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = probe
    upload = emu.upload("notes.txt", b"hello world")
    handle = await emu.slash(emu.user("alice"), "probe", "file", attachment=upload)
    response = await handle.response()  # a multipart callback (type 4 + files[0])
    assert response.type == 4 and response.ephemeral
    assert response.message is not None and response.message.content == "notes.txt: 11 bytes"
    assert response.message.files == {"echo-notes.txt": b"hello world"}


async def test_subcommand_group_options_are_nested_and_checked(probe: tuple[DiscordEmulator, AtelierBot]) -> None:
    emu, _ = probe
    alice = emu.user("alice")
    msg = await (await emu.slash(alice, "probe", "deep", "echo", text="hi", times=3)).reply()
    assert msg.content == "hi hi hi"
    sent = emu.state.interactions[max(emu.state.interactions)].payload["data"]["options"]
    assert sent == [{"type": 2, "name": "deep", "options": [{"type": 1, "name": "echo", "options": [
        {"type": 3, "name": "text", "value": "hi"}, {"type": 4, "name": "times", "value": 3}]}]}]
    with pytest.raises(UsageError, match="between 1 and 3"):
        await emu.slash(alice, "probe", "deep", "echo", text="hi", times=4)
    with pytest.raises(UsageError, match="missing required"):
        await emu.slash(alice, "probe", "deep", "echo")
    with pytest.raises(UsageError, match="needs a subcommand"):
        await emu.slash(alice, "probe", "deep")
    overview = (await (await emu.slash(alice, "help")).reply()).text()
    assert "`/probe deep echo` — Echo text from a nested subcommand" in overview
    assert "right-click a message → Apps → **Count attachments**" in overview
    topic = await (await emu.slash(alice, "help", topic="probe deep")).reply()
    assert [f["name"] for f in topic.embeds[0]["fields"]] == ["/probe deep echo"]
    assert "`times` (optional) — How many times" in topic.text()
    with pytest.raises(UsageError, match="only synced to the guild"):
        await emu.slash(alice, "help", at=alice)


async def test_global_sync_makes_commands_usable_in_dms(bot_harness, bot_settings) -> None:
    async with bot_harness(None, bot_settings, cogs=PROBE_COGS, dev_guild=False) as (emu, bot):
        assert set(emu.state.commands) == {None}
        alice = emu.user("alice")
        handle = await emu.slash(alice, "probe", "deep", "echo", text="psst", at=alice)
        msg = await handle.reply()
        assert msg.channel_id == emu.dm(alice).id and msg.content == "psst"
        assert handle.interaction.payload["context"] == 1 and "guild_id" not in handle.interaction.payload


async def test_actor_comes_from_the_real_services(bot_harness, services, settings) -> None:
    # the shared ``services`` fixture (tests/conftest.py): storage.services.build_services on a migrated DB
    async with bot_harness(services, settings, cogs=PROBE_COGS) as (emu, bot):
        assert bot.services is services
        alice = emu.user("alice")
        first = await (await emu.slash(alice, "probe", "whoami")).reply()
        again = await (await emu.slash(alice, "probe", "whoami")).reply()
        assert first.content == again.content  # the same user row on second sight
        assert first.content.startswith(f"discord:{alice.id} #") and f"in {emu.guild_id} as alice" in first.content


async def test_strict_harness_fails_a_test_whose_bot_logged_an_error(bot_harness, bot_settings) -> None:
    with pytest.raises(AssertionError, match=r"bot harness saw errors: \[atelier.bot\] unhandled error"):
        async with bot_harness(None, bot_settings, cogs=PROBE_COGS) as (emu, _):
            await (await emu.slash(emu.user("alice"), "boom")).reply()


async def test_admins_known_before_services_are_built(bot_harness, make_settings, database_url) -> None:
    from storage.services import build_services

    emu = DiscordEmulator()  # user ids exist before the emulator starts
    settings = make_settings(database_url=database_url, admin_user_ids=[str(emu.user("alice").id)])
    services = await build_services(settings)
    try:
        async with bot_harness(services, settings, cogs=PROBE_COGS, emulator=emu) as (emu, _):
            alice = await (await emu.slash(emu.user("alice"), "probe", "whoami")).reply()
            bob = await (await emu.slash(emu.user("bob"), "probe", "whoami")).reply()
            assert alice.content.endswith("as alice (admin)") and bob.content.endswith("as bob")
    finally:
        await services.aclose()
