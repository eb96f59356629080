"""/generate and the buttons under its result, through the real bot + emulator + real services and job rows.

The worker side is driven through the real job transitions (tests/bot/stack.py) so each test stays fast; the
end-to-end test (test_e2e_flow.py) runs a real worker process.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from storage.db.models import Generation, Job
from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import fake_training_run, finish_generation, wait_for


async def ready_element(services: Any, actor: Any, seed_dataset: Any, name: str = "Inkwash",
                        trigger: str = "zqxink", dataset: str = "shapes") -> Any:
    await seed_dataset(actor, dataset)
    job = await services.jobs.request_training(actor, dataset=dataset, name=name, category="style",
                                               base_model="tiny-sd15", trigger=trigger)
    await fake_training_run(services, job.id)
    return await services.elements.get(actor, name)


async def settled(message: Any, text: str) -> None:
    """Wait until a message the bot updates in two steps ("working…", then the result) shows ``text``."""
    await wait_for(lambda: text in message.content, 10, f"{text!r} in {message.content!r}")


async def jobs_of(services: Any, kind: str = "generate") -> list[Job]:
    async with services.db.read() as s:
        return list((await s.execute(select(Job).where(Job.kind == kind).order_by(Job.id))).scalars())


async def test_generate_posts_images_with_buttons_and_only_the_owner_can_use_them(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, bob = emu.user("alice"), emu.user("bob")
        me = await job_services.users.ensure(f"discord:{alice.id}", "alice")
        await ready_element(job_services, me, seed_dataset)

        choices = await emu.autocomplete(alice, "generate", focused="element1", value="ink", prompt="a cat")
        assert [c["value"] for c in choices] == ["Inkwash"] and "tiny-sd15" in choices[0]["name"]
        assert await emu.autocomplete(bob, "generate", focused="element1", value="ink", prompt="x") == []

        ack = await (await emu.slash(alice, "generate", prompt="a cat on a roof", element1="Inkwash",
                                     strength1=0.7, count=2, seed=11, at="general")).reply()
        assert ack.ephemeral and "position 1" in ack.content and "Inkwash × 0.7" in ack.content
        (job,) = await jobs_of(job_services)
        assert job.origin["channel_id"] == str(emu.channel("general").id) and job.payload["seed"] == 11
        assert job.payload["elements"][0]["strength"] == 0.7

        mark = emu.mark()
        gen_id = await finish_generation(job_services, job.id)
        post = await emu.wait_for_message("general", lambda m: m.files, after=mark)
        assert f"<@{alice.id}>" in post.content and [int(u) for u in post.allowed_mentions["users"]] == [alice.id]
        assert sorted(post.files) == [f"generation-{gen_id}-1.png", f"generation-{gen_id}-2.png"]
        assert "Inkwash** × 0.7" in post.text() and "11, 12" in post.text()
        labels = [b["label"] for b in post.buttons]
        assert labels == ["Reroll", "Variations", "Strength grid", "Hi-res ×2", "Add to dataset", "Info", "Delete"]

        cid = {b["label"]: b["custom_id"] for b in post.buttons}
        refused = await (await emu.click(bob, post, cid["Reroll"])).reply()
        assert refused.ephemeral and "belongs to someone else" in refused.content
        assert len(await jobs_of(job_services)) == 1

        info = await (await emu.click(alice, post, cid["Info"])).reply()
        assert info.ephemeral and "a cat on a roof" in info.text() and "11, 12" in info.text()

        reroll = await (await emu.click(alice, post, cid["Reroll"])).reply()
        assert "new seed" in reroll.content
        variations = await (await emu.click(alice, post, cid["Variations"])).reply()
        assert "Four variations" in variations.content
        jobs = await jobs_of(job_services)
        assert [j.payload["count"] for j in jobs[1:]] == [2, 4] and jobs[1].payload["seed"] is None
        assert all(j.payload["parent_generation_id"] == gen_id for j in jobs[1:])

        pick = await (await emu.click(alice, post, cid["Hi-res ×2"])).reply()
        select_id = next(c for c in pick.custom_ids if ":hirespick:" in c)
        await (await emu.select(alice, pick, select_id, ["2"])).reply()
        await settled(pick, "— job")
        hires = (await jobs_of(job_services))[-1]
        assert hires.payload["hires"] and hires.payload["seed"] == 12 and hires.payload["count"] == 1


async def test_strength_grid_posts_one_composite_when_all_tiles_are_done(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice = emu.user("alice")
        me = await job_services.users.ensure(f"discord:{alice.id}", "alice")
        await ready_element(job_services, me, seed_dataset)
        await (await emu.slash(alice, "generate", prompt="a boat", element1="Inkwash", seed=5)).reply()
        (job,) = await jobs_of(job_services)
        mark = emu.mark()
        await finish_generation(job_services, job.id)
        post = await emu.wait_for_message("general", lambda m: m.files, after=mark)
        grid_id = next(c for c in post.custom_ids if ":grid:" in c)
        answer = await (await emu.click(alice, post, grid_id)).reply()
        assert "0, 0.25, 0.5, 0.75, 1" in answer.content
        tiles = (await jobs_of(job_services))[1:]
        assert [j.payload["elements"][0]["strength"] for j in tiles] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert {j.payload["seed"] for j in tiles} == {5} and len({j.origin["grid"]["group"] for j in tiles}) == 1
        mark = emu.mark()
        for tile in tiles:
            await finish_generation(job_services, tile.id)
        grid = await emu.wait_for_message("general", lambda m: "strength-grid.png" in m.files, after=mark)
        assert "Strength grid" in grid.text() and f"<@{alice.id}>" in grid.content
        # the tiles themselves are not posted one by one, and the composite is posted once
        await bot.delivery.pump.run_once()
        later = [m for m in emu.messages("general") if m.id > mark]
        assert [m.id for m in later] == [grid.id], [m.text() for m in later]


async def test_add_to_dataset_and_delete(bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice = emu.user("alice")
        me = await job_services.users.ensure(f"discord:{alice.id}", "alice")
        await seed_dataset(me, "keepers", count=2)
        await (await emu.slash(alice, "generate", prompt="a red fox", count=2)).reply()
        (job,) = await jobs_of(job_services)
        mark = emu.mark()
        gen_id = await finish_generation(job_services, job.id)
        post = await emu.wait_for_message("general", lambda m: m.files, after=mark)
        cid = {b["label"]: b["custom_id"] for b in post.buttons}
        assert post.component(cid["Strength grid"])["disabled"]  # no Elements: nothing to vary

        menu = await (await emu.click(alice, post, cid["Add to dataset"])).reply()
        images_id = next(c for c in menu.custom_ids if ":addimgs:" in c)
        await (await emu.select(alice, menu, images_id, ["2"])).reply()
        target = next(c for c in menu.custom_ids if ":addto:" in c)
        assert target.split(":")[4] == "2"
        done = await (await emu.select(alice, menu, target, ["keepers"])).reply()
        await settled(done, "Added 1 image to “keepers” (it now has 3 images)")
        info = await job_services.datasets.get(me, "keepers")
        assert info.images[-1].source == "generated" and info.images[-1].caption == "a red fox"

        confirm = await (await emu.click(alice, post, cid["Delete"])).reply()
        yes = next(c for c in confirm.custom_ids if ":delyes:" in c)
        # A crafted interaction whose custom_id names another message (the old layout carried channel.message)
        # deletes nothing: the messages to delete come from the bot's own delivery record.
        victim = await emu.wait_for_message("general", lambda m: m.id != post.id)
        forged = yes.replace(f":delyes:{gen_id}:", f":delyes:{gen_id}:{victim.channel_id}.{victim.id}:")
        gone = await (await emu._interact(  # noqa: SLF001 — what a modified client sends
            3, alice, emu.channel("general"), {"custom_id": forged, "component_type": 2}, message=confirm)).reply()
        await settled(gone, f"Generation {gen_id} and its 2 images were deleted")
        assert post.deleted and not emu.state.messages[victim.id].deleted
        async with job_services.db.read() as s:
            assert await s.get(Generation, gen_id) is None


async def test_generate_refusals_are_friendly(bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, bob = emu.user("alice"), emu.user("bob")
        me = await job_services.users.ensure(f"discord:{alice.id}", "alice")
        await ready_element(job_services, me, seed_dataset)
        bad = await (await emu.slash(alice, "generate", prompt="x", strength2=0.5)).reply()
        assert bad.ephemeral and "strength2 is set but element2 is empty" in bad.content
        private = await (await emu.slash(bob, "generate", prompt="x", element1="Inkwash")).reply()
        assert "No Element “Inkwash” that you can see" in private.content
        too_strong = await (await emu.slash(alice, "generate", prompt="x", element1="Inkwash",
                                            strength1=1.5)).reply()
        assert "⚠️" in too_strong.content  # accepted with a warning (above 1)

        admin = await job_services.users.ensure("local:root", "root")
        admin = type(admin)(admin.user_id, admin.external_id, True, None, "root")
        guild = str(emu.guild_id)
        await job_services.guilds.update(admin, guild, banned_words=["dragon"],
                                         generation_channels=[str(emu.channel("gallery").id)])
        wrong_place = await (await emu.slash(alice, "generate", prompt="a cat", at="general")).reply()
        assert "not enabled in this channel" in wrong_place.content and f"<#{emu.channel('gallery').id}>" in \
            wrong_place.content
        banned = await (await emu.slash(alice, "generate", prompt="a Dragon", at="gallery")).reply()
        assert "“dragon” is not allowed on this server" in banned.content
        assert len(await jobs_of(job_services)) == 1  # only the warned one was queued

        await job_services.elements.share(me, "Inkwash", "public")
        seen = await emu.autocomplete(bob, "generate", focused="element1", value="", prompt="x")
        assert [c["value"] for c in seen] == ["#1"] and "by alice" in seen[0]["name"]
        other_base = await emu.autocomplete(bob, "generate", focused="element1", value="", prompt="x",
                                            base="tiny-sdxl")
        assert other_base == []


async def test_closed_dms_and_dm_origin(bot_harness, job_services, job_settings) -> None:
    """A generation asked for in a channel the bot can no longer post in falls back to a DM."""
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice = emu.user("alice")
        await (await emu.slash(alice, "generate", prompt="a kite", at="general")).reply()
        (job,) = await jobs_of(job_services)
        async with job_services.db.transaction() as s:
            row = await s.get(Job, job.id)
            row.origin = {**row.origin, "channel_id": "1"}  # a channel that does not exist (deleted meanwhile)
        await finish_generation(job_services, job.id)
        dm = await emu.wait_for_message(emu.dm(alice), lambda m: m.files)
        assert "Here are your images" in dm.content
        await wait_for(lambda: _delivered(job_services), 10, "the notification to be marked delivered")


async def _delivered(services: Any) -> bool:
    from storage.db.models import Notification

    async with services.db.read() as s:
        rows = (await s.execute(select(Notification))).scalars().all()
    return bool(rows) and all(n.delivered_at is not None for n in rows)
