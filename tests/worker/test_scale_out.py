"""Scale-out: two worker processes on one Redis share the queue; every job completes exactly once, even with
duplicate deliveries of the same job (arq is at-least-once)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from storage.db.models import Generation, Job, Notification
from storage.queue.arq_jobs import FUNCTIONS, QUEUES
from tests.worker.conftest import wait_for

pytestmark = pytest.mark.slow  # two real worker processes run forty jobs


async def _all_finished(services: Any, ids: list[int]) -> bool:
    async with services.db.read() as s:
        statuses = (await s.execute(select(Job.status).where(Job.id.in_(ids)))).scalars().all()
    return all(st in ("succeeded", "failed", "cancelled") for st in statuses)


async def test_two_workers_twenty_jobs_each_completed_once(services, actor, worker_process) -> None:
    services.settings.max_queued_generations = 20  # one member queues all twenty (the default cap is 8)
    workers = [worker_process("generate"), worker_process("generate")]
    jobs = [await services.jobs.request_generation(actor, prompt=f"a red cube {i}", seed=i, steps=2)
            for i in range(20)]
    ids = [j.id for j in jobs]
    redis = services.enqueuer.redis
    for j in jobs[:5]:
        # Duplicate deliveries: the same dispatch under another arq id, and a stale older dispatch.
        await redis.enqueue_job(FUNCTIONS["generate"], j.id, 0, _job_id=f"dup-{j.id}",
                                _queue_name=QUEUES["generate"])
        await redis.enqueue_job(FUNCTIONS["generate"], j.id, -1, _job_id=f"stale-{j.id}",
                                _queue_name=QUEUES["generate"])
    try:
        await wait_for(lambda: _all_finished(services, ids), 420, "20 generation jobs")
    except AssertionError:
        raise AssertionError("\n".join(w.output() for w in workers)) from None
    async with services.db.read() as s:
        rows = list((await s.execute(select(Job).where(Job.id.in_(ids)))).scalars())
        per_job = Counter((await s.execute(select(Generation.job_id))).scalars())
        notes = Counter((await s.execute(select(Notification.job_id).where(
            Notification.kind == "generation_finished"))).scalars())
    assert all(r.status == "succeeded" and r.attempts == 1 for r in rows), [(r.id, r.status, r.error) for r in rows]
    assert per_job == Counter({i: 1 for i in ids})
    assert notes == Counter({i: 1 for i in ids})
    by_worker = Counter(r.progress.get("worker") for r in rows)
    assert sum(by_worker.values()) == 20 and len(by_worker) <= 2
    for w in workers:
        assert w.stop() == 0, w.output()
