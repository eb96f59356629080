"""/dataset create|add|list|show|caption|remove|rename|delete|export through the real bot, emulator and services."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator

import pytest

from bot.cogs.dataset.common import parse_indices
from storage.errors import InvalidInput
from tests.bot.dataset_world import World, dataset_world
from tests.bot.images import png
from tests.discord_emulator import UsageError
from tests.discord_emulator.state import EPHEMERAL


@pytest.fixture
async def world(bot_harness, make_settings, database_url) -> AsyncIterator[World]:
    async with dataset_world(bot_harness, make_settings, database_url) as w:
        yield w


async def _with_images(w: World, n: int, name: str = "cats", *, first_seed: int = 0) -> None:
    alice = w.emu.user("alice")
    await w.ds_reply(alice, "create", name=name)
    atts = {f"image{i + 1}": w.emu.upload(f"img{first_seed + i}.png", png(first_seed + i)) for i in range(n)}
    report = await w.ds_reply(alice, "add", name=name, **atts)
    assert f"{n} added" in report.embeds[0]["title"], report.text()


async def test_create_add_ten_attachment_options_list_and_autocomplete(world: World) -> None:
    emu, alice, bob = world.emu, world.emu.user("alice"), world.emu.user("bob")
    created = await world.ds_reply(alice, "create", name="cats", description="my cat @everyone")
    assert created.ephemeral and "Created dataset “cats”" in created.content

    atts = {f"image{i}": emu.upload(f"cat{i}.png", png(i)) for i in range(1, 11)}
    handle = await world.ds(alice, "add", name="cats", **atts)
    assert (await handle.response()).type == 5  # deferred at once: downloads and decoding take a while
    report = await handle.reply()
    assert report.ephemeral and report.allowed_mentions == {"parse": []}
    embed = report.embeds[0]
    assert embed["title"] == "📥 cats: 10 added"
    for i in range(1, 11):
        assert f"#{i} cat{i}.png" in embed["description"]
    assert await world.count(alice, "cats") == 10

    listing = await world.ds_reply(alice, "list")
    assert "**cats** — 10 images" in listing.text() and "my cat" in listing.text()
    assert "@everyone" not in listing.text().replace("@\u200beveryone", "")  # escaped: never a live mention

    choices = await emu.autocomplete(alice, "dataset", "show", focused="name", value="CA")
    assert choices == [{"name": "cats (10 images)", "value": "cats"}]
    assert await emu.autocomplete(bob, "dataset", "show", focused="name", value="") == []  # only your own

    dup = await world.ds_reply(alice, "create", name="CATS")
    assert dup.ephemeral and dup.content.startswith("❌ You already have a dataset called “CATS”")


async def test_show_sends_a_contact_sheet_counts_and_findings(world: World) -> None:
    alice = world.emu.user("alice")
    await _with_images(world, 10)
    handle = await world.ds(alice, "show", name="cats", category="character", base="sdxl")
    assert (await handle.response()).type == 5
    shown = await handle.reply()
    assert shown.ephemeral
    sheet = shown.files["contact-sheet.png"]
    assert sheet.startswith(b"\x89PNG\r\n\x1a\n")
    embed = shown.embeds[0]
    assert embed["title"] == "🗂️ cats — 10 images"
    assert embed["image"]["url"] == "attachment://contact-sheet.png"
    counts = embed["fields"][0]["value"]
    assert "**Flux**: ✅ 10 (fits 10–50) · flux-dev, tiny-flux" in counts and "**SDXL**: ✅ 10 (fits 10–40)" in counts
    text = shown.text()
    # findings with their hints: the category tunes the count advice, the base the resolution check
    assert "⚠️ 10 images; character Elements usually train best with 15–25.\n   💡 Add 5 more" in text
    assert "#1, #2, #3, #4, #5, #6, #7, #8, #9, #10 are under 512 px on the short side" in text

    empty = await world.ds_reply(alice, "create", name="empty")
    assert empty.ephemeral
    shown_empty = await world.ds_reply(alice, "show", name="empty")
    assert not shown_empty.files and "0 images" in shown_empty.embeds[0]["title"]
    assert "**Flux**: ⛔ 0 — needs at least 10" in shown_empty.text()
    assert "⛔ The dataset has 0 images; training needs at least 10.\n   💡 Add 10 more" in shown_empty.text()
    bad_base = await world.ds_reply(alice, "show", name="cats", base="nope")
    assert bad_base.content.startswith("❌ Unknown base model “nope”.")


async def test_caption_remove_rename_and_export(world: World) -> None:
    alice = world.emu.user("alice")
    await _with_images(world, 5)
    captioned = await world.ds_reply(alice, "caption", name="cats", index=2, text="a cat @everyone <@123> **bold**")
    assert captioned.ephemeral and captioned.allowed_mentions == {"parse": []}
    assert "Caption of #2" in captioned.content and "\\*\\*bold\\*\\*" in captioned.content
    missing = await world.ds_reply(alice, "caption", name="cats", index=9, text="x")
    assert missing.content.startswith("❌ “cats” has no image #9 (it has 5).")

    removed = await world.ds_reply(alice, "remove", name="cats", indices="1, 3-4")
    assert "Removed 3 images (#1, #3, #4)" in removed.content and "now 2 images" in removed.content
    info = await world.services.datasets.get(await world.actor(alice), "cats")
    assert [(i.index, i.original_name) for i in info.images or []] == [(1, "img1.png"), (2, "img4.png")]
    assert info.images and info.images[0].caption.startswith("a cat @everyone")
    bad = await world.ds_reply(alice, "remove", name="cats", indices="2, x")
    assert bad.content.startswith("❌ “x” is not an image number or range.")

    renamed = await world.ds_reply(alice, "rename", name="cats", new_name="Felines")
    assert "Renamed “cats” to “Felines”" in renamed.content

    handle = await world.ds(alice, "export", name="felines")
    exported = await handle.reply()
    (filename, data), = exported.files.items()
    assert filename == "Felines.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["0001.png", "0001.txt", "0002.png"]
        assert zf.read("0001.txt").decode().startswith("a cat @everyone")


async def test_delete_asks_first_and_only_its_owner_can_confirm(world: World) -> None:
    emu, alice, bob = world.emu, world.emu.user("alice"), world.emu.user("bob")
    await _with_images(world, 2)
    confirm = await world.ds_reply(alice, "delete", name="cats")
    assert confirm.ephemeral and "Elements already trained on it keep working" in confirm.content
    delete_id, keep_id = confirm.custom_ids
    (cats,) = await world.services.datasets.list(await world.actor(alice))
    assert delete_id == f"atelier:dataset:delete:{cats.id}:@{alice.id}"  # the id, not the name; owner-bound

    with pytest.raises(UsageError, match="cannot see someone else's ephemeral message"):
        await emu.click(bob, confirm, delete_id)  # Discord never shows bob the ephemeral confirmation
    # Even if bob had the button (a forged or leaked interaction), the bot checks the owner in code:
    emu.state.messages[confirm.id].flags &= ~EPHEMERAL
    refused = await (await emu.click(bob, confirm, delete_id)).reply()
    assert refused.ephemeral and "belongs to someone else" in refused.content
    assert await world.count(alice, "cats") == 2

    kept = await (await emu.click(alice, confirm, keep_id)).reply()
    assert kept is confirm and "nothing was deleted" in confirm.content and confirm.custom_ids == []

    again = await world.ds_reply(alice, "delete", name="cats")
    done = await (await emu.click(alice, again, again.custom_ids[0])).reply()
    assert done is again and "Deleted “cats” (2 images)" in again.content and again.custom_ids == []
    assert await world.services.datasets.list(await world.actor(alice)) == []


async def test_another_users_dataset_is_not_found(world: World) -> None:
    emu, alice, bob = world.emu, world.emu.user("alice"), world.emu.user("bob")
    await _with_images(world, 1)
    for sub, opts in (("show", {}), ("delete", {}), ("export", {}), ("rename", {"new_name": "mine"}),
                      ("caption", {"index": 1, "text": "x"}), ("remove", {"indices": "1"}),
                      ("add", {"image1": emu.upload("b.png", png(99))})):
        msg = await world.ds_reply(bob, sub, name="cats", **opts)
        assert msg.ephemeral and msg.content.startswith("❌ You have no dataset called “cats”."), (sub, msg.content)
    assert await world.count(alice, "cats") == 1
    assert await world.services.datasets.list(await world.actor(bob)) == []


def test_parse_indices() -> None:
    assert parse_indices("3, 5-7") == [3, 5, 6, 7]
    assert parse_indices("#2 #4, 4 - 5") == [2, 4, 5]
    for bad, why in (("", "No image numbers"), ("0", "start at 1"), ("7-5", "goes backwards"),
                     ("1-100000", "more than 500"), ("two", "not an image number")):
        with pytest.raises(InvalidInput, match=why):
            parse_indices(bad)


async def test_group_sets_trigger_and_images_and_show_lists_groups(world: World) -> None:
    alice = world.emu.user("alice")
    await _with_images(world, 4)
    made = await world.ds_reply(alice, "group", name="cats", group="outfit2", indices="1-2", trigger="red dress")
    assert made.ephemeral and "Group **outfit2**" in made.content and "2 images" in made.content
    assert "`red dress`" in made.content and "repeats balanced" in made.content and "@outfit2" in made.content
    fixed = await world.ds_reply(alice, "group", name="cats", group="outfit2", repeats=6)
    assert "repeats 6" in fixed.content
    bad = await world.ds_reply(alice, "group", name="cats", group="outfit2", indices="7")
    assert bad.content.startswith("❌ “cats” has no image #7")
    shown = await world.ds_reply(alice, "show", name="cats")
    assert "outfit2" in shown.text() and "red dress" in shown.text()
    gone = await world.ds_reply(alice, "group", name="cats", group="outfit2", remove=True)
    assert "Removed group **outfit2**" in gone.content
    info = await world.services.datasets.get(await world.actor(alice), "cats")
    assert info.groups == [] and all(i.group == "" for i in info.images or [])
