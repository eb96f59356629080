"""Train and generate through the queue with a real ``atelier worker`` process on tiny-sd15."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from storage.db.models import Element, Generation, Job, Notification, QuotaCharge
from tests.worker.conftest import FAST_TRAIN, wait_for

pytestmark = pytest.mark.slow  # a real worker process trains and generates


async def _job(services: Any, job_id: int) -> Job:
    async with services.db.read() as s:
        return await s.get(Job, job_id)


async def _notes(services: Any, job_id: int) -> list[Notification]:
    async with services.db.read() as s:
        return list((await s.execute(select(Notification).where(Notification.job_id == job_id)
                                     .order_by(Notification.id))).scalars())


async def test_train_then_generate_through_the_queue(services, actor, make_dataset, worker_process, settings
                                                     ) -> None:
    await make_dataset(actor, "shapes", count=3)
    info = await services.jobs.request_training(actor, dataset="shapes", name="Inkwash", category="style",
                                                base_model="tiny-sd15", trigger="zqxink", overrides=FAST_TRAIN)
    worker = worker_process()
    updates: list[Any] = []

    async def follow() -> None:
        async for update in services.jobs.follow(actor, info.id):
            updates.append(update)

    follower = asyncio.create_task(follow())
    try:
        await wait_for(lambda: _finished(services, info.id), 420, "the training job to finish")
    except AssertionError:
        raise AssertionError(worker.output()) from None
    await asyncio.wait_for(follower, 10)
    job = await _job(services, info.id)
    assert job.status == "succeeded", (job.error, worker.output())
    assert job.attempts == 1 and job.result["resumed_from_epoch"] == 0 and job.result["epochs"] == 2
    assert updates[-1].status == "succeeded"
    assert any(u.progress.get("phase") == "training" and u.progress.get("step") for u in updates)

    async with services.db.read() as s:
        element = await s.get(Element, info.element_id)
        charge = (await s.execute(select(QuotaCharge).where(QuotaCharge.job_id == info.id))).scalar_one()
    assert element.status == "ready" and charge.refunded_at is None
    for h in (element.weights_blob, element.kohya_blob, element.metadata_blob, element.artifacts["loss_curve"],
              element.artifacts["grid"], *element.artifacts["samples_final"]):
        assert h and await services.blobs.exists(h)
    kinds = [n.kind for n in await _notes(services, info.id)]
    assert kinds == ["training_queued", "training_started", "training_progress", "training_progress",
                     "training_finished"], kinds
    milestones = [n.payload for n in await _notes(services, info.id) if n.kind == "training_progress"]
    assert [m["epoch"] for m in milestones] == [1, 2] and all(m["samples"] for m in milestones)
    finished = (await _notes(services, info.id))[-1].payload
    assert finished["samples"] and finished["grid"] and finished["loss_curve"] and finished["element_name"] == "Inkwash"
    work = settings.data_dir / "work" / "jobs" / str(info.id)
    assert not work.exists(), "the job folder is removed once the job finished"

    gen = await services.jobs.request_generation(actor, prompt="a cat", elements=[("Inkwash", 0.7)], count=2,
                                                 seed=5)
    await wait_for(lambda: _finished(services, gen.id), 240, "the generation job to finish")
    job = await _job(services, gen.id)
    assert job.status == "succeeded", (job.error, worker.output())
    async with services.db.read() as s:
        row = (await s.execute(select(Generation).where(Generation.job_id == gen.id))).scalar_one()
    assert row.seed == 5 and len(row.images) == 2 and row.elements[0]["name"] == "Inkwash"
    assert row.elements[0]["strength"] == 0.7 and "zqxink" in row.params["used_prompt"]
    for h in row.images:
        img = Image.open(io.BytesIO(await services.blobs.get_bytes(h)))
        assert img.format == "PNG" and img.size == (64, 64)
    notes = await _notes(services, gen.id)
    assert [n.kind for n in notes] == ["generation_finished"]
    assert notes[0].payload["generation_id"] == row.id and notes[0].payload["images"] == row.images
    assert worker.stop() == 0, worker.output()


async def test_generation_over_its_time_limit_is_stopped_and_the_worker_carries_on(services, actor, worker_process,
                                                                                  settings) -> None:
    settings.generate_timeout_seconds = 2  # the slow request needs several times that even on a fast CPU
    worker = worker_process()
    slow = await services.jobs.request_generation(actor, prompt="a cat", count=4, steps=150, hires=True, seed=1)
    quick = await services.jobs.request_generation(actor, prompt="a dog", count=1, steps=2, seed=2)

    async def both_finished() -> bool:
        return await _finished(services, slow.id) and await _finished(services, quick.id)

    await wait_for(both_finished, 240, "both generation jobs to finish")
    slow_job, quick_job = await _job(services, slow.id), await _job(services, quick.id)
    assert slow_job.status == "failed" and slow_job.error_code == "timeout", (slow_job.error, worker.output())
    assert "longer than 2 s" in slow_job.error
    assert quick_job.status == "succeeded", (quick_job.error, worker.output())
    assert [n.kind for n in await _notes(services, slow.id)] == ["generation_failed"]
    assert worker.stop() == 0, worker.output()


async def _finished(services: Any, job_id: int) -> bool:
    return (await _job(services, job_id)).status in ("succeeded", "failed", "cancelled")
