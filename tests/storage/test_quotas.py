"""Training slots: atomic under concurrency, refunded once, admins unlimited, per-user overrides."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from storage.actors import Actor
from storage.db.models import Job, QuotaCharge, utcnow
from storage.errors import Forbidden, InvalidInput, QuotaExceeded
from storage.users import UserService


async def _request(services, actor: Actor) -> int:
    """What request_training does: job row + charge in one transaction (the charge failing rolls back the job)."""
    async with services.db.transaction() as session:
        job = Job(kind="train", owner_id=actor.user_id)
        session.add(job)
        await session.flush()
        await services.quotas.charge(session, actor, job.id)
        return job.id


async def _jobs(services) -> int:
    from sqlalchemy import func, select

    async with services.db.read() as session:
        return (await session.execute(select(func.count(Job.id)))).scalar_one()


async def test_charges_up_to_the_limit_then_says_when_a_slot_frees(services, alice) -> None:
    info = await services.quotas.remaining(alice)
    assert (info.limit, info.used, info.remaining, info.resets_at) == (5, 0, 5, None)
    for _ in range(5):
        await _request(services, alice)
    info = await services.quotas.remaining(alice)
    assert (info.used, info.remaining) == (5, 0)
    assert timedelta(days=29) < info.resets_at - utcnow() <= timedelta(days=30)
    with pytest.raises(QuotaExceeded) as err:
        await _request(services, alice)
    assert "5 training slots" in err.value.message and "next slot frees" in err.value.hint
    assert await _jobs(services) == 5  # the refused request left no job behind


async def test_concurrent_charges_never_exceed_the_limit(services, alice) -> None:
    results = await asyncio.gather(*(_request(services, alice) for _ in range(20)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(ok) == 5 and len(refused) == 15, results
    assert (await services.quotas.remaining(alice)).used == 5
    assert await _jobs(services) == 5


async def test_refund_is_idempotent_and_frees_the_slot(services, alice) -> None:
    jobs = [await _request(services, alice) for _ in range(5)]
    assert await services.quotas.refund(jobs[0], "worker crashed") is True
    assert await services.quotas.refund(jobs[0], "again") is False
    async with services.db.transaction() as session:
        assert await services.quotas.refund_in(session, jobs[0], "and again") is False
    assert (await services.quotas.remaining(alice)).used == 4
    results = await asyncio.gather(*(services.quotas.refund(jobs[1], "race") for _ in range(10)))
    assert results.count(True) == 1
    assert (await services.quotas.remaining(alice)).used == 3
    assert await services.quotas.refund(123456, "unknown job") is False
    await _request(services, alice)  # a refunded slot can be used again


async def test_charges_older_than_the_period_do_not_count(services, alice) -> None:
    async with services.db.transaction() as session:
        for days in (31, 40):
            session.add(QuotaCharge(user_id=alice.user_id, charged_at=utcnow() - timedelta(days=days)))
        session.add(QuotaCharge(user_id=alice.user_id, charged_at=utcnow() - timedelta(days=10)))
    info = await services.quotas.remaining(alice)
    assert info.used == 1
    assert timedelta(days=19) < info.resets_at - utcnow() <= timedelta(days=20)


async def test_admins_are_unlimited_and_set_per_user_limits(services, alice, bob) -> None:
    settings = services.settings.model_copy(update={"admin_user_ids": ["4242"]})
    admin = await UserService(services.db, settings).ensure("discord:4242", "Admin")
    for _ in range(7):
        await _request(services, admin)
    info = await services.quotas.remaining(admin)
    assert info.unlimited and info.used == 7

    with pytest.raises(Forbidden):
        await services.quotas.set_limit(bob, alice.external_id, 50)
    with pytest.raises(InvalidInput):
        await services.quotas.set_limit(admin, alice.external_id, -1)
    assert (await services.quotas.set_limit(admin, alice.external_id, 1)).limit == 1
    await _request(services, alice)
    with pytest.raises(QuotaExceeded):
        await _request(services, alice)
    await services.quotas.set_limit(admin, alice.external_id, 0)
    with pytest.raises(QuotaExceeded, match="not enabled"):
        await _request(services, alice)
    assert (await services.quotas.set_limit(admin, alice.external_id, None)).limit == 5
    # A user who never used Atelier can be given slots in advance.
    assert (await services.quotas.set_limit(admin, "discord:777", 9)).limit == 9
    assert (await services.quotas.remaining(await services.users.ensure("discord:777"))).limit == 9
