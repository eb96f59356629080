"""The Discord deliverer: training DMs edited in place, results with buttons, failures with Retry, channel
fallback when DMs are closed, idempotent re-delivery, live refresh, non-Discord users."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from sqlalchemy import select

from bot.deliverer import DiscordDeliverer
from storage.db.models import Job, Notification, User
from storage.job_views import NotificationView
from storage.queue.job_transitions import JobTransitions
from storage.queue.outbox import ConsoleDeliverer
from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import (
    fake_training_run,
    finish_generation,
    finish_training,
    png,
    start_training,
    wait_for,
)


async def request(services: Any, actor: Any, channel_id: int, name: str = "Inkwash", trigger: str = "zqxink"
                  ) -> Any:
    return await services.jobs.request_training(actor, dataset="shapes", name=name, category="style",
                                                base_model="tiny-sd15", trigger=trigger,
                                                origin={"guild_id": "1", "channel_id": str(channel_id)})


async def alice_with_dataset(emu: Any, services: Any, seed_dataset: Any) -> tuple[Any, Any]:
    """The emulated member alice and her actor, who owns a dataset "shapes"."""
    alice = emu.user("alice")
    me = await services.users.ensure(f"discord:{alice.id}", "alice")
    await seed_dataset(me, "shapes")
    return alice, me


async def trained_halfway(emu: Any, services: Any, alice: Any, job_id: int) -> Any:
    """Starts alice's queued training and waits until its progress DM shows epoch 1 of 2; returns that DM."""
    progress = await emu.wait_for_message(emu.dm(alice), lambda m: "Queued" in m.text())
    await start_training(services, job_id)
    await emu.wait_for_message(emu.dm(alice), lambda m: m.id == progress.id and "50%" in m.text())
    return progress


async def notifications(services: Any, job_id: int) -> list[NotificationView]:
    async with services.db.read() as s:
        rows = (await s.execute(select(Notification, User.external_id, Job.origin)
                                .join(User, User.id == Notification.user_id).join(Job, Job.id == Notification.job_id)
                                .where(Notification.job_id == job_id).order_by(Notification.id))).all()
    return [NotificationView.of(n, external_id=e, origin=o, possibly_delivered=True) for n, e, o in rows]


async def all_delivered(services: Any) -> bool:
    async with services.db.read() as s:
        return all(n.delivered_at for n in (await s.execute(select(Notification))).scalars())


async def test_training_dm_is_edited_in_place_then_results_with_buttons(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, me = await alice_with_dataset(emu, job_services, seed_dataset)
        job = await request(job_services, me, emu.channel("general").id)
        progress = await trained_halfway(emu, job_services, alice, job.id)
        await finish_training(job_services, job.id)
        done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text())
        await wait_for(lambda: all_delivered(job_services), 10, "every notification delivered")

        dms = emu.messages(emu.dm(alice))
        assert [m.id for m in dms] == [progress.id, done.id], [m.text() for m in dms]
        assert "Finished" in progress.text() and "100%" in progress.text() and not progress.components
        seen = [h["embeds"][0]["description"] for h in progress.history]
        assert any("Training…" in s and "50%" in s for s in seen), seen  # the epoch-1 milestone state
        assert any(h["attachments"] for h in progress.history), "the latest sample was shown"
        assert sorted(done.files) == ["grid.png", "loss-curve.png", "sample-1.png"]
        assert "`zqxink`" in done.text() and "Recommended strength" in done.text() and "works 0.6–1" in done.text()
        assert [b["label"] for b in done.buttons] == ["Generate now", "Share", "Export"]

        share = await (await emu.click(alice, done, done.buttons[1]["custom_id"])).reply()
        pick = share.custom_ids[0]
        await (await emu.select(alice, share, pick, ["public"])).reply()
        await wait_for(lambda: "now public" in share.content, 5, "the share to be saved")
        assert (await job_services.elements.get(me, "Inkwash")).visibility == "public"
        # In a DM the server is where the training was requested, never one named in a crafted custom_id.
        element_id = (await job_services.elements.get(me, "Inkwash")).id
        forged = pick.replace(f":sharepick:{element_id}:", f":sharepick:{element_id}:424242:")
        await emu._interact(3, alice, emu.dm(alice), {"custom_id": forged, "component_type": 3,  # noqa: SLF001
                                                      "values": ["server"]}, message=share)
        await wait_for(lambda: "shared with this server" in share.content, 5, "the forged share to be handled")
        shared = await job_services.elements.get(me, "Inkwash")
        assert shared.visibility == "server" and shared.guild_id == job.origin["guild_id"] != "424242"

        export = await (await emu.click(alice, done, done.buttons[2]["custom_id"])).reply()
        assert sorted(export.files) == ["inkwash_tiny-sd15.element.json", "inkwash_tiny-sd15.safetensors"]

        opener = await emu.click(alice, done, done.buttons[0]["custom_id"])
        assert (await opener.response()).modal["title"] == "Generate with your Element"
        queued = await (await emu.modal_submit(alice, opener, {"prompt": "zqxink, a lighthouse"})).reply()
        assert "position 1" in queued.content
        async with job_services.db.read() as s:
            gen_job = (await s.execute(select(Job).where(Job.kind == "generate"))).scalar_one()
        assert gen_job.origin["dm"] and gen_job.payload["elements"][0]["strength"] == 0.8
        await finish_generation(job_services, gen_job.id)
        images = await emu.wait_for_message(emu.dm(alice), lambda m: m.files and "Here are" in m.content)
        assert "Reroll" in [b["label"] for b in images.buttons]


