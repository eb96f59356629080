"""Front-end job use cases against a real database and Redis (no worker): request, enqueue once, cancel, retry."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from storage.db.models import Element, Job, Notification, QuotaCharge
from storage.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from storage.queue.arq_jobs import QUEUES, arq_job_id
from tests.worker.conftest import FAST_TRAIN


async def _count(services: Any, model: Any, *where: Any) -> int:
    async with services.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)))


async def _notes(services: Any, job_id: int) -> list[str]:
    async with services.db.read() as s:
        return list((await s.execute(select(Notification.kind).where(Notification.job_id == job_id)
                                     .order_by(Notification.id))).scalars())


async def test_training_request_is_one_transaction_then_enqueued_once(services, actor, make_dataset) -> None:
    await make_dataset(actor, "shapes", count=3)
    info = await services.jobs.request_training(actor, dataset="Shapes", name="Inkwash", category="style",
                                                base_model="tiny-sd15", trigger="zqxink", overrides=FAST_TRAIN,
                                                origin={"guild_id": "1", "channel_id": "2"})
    assert info.status == "queued" and info.queue_position == 1 and info.element_name == "Inkwash"
    assert info.payload["image_count"] == 3 and len(info.payload["manifest"]) == 3
    assert info.origin == {"guild_id": "1", "channel_id": "2"}
    assert await _count(services, QuotaCharge, QuotaCharge.job_id == info.id) == 1
    assert await _notes(services, info.id) == ["training_queued"]
    async with services.db.read() as s:
        element = await s.get(Element, info.element_id)
        note = (await s.execute(select(Notification).where(Notification.job_id == info.id))).scalar_one()
    assert element.status == "training" and len(element.manifest) == 3
    assert note.payload["position"] == 1 and note.payload["element_name"] == "Inkwash"

    redis = services.enqueuer.redis
    assert await redis.zrange(QUEUES["train"], 0, -1) == [arq_job_id("train", info.id, 0).encode()]
    async with services.db.read() as s:
        job = await s.get(Job, info.id)
    # A double click / retried request / reconciler race enqueues the same dispatch: still one queue entry.
    assert await services.enqueuer.enqueue(job) is False
    assert await services.enqueuer.enqueue(job) is False
    assert await redis.zcard(QUEUES["train"]) == 1
    assert await services.enqueuer.present("train", info.id, 0)

    # One active training per member (ATELIER_MAX_ACTIVE_TRAININGS): the same member waits; another queues.
    with pytest.raises(QuotaExceeded, match="already have a training queued or running"):
        await services.jobs.request_training(actor, dataset="shapes", name="Other", category="style",
                                             base_model="tiny-sd15", trigger="zqxother", overrides=FAST_TRAIN)
    bob = await services.users.local_actor("bob")
    await make_dataset(bob, "shapes", count=3)
    second = await services.jobs.request_training(bob, dataset="shapes", name="Other", category="style",
                                                  base_model="tiny-sd15", trigger="zqxother", overrides=FAST_TRAIN)
    assert second.queue_position == 2


@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"base_model": "flux-schnell"}, InvalidInput, "cannot be used for training"),
    ({"base_model": "nope"}, InvalidInput, "Unknown base model"),
    ({"trigger": "two words"}, InvalidInput, "spaces"),
    ({"category": "landscape"}, InvalidInput, "not a category"),
    ({"dataset": "missing"}, NotFound, "no dataset"),
    ({"overrides": {"epochs": 0}}, InvalidInput, "epochs"),
    ({"overrides": {"bogus": 1}}, InvalidInput, "unknown training option"),
])
async def test_bad_training_requests_are_refused_with_nothing_written(services, actor, make_dataset, kwargs,
                                                                       error, text) -> None:
    await make_dataset(actor, "shapes", count=3)
    args = dict(dataset="shapes", name="Ink", category="style", base_model="tiny-sd15", trigger="zqxink")
    with pytest.raises(error, match=text):
        await services.jobs.request_training(actor, **{**args, **kwargs})
    assert await _count(services, Job) == 0
    assert await _count(services, QuotaCharge) == 0
    assert await _count(services, Element) == 0
    assert await services.enqueuer.depth("train") == 0


async def test_image_limits_per_family(services, actor, make_dataset) -> None:
    await make_dataset(actor, "tiny", count=1)
    with pytest.raises(InvalidInput, match="at least 2") as exc:
        await services.jobs.request_training(actor, dataset="tiny", name="Ink", category="style",
                                             base_model="tiny-sd15", trigger="zqxink")
    assert "Add 1 more" in exc.value.hint


async def test_quota_is_charged_with_the_row_and_refunded_once_on_cancel(services, actor, make_dataset) -> None:
    services.quotas.settings.train_slots_per_period = 1
    await make_dataset(actor, "shapes", count=2)
    args = dict(dataset="shapes", category="style", base_model="tiny-sd15", overrides=FAST_TRAIN)
    first = await services.jobs.request_training(actor, name="One", trigger="zqxone", **args)
    with pytest.raises(QuotaExceeded):
        await services.jobs.request_training(actor, name="Two", trigger="zqxtwo", **args)
    cancelled = await services.jobs.cancel(actor, first.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(Conflict):
        await services.jobs.cancel(actor, first.id)
    assert await _notes(services, first.id) == ["training_queued", "training_cancelled"]
    async with services.db.read() as s:
        charge = (await s.execute(select(QuotaCharge).where(QuotaCharge.job_id == first.id))).scalar_one()
        element = await s.get(Element, first.element_id)
    assert charge.refunded_at is not None and element.status == "failed"
    # The slot is back: the next request goes through; and retry re-queues the cancelled one as a new job.
    retried = await services.jobs.retry(actor, first.id)
    assert retried.id != first.id and retried.status == "queued" and retried.element_name == "One"
    assert retried.payload["manifest"] == first.payload["manifest"]


async def test_jobs_are_private(services, actor, make_dataset) -> None:
    await make_dataset(actor, "shapes", count=2)
    info = await services.jobs.request_training(actor, dataset="shapes", name="Ink", category="style",
                                                base_model="tiny-sd15", trigger="zqxink", overrides=FAST_TRAIN)
    bob = await services.users.local_actor("bob")
    with pytest.raises(NotFound):
        await services.jobs.get(bob, info.id)
    with pytest.raises(NotFound):
        await services.jobs.cancel(bob, info.id)
    assert await services.jobs.list(bob) == []
    assert [j.id for j in await services.jobs.list(actor, active_only=True)] == [info.id]


async def test_generation_request_checks_before_queueing(services, actor) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        await services.jobs.request_generation(actor, prompt="   ")
    with pytest.raises(InvalidInput, match="1–4 images"):
        await services.jobs.request_generation(actor, prompt="a cat", count=9)
    with pytest.raises(InvalidInput, match="aspect"):
        await services.jobs.request_generation(actor, prompt="a cat", aspect="2:1")
    with pytest.raises(NotFound):
        await services.jobs.request_generation(actor, prompt="a cat", elements=[("ghost", 0.5)])
    info = await services.jobs.request_generation(actor, prompt="a cat", aspect="3:4", seed=7)
    assert info.kind == "generate" and info.payload["base_model"] == "tiny-sd15"
    assert (info.payload["width"], info.payload["height"]) == (48, 64)
    assert await services.enqueuer.depth("generate") == 1


async def test_generation_cooldown(services, actor) -> None:
    services.jobs.settings.generation_cooldown_seconds = 30
    await services.jobs.request_generation(actor, prompt="a cat")
    with pytest.raises(QuotaExceeded, match="one generation every 30 s"):
        await services.jobs.request_generation(actor, prompt="a dog")
