"""The reconciler: Redis loses its data, workers vanish, attempts run out — the job rows stay the truth."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from storage.db.models import Element, Generation, Job, Notification, QuotaCharge, utcnow
from storage.queue.arq_jobs import QUEUES, arq_job_id
from tests.worker.conftest import FAST_TRAIN, wait_for
from worker.app import WorkerApp
from worker.reconciler import Reconciler
from worker.settings import WorkerOptions


def _app(services: Any) -> WorkerApp:
    return WorkerApp(services, WorkerOptions(), enqueuer=services.enqueuer)


async def _kinds(services: Any, job_id: int) -> Counter[str]:
    async with services.db.read() as s:
        return Counter((await s.execute(select(Notification.kind).where(Notification.job_id == job_id))).scalars())


async def _train(services: Any, actor: Any, make_dataset: Any) -> Any:
    await make_dataset(actor, "shapes", count=2)
    return await services.jobs.request_training(actor, dataset="shapes", name="Ink", category="style",
                                                base_model="tiny-sd15", trigger="zqxink", overrides=FAST_TRAIN)


@pytest.mark.slow
async def test_flushall_while_queued_nothing_lost_nothing_duplicated(services, actor, make_dataset,
                                                                     worker_process) -> None:
    train = await _train(services, actor, make_dataset)
    gens = [await services.jobs.request_generation(actor, prompt=f"a cat {i}", seed=i) for i in range(3)]
    redis = services.enqueuer.redis
    assert await redis.zcard(QUEUES["generate"]) == 3 and await redis.zcard(QUEUES["train"]) == 1
    await redis.flushall()

    first = await Reconciler(_app(services)).run_once()
    again = await Reconciler(_app(services)).run_once()
    assert first["reenqueued"] == 4 and again["reenqueued"] == 0
    assert sorted(await redis.zrange(QUEUES["generate"], 0, -1)) == sorted(
        arq_job_id("generate", g.id, 0).encode() for g in gens)
    assert await redis.zrange(QUEUES["train"], 0, -1) == [arq_job_id("train", train.id, 0).encode()]

    # Lose Redis again, then let a real worker's own reconciler (arq cron) restore and run the jobs.
    await redis.flushall()
    worker = worker_process("generate")
    for g in gens:
        await wait_for(lambda g=g: _status(services, g.id, "succeeded", "failed"), 240, f"generation job {g.id}")
    async with services.db.read() as s:
        jobs = [await s.get(Job, g.id) for g in gens]
        per_job = Counter((await s.execute(select(Generation.job_id))).scalars())
    assert all(j.status == "succeeded" and j.attempts == 1 for j in jobs), worker.output()
    assert per_job == Counter({g.id: 1 for g in gens})
    assert await redis.zrange(QUEUES["train"], 0, -1) == [arq_job_id("train", train.id, 0).encode()]
    await services.jobs.cancel(actor, train.id)


async def _status(services: Any, job_id: int, *statuses: str) -> bool:
    async with services.db.read() as s:
        return (await s.get(Job, job_id)).status in statuses


async def _crash(services: Any, job_id: int, attempts: int) -> None:
    """What a worker killed mid-attempt leaves: a running row whose heartbeat stopped."""
    async with services.db.transaction() as s:
        await s.execute(update(Job).where(Job.id == job_id).values(
            status="running", attempts=attempts, heartbeat_at=utcnow() - timedelta(minutes=5)))


async def test_stale_attempt_is_requeued_once_with_a_new_dispatch(services, actor, make_dataset) -> None:
    info = await _train(services, actor, make_dataset)
    await _crash(services, info.id, attempts=1)
    results = await asyncio.gather(*(Reconciler(_app(services)).run_once() for _ in range(3)))
    assert sum(r["requeued_stale"] for r in results) == 1
    async with services.db.read() as s:
        job = await s.get(Job, info.id)
    assert job.status == "queued" and job.attempts == 1 and job.heartbeat_at is None
    assert (await _kinds(services, info.id))["training_retrying"] == 1
    assert await services.enqueuer.present("train", info.id, 1), "re-dispatched under a fresh arq id"


async def test_exhausted_attempts_fail_with_exactly_one_notification(services, actor, make_dataset) -> None:
    info = await _train(services, actor, make_dataset)
    await _crash(services, info.id, attempts=3)  # max_attempts = 3
    await asyncio.gather(*(Reconciler(_app(services)).run_once() for _ in range(3)))
    await Reconciler(_app(services)).run_once()
    async with services.db.read() as s:
        job = await s.get(Job, info.id)
        charge = (await s.execute(select(QuotaCharge).where(QuotaCharge.job_id == info.id))).scalar_one()
        element = await s.get(Element, info.element_id)
        note = (await s.execute(select(Notification).where(Notification.kind == "training_failed"))).scalar_one()
    assert job.status == "failed" and job.error_code == "crashed" and "gave up after 3 attempts" in job.error
    assert charge.refunded_at is not None and element.status == "failed"
    assert (await _kinds(services, info.id)) == Counter({"training_queued": 1, "training_failed": 1})
    assert note.payload["hint"] and note.payload["reason"] == job.error

    # A queued row that somehow has no attempts left is failed too, once.
    second = await services.jobs.request_generation(actor, prompt="a cat")
    async with services.db.transaction() as s:
        await s.execute(update(Job).where(Job.id == second.id).values(attempts=3))
    stats = await asyncio.gather(*(Reconciler(_app(services)).run_once() for _ in range(2)))
    assert sum(r["failed_exhausted"] for r in stats) == 1
    assert (await _kinds(services, second.id)) == Counter({"generation_failed": 1})
