"""/jobs: queued and running jobs with progress, Cancel buttons and Refresh (real bot + emulator + services)."""

from __future__ import annotations

from sqlalchemy import select

from storage.db.models import Job
from storage.queue.job_transitions import JobTransitions
from tests.bot.stack import *  # noqa: F403
from tests.bot.stack import wait_for


async def test_jobs_lists_progress_and_cancels(bot_harness, job_services, job_settings, seed_dataset) -> None:
    async with bot_harness(job_services, job_settings) as (emu, bot):
        alice = emu.user("alice")
        empty = await (await emu.slash(alice, "jobs")).reply()
        assert empty.ephemeral and "no queued or running jobs" in empty.text()

        me = await job_services.users.ensure(f"discord:{alice.id}", "alice")
        await seed_dataset(me, "shapes")
        train = await job_services.jobs.request_training(me, dataset="shapes", name="Inkwash", category="style",
                                                         base_model="tiny-sd15", trigger="zqxink")
        t = JobTransitions(job_services.db, job_settings, job_services.quotas, job_services.elements)
        await t.start(train.id, 0, "w")
        await t.beat(train.id, 1, {"phase": "training", "step": 4, "total_steps": 10, "epoch": 2,
                                   "total_epochs": 5, "eta_seconds": 125, "fraction": 0.4})
        ack = await (await emu.slash(alice, "generate", prompt="a cat")).reply()
        await (await emu.slash(alice, "generate", prompt="a dog")).reply()

        listing = await (await emu.slash(alice, "jobs")).reply()
        text = listing.text()
        assert "Your jobs (3 active)" in text
        assert f"**#{train.id}** training “Inkwash” — 🔥 Training ▰▰▰▰▱▱▱▱▱▱ 40% · epoch 2/5 · ETA 2m 05s" in text
        assert "generation “a cat” — ⏳ queued, position 1" in text
        assert "generation “a dog” — ⏳ queued, position 2" in text
        labels = [b["label"] for b in listing.buttons]
        assert labels == [f"Cancel #{train.id}", f"Cancel #{train.id + 1}", f"Cancel #{train.id + 2}", "Refresh"]

        await (await emu.click(alice, listing, listing.buttons[1]["custom_id"])).reply()
        await wait_for(lambda: "2 active" in listing.text(), 5, "the list to be shown again")
        assert "a cat" not in listing.text() and "“a dog” — ⏳ queued, position 1" in listing.text()

        await (await emu.click(alice, listing, listing.buttons[0]["custom_id"])).reply()  # running: asks the worker
        await wait_for(lambda: "cancelling…" in listing.text(), 5, "the cancel request to show")
        assert listing.component(listing.buttons[0]["custom_id"])["disabled"]

        # the Cancel button under a /generate acknowledgement
        cancelled = await (await emu.click(alice, ack, ack.buttons[0]["custom_id"])).reply()
        assert "already been cancelled" in cancelled.content  # it was cancelled from the list above
        dog = (await job_services.jobs.list(me, active_only=True))[0]
        await t.beat(train.id, 1, {"phase": "training", "step": 9, "total_steps": 10, "epoch": 5,
                                   "total_epochs": 5, "fraction": 0.9})
        await (await emu.click(alice, listing, listing.buttons[-1]["custom_id"])).reply()
        await wait_for(lambda: "90%" in listing.text(), 5, "the refreshed list")
        async with job_services.db.read() as s:
            statuses = {j.id: j.status for j in (await s.execute(select(Job))).scalars()}
        assert statuses[train.id + 1] == "cancelled" and statuses[dog.id] == "queued"
