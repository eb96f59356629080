"""Every way images arrive: the message menu, a .zip with captions, a DM upload session — and what is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from aiohttp import web
from sqlalchemy import update

from bot.attachments import AttachmentDownloader, SizeCaps
from bot.cogs.dataset.add import PendingPicks
from storage.db.models import UploadSession, utcnow
from tests.bot.dataset_world import COGS, World, dataset_world
from tests.bot.harness import bot_on
from tests.bot.images import jpeg, pixel_bomb_png, png, slip_only_zip, text_renamed_png, zip_of
from tests.discord_emulator import UsageError

SMALL_UPLOADS = 40_000  # bytes: a 64 px noise PNG is ~12 KB, a 128 px one ~49 KB


@pytest.fixture
async def world(bot_harness, make_settings, database_url) -> AsyncIterator[World]:
    async with dataset_world(bot_harness, make_settings, database_url, max_upload_bytes=SMALL_UPLOADS) as w:
        yield w


async def test_message_menu_adds_the_images_of_any_message(world: World) -> None:
    emu, alice, bob, carol = world.emu, world.emu.user("alice"), world.emu.user("bob"), world.emu.user("carol")
    await world.ds_reply(alice, "create", name="cats")
    await world.ds_reply(alice, "create", name="dogs")
    post = await emu.send_message(bob, "gallery", "look at these", [
        emu.upload("a.png", png(1)), emu.upload("b.jpg", jpeg(2)), emu.upload("notes.txt", b"not an image")])

    menu = await emu.context_menu(alice, "Add to dataset", post)
    picker = await menu.reply()
    assert picker.ephemeral and "Add 2 files from that message to which dataset?" in picker.content
    (select_id,) = picker.custom_ids
    assert select_id == f"atelier:dataset:pick:{post.channel_id}:{post.id}:@{alice.id}"
    assert [o["value"] for o in picker.component(select_id)["options"]] == ["dogs", "cats"]  # last used first
    with pytest.raises(UsageError, match="someone else's ephemeral"):
        await emu.select(bob, picker, select_id, ["cats"])

    done = await (await emu.select(alice, picker, select_id, ["cats"])).reply()
    assert done is picker and picker.custom_ids == []  # the select is replaced by the report
    assert picker.embeds[0]["title"] == "📥 cats: 2 added"
    assert "#1 a.png" in picker.text() and "#2 b.jpg" in picker.text()
    assert await world.count(alice, "cats") == 2 and await world.count(alice, "dogs") == 0

    plain = await emu.send_message(bob, "gallery", "just words")
    nothing = await (await emu.context_menu(alice, "Add to dataset", plain)).reply()
    assert nothing.ephemeral and nothing.content.startswith("❌ There are no images in that message.")
    no_datasets = await (await emu.context_menu(carol, "Add to dataset", post)).reply()
    assert no_datasets.content.startswith("❌ You have no datasets yet.") and "/dataset create" in no_datasets.content

    # the attachments are stored with the pick: after a bot restart it still works, with the message gone meanwhile
    more = await emu.send_message(bob, "gallery", "more", [emu.upload("c.png", png(3)), emu.upload("d.png", png(4))])
    picker = await (await emu.context_menu(alice, "Add to dataset", more)).reply()
    emu.state.messages[more.id].deleted = True
    later = await (await emu.context_menu(alice, "Add to dataset", post)).reply()
    await world.bot.close()
    async with bot_on(emu, world.services, world.bot.settings, cogs=COGS):
        await (await emu.select(alice, picker, picker.custom_ids[0], ["dogs"])).reply()
        assert picker.embeds[0]["title"] == "📥 dogs: 2 added" and "c.png" in picker.text()
        # once the stored pick has expired the bot asks Discord for the message again…
        await world.services.bot_state.drop(PendingPicks.KIND, f"{alice.id}:{post.id}")
        await (await emu.select(alice, later, later.custom_ids[0], ["dogs"])).reply()
        assert later.embeds[0]["title"] == "📥 dogs: 2 added"
        # …and when that message is gone too, says what to do
        third = await (await emu.context_menu(alice, "Add to dataset", post)).reply()
        await world.services.bot_state.drop(PendingPicks.KIND, f"{alice.id}:{post.id}")
        emu.state.messages[post.id].deleted = True
        expired = await (await emu.select(alice, third, third.custom_ids[0], ["dogs"])).reply()
        assert expired.ephemeral and expired.content.startswith("❌ This menu has expired.")


async def test_zip_attachment_is_imported_with_captions_by_content(world: World) -> None:
    emu, alice = world.emu, world.emu.user("alice")
    await world.ds_reply(alice, "create", name="style")
    archive = zip_of({"set/01.png": png(10), "set/01.txt": "ohwxstyle, a red barn", "set/02.jpg": jpeg(11),
                      "set/02.txt": "ohwxstyle, a lighthouse", "set/readme.md": "hello"})
    # named .bin on purpose: archives are recognised by content, not by name
    report = await world.ds_reply(alice, "add", name="style", image1=emu.upload("photos.bin", archive),
                                  image2=emu.upload("loose.png", png(12)))
    text = report.text()
    assert report.embeds[0]["title"] == "📥 style: 3 added, 1 refused"
    assert "#1 loose.png" in text  # entries are shown as "<zip> › <file name>", never as paths
    assert "#2 photos.bin › 01.png" in text and "#3 photos.bin › 02.jpg" in text
    assert "**photos.bin › readme.md** — This is a text file" in text  # not an image: refused, with a reason
    info = await world.services.datasets.get(await world.actor(alice), "style")
    assert [(i.index, i.caption, i.source) for i in info.images or []] == [
        (1, "", "upload"), (2, "ohwxstyle, a red barn", "zip"), (3, "ohwxstyle, a lighthouse", "zip")]


async def test_hostile_attachments_are_refused_per_file_and_nothing_is_added(world: World) -> None:
    emu, alice = world.emu, world.emu.user("alice")
    await world.ds_reply(alice, "create", name="cats")
    files = {
        "image1": emu.upload("notes.png", text_renamed_png(), "image/png"),
        "image2": emu.upload("bomb.png", pixel_bomb_png()),
        "image3": emu.upload("slip.zip", slip_only_zip(png(3))),
        "image4": emu.upload("huge.png", png(4, size=128)),  # over the 40 KB upload cap of this world
    }
    handle = await world.ds(alice, "add", name="cats", **files)
    report = await handle.reply()
    assert report.ephemeral
    text = report.text()
    assert report.embeds[0]["title"].startswith("📥 cats: 0 added, ")
    assert "**notes.png** — " in text and "**bomb.png** — " in text and "**huge.png** — huge.png is " in text
    assert "the limit for an image here is 39.1 KB" in text
    assert "slip.zip ›" in text or "**slip.zip** — " in text
    assert "💡" in text  # every refusal says what to do
    assert "#1" not in text
    assert await world.count(alice, "cats") == 0


async def test_duplicates_name_the_image_they_duplicate(world: World) -> None:
    emu, alice = world.emu, world.emu.user("alice")
    await world.ds_reply(alice, "create", name="cats")
    await world.ds_reply(alice, "add", name="cats", image1=emu.upload("first.png", png(5)))
    again = await world.ds_reply(alice, "add", name="cats", image1=emu.upload("copy.png", png(5)),
                                 image2=emu.upload("new.png", png(6)), image3=emu.upload("new-again.png", png(6)))
    text = again.text()
    assert again.embeds[0]["title"] == "📥 cats: 1 added, 2 refused"
    assert "**copy.png** — Duplicate of #1 (first.png)" in text
    assert "**new-again.png** — Duplicate of #2 (new.png)" in text
    assert await world.count(alice, "cats") == 2


async def test_dm_upload_session_adds_each_message_until_done(world: World) -> None:
    emu, alice, bob = world.emu, world.emu.user("alice"), world.emu.user("bob")
    await world.ds_reply(alice, "create", name="cats")
    opened = await world.ds_reply(alice, "upload", name="cats", minutes=5)
    assert opened.ephemeral and opened.content.startswith("📬 Check your DMs")
    invite = await emu.wait_for_message(alice, lambda m: "Upload session for “cats”" in m.content)
    assert "Send me images here" in invite.content

    mark = emu.mark()
    sent = await emu.send_dm(alice, "", [emu.upload("dm1.png", png(20)), emu.upload("dm2.png", png(21))])
    answer = await emu.wait_for_message(alice, lambda m: bool(m.embeds), after=mark)
    assert answer.message_reference and int(answer.message_reference["message_id"]) == sent.id
    assert answer.embeds[0]["title"] == "📥 cats: 2 added" and answer.allowed_mentions["parse"] == []
    mark = emu.mark()
    await emu.send_dm(alice, "", [emu.upload("dm3.txt", b"words")])
    refused = await emu.wait_for_message(alice, lambda m: bool(m.embeds), after=mark)
    assert refused.embeds[0]["title"] == "📥 cats: 0 added, 1 refused"
    assert await world.count(alice, "cats") == 2

    closed = await world.ds_reply(alice, "done")
    assert closed.content.startswith("✅ Upload session closed. “cats” has 2 images")
    mark = emu.mark()
    await emu.send_dm(alice, "", [emu.upload("late.png", png(22))])
    late = await emu.wait_for_message(alice, after=mark)
    assert late.content.startswith("❌ You have no upload session open.")
    assert await world.count(alice, "cats") == 2
    again = await world.ds_reply(alice, "done")
    assert again.content.startswith("❌ You have no upload session open.")

    # "done" typed in the DM closes it too
    await world.ds_reply(alice, "upload", name="cats")
    mark = emu.mark()
    await emu.send_dm(alice, "done")
    bye = await emu.wait_for_message(alice, after=mark)
    assert bye.content.startswith("✅ Upload session closed.")
    assert await world.services.datasets.upload_session(await world.actor(alice)) is None

    # closed DMs: the session is not left open and the user is told what to do
    await world.ds_reply(bob, "create", name="dogs")
    emu.set_dms_open(bob, False)
    shut = await world.ds_reply(bob, "upload", name="dogs")
    assert shut.content.startswith("❌ I can't send you direct messages") and "Privacy Settings" in shut.content
    assert await world.services.datasets.upload_session(await world.actor(bob)) is None


async def test_a_timed_out_upload_session_is_announced_in_the_dm_once(bot_harness, make_settings, database_url
                                                                       ) -> None:
    async with dataset_world(bot_harness, make_settings, database_url, bot_housekeeping_seconds=0.2) as world:
        emu, alice = world.emu, world.emu.user("alice")
        await world.ds_reply(alice, "create", name="cats")
        await world.ds_reply(alice, "upload", name="cats", minutes=1)
        mark = emu.mark()
        await emu.send_dm(alice, "", [emu.upload("dm1.png", png(30))])
        await emu.wait_for_message(alice, lambda m: bool(m.embeds), after=mark)
        async with world.services.db.transaction() as session:  # a minute later
            await session.execute(update(UploadSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        timed_out = await emu.wait_for_message(alice, lambda m: "timed out" in m.content, after=mark)
        assert "“cats” timed out; the dataset has 1 image" in timed_out.content and "/dataset upload" in timed_out.content
        assert await world.bot.housekeeping.run_once() == 0  # told once: the session ended as it was announced
        assert [m for m in emu.messages(alice) if "timed out" in m.content] == [timed_out]
        mark = emu.mark()
        await emu.send_dm(alice, "", [emu.upload("late.png", png(31))])
        late = await emu.wait_for_message(alice, after=mark)
        assert late.content.startswith("❌ You have no upload session open.")
        assert await world.count(alice, "cats") == 1


@dataclass
class _LyingAttachment:
    """An attachment whose reported size is wrong (the download must be capped anyway)."""

    filename: str
    size: int
    url: str
    content_type: str | None = "image/png"


async def test_downloads_are_capped_even_when_the_reported_size_lies(world: World) -> None:
    big = world.emu.upload("big.png", png(30, size=128))
    zipped = world.emu.upload("named.png", zip_of({"a.png": png(31)}))

    async def chunked(request: web.Request) -> web.StreamResponse:  # no Content-Length: only streaming can tell
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(bytes(4096))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/stream.png", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    downloader = AttachmentDownloader()
    try:
        got = await downloader.fetch([_LyingAttachment("big.png", 10, big.url),
                                      _LyingAttachment("stream.png", 10, f"http://127.0.0.1:{port}/stream.png"),
                                      _LyingAttachment("named.png", zipped.size, zipped.url)],
                                     SizeCaps(image=20_000, archive=1_000_000))
    finally:
        await downloader.aclose()
        await runner.cleanup()
    declared, streamed = got.refused
    assert declared.code == "too_large" and declared.reason.startswith("big.png is 48.2 KB; the limit")
    assert streamed.code == "too_large" and streamed.reason.startswith("stream.png is over 19.5 KB; the limit")
    assert [a.filename for a in got.archives] == ["named.png"] and not got.images  # a zip, by content


def test_size_caps_take_the_lower_of_discord_and_settings(make_settings) -> None:
    settings = make_settings(max_upload_bytes=5_000_000, max_zip_bytes=50_000_000)
    assert SizeCaps.for_upload(settings, 10_000_000) == SizeCaps(image=5_000_000, archive=10_000_000)
    assert SizeCaps.for_upload(settings, None) == SizeCaps(image=5_000_000, archive=50_000_000)


async def test_a_large_zip_is_spooled_to_a_temporary_file_not_held_in_memory(world: World) -> None:
    import os

    noise = {f"{i}.png": os.urandom(600_000) for i in range(3)}  # incompressible: a 1.8 MB archive
    big = world.emu.upload("set.zip", zip_of(noise), "application/zip")
    small = world.emu.upload("tiny.zip", zip_of({"a.png": png(32)}), "application/zip")
    downloader = AttachmentDownloader()
    try:
        got = await downloader.fetch([_LyingAttachment("set.zip", big.size, big.url, "application/zip"),
                                      _LyingAttachment("tiny.zip", small.size, small.url, "application/zip")],
                                     SizeCaps(image=20_000_000, archive=50_000_000))
    finally:
        await downloader.aclose()
    spooled, kept = got.archives
    assert spooled.file._rolled and spooled.file.fileno() >= 0  # noqa: SLF001 — on disk, not in memory
    assert not kept.file._rolled  # noqa: SLF001 — a small archive stays in memory
    got.close()
    assert spooled.file.closed and kept.file.closed
