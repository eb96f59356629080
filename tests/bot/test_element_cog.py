"""/element train (confirmation → queued), list, info, share, browse, export, delete — real bot + emulator + real
services; training results are produced through the real job transitions (tests/bot/stack.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from storage.db.models import BotState, Element, Job, utcnow
from tests.bot.harness import bot_on
from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import fake_training_run, wait_for


async def actor_of(services: Any, user: Any) -> Any:
    return await services.users.ensure(f"discord:{user.id}", user.username)


async def train_jobs(services: Any) -> list[Job]:
    async with services.db.read() as s:
        return list((await s.execute(select(Job).where(Job.kind == "train").order_by(Job.id))).scalars())


async def test_train_confirmation_then_start(bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice = emu.user("alice")
        me = await actor_of(job_services, alice)
        await seed_dataset(me, "tiny", count=3)
        few = await (await emu.slash(alice, "element", "train", options={"dataset": "tiny", "name": "Inkwash", "category": "style", "base": "tiny-sd15", "trigger": "zqxink"})).reply()
        assert few.ephemeral and "has 3 images; training needs at least 10" in few.content and "💡" in few.content
        bad_trigger = await (await emu.slash(alice, "element", "train", options={"dataset": "tiny", "name": "Inkwash", "category": "style", "base": "tiny-sd15", "trigger": "two words"})).reply()
        assert "can't contain spaces" in bad_trigger.content

        await seed_dataset(me, "shapes", count=10, seed=1)
        choices = await emu.autocomplete(alice, "element", "train", focused="dataset", value="sha")
        assert [c["value"] for c in choices] == ["shapes"]
        bases = await emu.autocomplete(alice, "element", "train", focused="base", value="")
        assert "flux-schnell" not in [c["value"] for c in bases] and "tiny-sd15" in [c["value"] for c in bases]

        confirm = await (await emu.slash(alice, "element", "train", options={"dataset": "shapes", "name": "Inkwash", "category": "style", "base": "tiny-sd15", "trigger": "zqxink", "epochs": 2, "resolution": 32, "description": "ink wash look"})).reply()
        text = confirm.text()
        assert confirm.ephemeral and "Train “Inkwash”?" in text and "10 images" in text
        assert "2 epochs" in text and "Estimated time" in text and "5 of 5 left" in text
        assert "GPU memory" in text and "not planned" in text  # the memory plan line (tiny CPU models: not planned)
        assert "epochs=2" in text and "resolution=32" in text
        assert "Before you start" in text  # lint: 64 px images are small for sd15
        start, cancel = (b["custom_id"] for b in confirm.buttons)
        assert await train_jobs(job_services) == []

        await (await emu.click(alice, confirm, start)).reply()
        await wait_for(lambda: "Queued “Inkwash”" in confirm.content, 10, "the training to be queued")
        (job,) = await train_jobs(job_services)
        assert f"job {job.id}, position 1" in confirm.content
        assert job.payload["config"]["epochs"] == 2 and job.payload["config"]["resolution"] == 32
        assert job.origin["channel_id"] == str(emu.channel("general").id)
        assert [b["label"] for b in confirm.buttons] == ["Cancel training"]
        # the deliverer DMs a progress message for the queued job
        dm = await emu.wait_for_message(emu.dm(alice), lambda m: "Queued" in m.text())
        assert "position 1" in dm.text() and "Training “Inkwash”" in dm.text()

        cancelled = await (await emu.click(alice, confirm, confirm.buttons[0]["custom_id"])).reply()
        assert "Cancelled: job" in cancelled.content
        await emu.wait_for_message(emu.dm(alice), lambda m: m.id == dm.id and "Cancelled" in m.text())
        assert (await job_services.quotas.remaining(me)).remaining == 5  # refunded

        again = await (await emu.slash(alice, "element", "train", options={"dataset": "shapes", "name": "Other", "category": "style", "base": "tiny-sd15", "trigger": "zqxother"})).reply()
        await (await emu.click(alice, again, again.buttons[1]["custom_id"])).reply()
        assert again.content == "Cancelled — nothing was queued." and len(await train_jobs(job_services)) == 1

        # the pending request survives a restart of the bot: Start pressed on the new process still queues it;
        # once it has expired, Start says so
        pending = await (await emu.slash(alice, "element", "train", options={
            "dataset": "shapes", "name": "Other", "category": "style", "base": "tiny-sd15", "trigger": "zqxother"})
        ).reply()
        stale = await (await emu.slash(alice, "element", "train", options={
            "dataset": "shapes", "name": "Third", "category": "style", "base": "tiny-sd15", "trigger": "zqxthird"})
        ).reply()
        puts = len(emu.state.command_puts)
        await bot.close()
        async with bot_on(emu, job_services, job_settings):
            assert len(emu.state.command_puts) == puts  # unchanged definitions: not synced again
            await (await emu.click(alice, pending, pending.buttons[0]["custom_id"])).reply()
            await wait_for(lambda: "Queued “Other”" in pending.content, 10, "the training to be queued")
            async with job_services.db.transaction() as s:  # ten minutes later
                await s.execute(update(BotState).where(BotState.kind == "train_confirm")
                                .values(expires_at=utcnow() - timedelta(seconds=1)))
            expired = await (await emu.click(alice, stale, stale.buttons[0]["custom_id"])).reply()
            assert expired.ephemeral and "This confirmation has expired" in expired.content
            twice = await (await emu.click(alice, stale, stale.buttons[0]["custom_id"])).reply()
            assert "no longer pending" in twice.content
        assert [j.payload["element_name"] for j in await train_jobs(job_services)] == ["Inkwash", "Other"]


async def test_list_info_share_browse_export_delete(bot_harness, job_services, job_settings, seed_dataset
                                                    ) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, bob = emu.user("alice"), emu.user("bob")
        me = await actor_of(job_services, alice)
        await seed_dataset(me, "shapes")
        admin = await job_services.users.ensure("local:root", "root")
        await job_services.quotas.set_limit(type(admin)(admin.user_id, admin.external_id, True), me.external_id, 20)
        for i in range(9):
            job = await job_services.jobs.request_training(me, dataset="shapes", name=f"Look {i}",
                                                           category="style", base_model="tiny-sd15",
                                                           trigger=f"zqxlook{i}")
            await fake_training_run(job_services, job.id)
        listing = await (await emu.slash(alice, "element", "list")).reply()
        assert "Your Elements (9)" in listing.text() and "✅ ready" in listing.text()

        info = await (await emu.slash(alice, "element", "info", element="Look 0")).reply()
        assert "`zqxlook0`" in info.text() and "Recommended strength" in info.text() and "you" in info.text()
        assert "0.8 (works 0.6–1)" in info.text(), "the strength sweep's range"
        assert list(info.files) == ["element-preview.png"]

        hidden = await (await emu.slash(bob, "element", "info", element="#1")).reply()
        assert "No Element “#1” that you can see" in hidden.content
        assert await emu.autocomplete(bob, "element", "info", focused="element", value="look") == []

        shared = await (await emu.slash(alice, "element", "share", element="Look 0", visibility="public")).reply()
        assert "now public" in shared.content
        for i in range(1, 9):
            await job_services.elements.share(me, f"Look {i}", "public")
        async with job_services.db.transaction() as s:  # make "Look 0" the most used, so it is listed first
            await s.execute(update(Element).where(Element.name == "Look 0").values(usage_count=5))

        page1 = await (await emu.slash(bob, "element", "browse", query="look")).reply()
        assert "Page 1/2" in page1.text() and "`#1` **Look 0** by alice" in page1.text()
        nxt = next(b["custom_id"] for b in page1.buttons if b["label"] == "Next")
        await (await emu.click(bob, page1, nxt)).reply()
        await wait_for(lambda: "Page 2/2" in page1.text(), 5, "page 2")
        assert page1.text().count("**Look") == 1
        assert "Page 1/1" in (await (await emu.slash(bob, "element", "browse", query="look 3")).reply()).text()

        info = await (await emu.slash(bob, "element", "info", element="#1")).reply()
        assert "Creator" in info.text() and "alice" in info.text()
        export = await (await emu.slash(bob, "element", "export", element="#1")).reply()
        assert sorted(export.files) == ["look-0_tiny-sd15.element.json", "look-0_tiny-sd15.safetensors"]

        refused = await (await emu.slash(bob, "element", "delete", element="#1")).reply()
        assert "belongs to alice" in refused.content and "only their owner" in refused.content
        confirm = await (await emu.slash(alice, "element", "delete", element="Look 0")).reply()
        assert "used 5 times" in confirm.content
        yes = confirm.buttons[0]["custom_id"]
        await (await emu.click(alice, confirm, yes)).reply()
        await wait_for(lambda: "was deleted" in confirm.content, 5, "the deletion")
        assert "No Element" in (await (await emu.slash(alice, "element", "info", element="Look 0")).reply()).content


async def test_export_over_the_upload_limit_says_what_to_do(bot_harness, job_services, job_settings,
                                                           seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice = emu.user("alice")
        me = await actor_of(job_services, alice)
        await seed_dataset(me, "shapes")
        job = await job_services.jobs.request_training(me, dataset="shapes", name="Huge", category="style",
                                                       base_model="tiny-sd15", trigger="zqxhuge")
        await fake_training_run(job_services, job.id)
        big = await job_services.blobs.put_bytes(b"\0" * (26 * 1024 * 1024))
        async with job_services.db.transaction() as s:
            await s.execute(update(Element).where(Element.name == "Huge").values(kohya_blob=big))
        answer = await (await emu.slash(alice, "element", "export", element="Huge")).reply()
        assert answer.ephemeral and "more than the 25.0 MB I may upload here" in answer.content
        assert "atelier element export Huge" in answer.content and not answer.files
