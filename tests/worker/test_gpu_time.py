"""GPU time is paid for: which endings refund a training slot, runs that cannot finish are refused before they
are queued, one active training per member, a cap on queued generations, and the generation cooldown holds
under concurrent requests (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.db.models import Job, QuotaCharge
from storage.errors import InvalidInput, QuotaExceeded
from storage.queue.job_transitions import JobTransitions
from tests.worker.conftest import FAST_TRAIN


async def _train(services: Any, actor: Any, name: str) -> Any:
    return await services.jobs.request_training(actor, dataset="shapes", name=name, category="style",
                                                base_model="tiny-sd15", trigger=f"zqx{name.lower()}",
                                                overrides=FAST_TRAIN)


async def _refunded(services: Any, job_id: int) -> bool:
    async with services.db.read() as s:
        charge = (await s.execute(select(QuotaCharge).where(QuotaCharge.job_id == job_id))).scalar_one()
    return charge.refunded_at is not None


async def test_only_failures_that_are_not_the_members_doing_refund_the_slot(services, actor,
                                                                             make_dataset) -> None:
    await make_dataset(actor, "shapes", count=2)
    t = JobTransitions(services.db, services.settings, services.quotas, services.elements)
    outcomes = {}
    # (how the job ends, refunded?) — each run started by a worker first, except the queued cancel.
    for name, end, expected in [
        ("Timeout", lambda j: t.fail(j, 1, code="timeout", reason="took too long"), False),
        ("Invalid", lambda j: t.fail(j, 1, code="invalid", reason="bad settings"), False),
        ("Oom", lambda j: t.fail(j, 1, code="oom", reason="out of memory"), False),
        ("Running", lambda j: t.cancelled(j, 1), False),
        ("Internal", lambda j: t.fail(j, 1, code="internal", reason="disk full"), True),
        ("Missing", lambda j: t.fail(j, 1, code="missing_input", reason="blob gone"), True),
    ]:
        job = await _train(services, actor, name)
        assert await t.start(job.id, 0) is not None
        await end(job.id)
        outcomes[name] = (await _refunded(services, job.id), expected)
    queued = await _train(services, actor, "Queued")
    await services.jobs.cancel(actor, queued.id)  # never started: the slot comes back
    outcomes["Queued"] = (await _refunded(services, queued.id), True)
    lost = await _train(services, actor, "Lost")  # the worker vanished on every attempt
    for attempt in range(services.settings.max_attempts):
        await t.start(lost.id, attempt)
        await t.fail(lost.id, attempt + 1, code="crashed", reason="worker lost", retryable=True)
    outcomes["Lost"] = (await _refunded(services, lost.id), True)
    assert {k: got for k, (got, _) in outcomes.items()} == {k: want for k, (_, want) in outcomes.items()}
    async with services.db.read() as s:  # the member is told which it was
        told = {j.payload["element_name"]: j.result["slot_refunded"] for j in (await s.execute(select(Job))).scalars()}
    assert told == {k: want for k, (_, want) in outcomes.items()}


async def test_a_run_estimated_over_the_timeout_is_refused_before_it_is_queued(services, actor,
                                                                                make_dataset) -> None:
    await make_dataset(actor, "shapes", count=2)
    with pytest.raises(InvalidInput, match=r"estimated at [\d.]+ h, over the 6.0 h limit") as err:
        await services.jobs.request_training(
            actor, dataset="shapes", name="Huge", category="style", base_model="tiny-flux", trigger="zqxhuge",
            overrides={"epochs": 500, "resolution": 2048, "repeats": 10})
    assert "fewer epochs" in err.value.hint
    async with services.db.read() as s:
        assert await s.scalar(select(func.count(Job.id))) == 0
        assert await s.scalar(select(func.count(QuotaCharge.id))) == 0
    assert (await services.quotas.remaining(actor)).used == 0


async def test_queued_generations_are_capped_per_member(services, actor) -> None:
    services.settings.max_queued_generations = 2
    for _ in range(2):
        await services.jobs.request_generation(actor, prompt="a cat", seed=1)
    with pytest.raises(QuotaExceeded, match="at most 2 can be queued"):
        await services.jobs.request_generation(actor, prompt="a cat", seed=1)
    other = await services.users.local_actor("bob")
    await services.jobs.request_generation(other, prompt="a dog", seed=1)  # a cap per member, not global


async def test_cooldown_holds_under_concurrent_requests(services, actor) -> None:
    services.settings.generation_cooldown_seconds = 30

    async def one() -> str:
        try:
            await services.jobs.request_generation(actor, prompt="a cat", seed=1)
            return "accepted"
        except QuotaExceeded:
            return "refused"

    results = await asyncio.gather(*(one() for _ in range(8)))
    assert sorted(results) == ["accepted"] + ["refused"] * 7, results


async def test_retry_trains_on_the_frozen_images_after_the_dataset_was_deleted(services, actor,
                                                                                make_dataset) -> None:
    await make_dataset(actor, "shapes", count=2)
    first = await _train(services, actor, "Frozen")
    await services.jobs.cancel(actor, first.id)
    await services.datasets.delete(actor, "shapes")
    again = await services.jobs.retry(actor, first.id)
    assert again.status == "queued" and again.payload["manifest"] == first.payload["manifest"]
    assert again.payload["dataset_id"] is None
    for item in again.payload["manifest"]:  # a queued job's images are references: nothing was collected
        assert await services.blobs.exists(item["blob"])


async def test_a_strength_grid_must_fit_the_queued_generation_cap(services, actor) -> None:
    from tests.storage.conftest import ready_element

    element = await ready_element(services, actor, "Ink", "zqxink", base_model="tiny-sd15")
    job = await services.jobs.request_generation(actor, prompt="a cat", elements=[(element.name, 0.8)], seed=1)
    t = JobTransitions(services.db, services.settings, services.quotas, services.elements)
    await t.start(job.id, 0)
    image = await services.blobs.put_bytes(b"an image")
    gen_id = await t.succeed_generation(job.id, 1, images=[image], seed=1, seeds=[1], prompt="a cat", warnings=[],
                                        width=64, height=64)
    services.settings.max_queued_generations = 4  # a grid of 5 does not fit, even with nothing queued
    gens = services.generations
    with pytest.raises(QuotaExceeded, match=r"at most 4 can be queued at once \(this asks for 5\)"):
        await gens.strength_grid(actor, gen_id, origin={})
    async with services.db.read() as s:
        assert await s.scalar(select(func.count(Job.id))) == 1, "no part of the grid was queued"
    services.settings.max_queued_generations = 5
    assert len(await gens.strength_grid(actor, gen_id, origin={})) == 5


async def test_the_train_preview_refuses_the_same_estimate(services, actor, make_dataset) -> None:
    from storage.training_preview import preview_training

    await make_dataset(actor, "shapes", count=2)
    with pytest.raises(InvalidInput, match=r"estimated at [\d.]+ h, over the 6.0 h limit"):
        await preview_training(services, actor, dataset="shapes", name="Huge", category="style",
                               base_model="tiny-flux", trigger="zqxhuge",
                               overrides={"epochs": 500, "resolution": 2048, "repeats": 10})