async def test_failure_offers_retry_and_closed_dms_fall_back_to_the_channel(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, carol = emu.user("alice"), emu.user("carol")
        me = await job_services.users.ensure(f"discord:{alice.id}", "alice")
        await seed_dataset(me, "shapes")
        job = await request(job_services, me, emu.channel("general").id)
        t = JobTransitions(job_services.db, job_settings, job_services.quotas, job_services.elements)
        await t.start(job.id, 0, "w")
        await t.fail(job.id, 1, code="invalid", reason="the images could not be read",
                     hint="Re-add them with /dataset add.")
        failed = await emu.wait_for_message(emu.dm(alice), lambda m: "failed" in m.text() and m.buttons)
        assert "The images could not be read" in failed.text() and "Re-add them" in failed.text()
        assert "Refunded" in failed.text()
        retried = await (await emu.click(alice, failed, failed.buttons[0]["custom_id"])).reply()
        assert "Started again as job" in retried.content and "position 1" in retried.content

        emu.set_dms_open(carol, False)
        her = await job_services.users.ensure(f"discord:{carol.id}", "carol")
        await seed_dataset(her, "shapes", seed=7)
        job = await request(job_services, her, emu.channel("gallery").id, name="Carols", trigger="zqxcarol")
        await fake_training_run(job_services, job.id)
        post = await emu.wait_for_message("gallery", lambda m: "is ready" in m.text())
        assert post.content.startswith(f"<@{carol.id}> (I couldn't DM you)")
        assert [int(u) for u in post.allowed_mentions["users"]] == [carol.id]
        assert "grid.png" in post.files and [b["label"] for b in post.buttons][0] == "Generate now"
        assert emu.messages(emu.dm(carol)) == []
        await wait_for(lambda: all_delivered(job_services), 10, "every notification delivered")
        assert [m.id for m in emu.messages("gallery")] == [post.id]  # no progress spam in the channel


async def test_redelivery_is_idempotent_and_refresher_edits_live_progress(
        bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice, me = await alice_with_dataset(emu, job_services, seed_dataset)
        job = await request(job_services, me, emu.channel("general").id)
        t = JobTransitions(job_services.db, job_settings, job_services.quotas, job_services.elements)
        await t.start(job.id, 0, "w")
        progress = await emu.wait_for_message(emu.dm(alice), lambda m: "Starting" in m.text())
        await wait_for(lambda: all_delivered(job_services), 10, "the started notification to be marked delivered")

        sample = await job_services.blobs.put_bytes(png(5))
        await t.beat(job.id, 1, {"phase": "training", "step": 3, "total_steps": 10, "epoch": 1,
                                 "total_epochs": 2, "loss": 0.5, "eta_seconds": 70, "fraction": 0.3,
                                 "samples": [sample]})
        edits = len(progress.history)
        assert await bot.delivery.refresher.refresh_once() == 1
        assert len(progress.history) == edits + 1 and "30%" in progress.text() and "1m 10s" in progress.text()
        assert "latest-sample.png" in progress.files
        assert await bot.delivery.refresher.refresh_once() == 0  # nothing new: no edit

        await fake_training_run_finish(job_services, t, job.id)
        done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text())
        await wait_for(lambda: all_delivered(job_services), 10, "every notification delivered")
        before = [(m.id, len(m.history)) for m in emu.messages(emu.dm(alice))]
        other = DiscordDeliverer(bot, job_services)  # e.g. a second bot process after a crash
        for n in await notifications(job_services, job.id):
            await other.deliver(n)
        after = [(m.id, len(m.history)) for m in emu.messages(emu.dm(alice))]
        assert [m for m, _ in after] == [m for m, _ in before] == [progress.id, done.id]
        assert "Finished" in progress.text()


async def fake_training_run_finish(services: Any, t: JobTransitions, job_id: int) -> None:
    blobs = services.blobs
    final = await blobs.put_bytes(png(77))
    await t.succeed_training(job_id, 1, weights_blob=await blobs.put_bytes(b"w"), kohya_blob=None,
                             metadata_blob=None, artifacts={"samples_final": [final]}, recommended_strength=1.0,
                             summary={"epochs": 2, "steps": 10, "final_loss": 0.1, "resumed_from_epoch": 0})


async def test_non_discord_users_go_to_the_fallback(bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        local = await job_services.users.local_actor("dave")
        await seed_dataset(local, "shapes")
        job = await request(job_services, local, emu.channel("general").id)
        out = io.StringIO()
        deliverer = DiscordDeliverer(bot, job_services, fallback=ConsoleDeliverer(Console(file=out, width=200)))
        for n in await notifications(job_services, job.id):
            await deliverer.deliver(n)
        assert "queued (position 1)" in out.getvalue()
        assert emu.messages("general") == [] and emu.messages("gallery") == []
