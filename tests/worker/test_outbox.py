"""The outbox: written with the state change, deduplicated, delivered once across pumps, retries, restarts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from storage.db.models import Notification, utcnow
from storage.job_views import NotificationView
from storage.queue.outbox import ConsoleDeliverer, OutboxPump, add_notification, render_line


class Recorder:
    def __init__(self, fail_first: int = 0, delay: float = 0.0) -> None:
        self.seen: list[NotificationView] = []
        self.fail_first = fail_first
        self.delay = delay

    async def deliver(self, n: NotificationView) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("Discord is down")
        self.seen.append(n)


async def _add(services: Any, actor: Any, n: int) -> None:
    async with services.db.transaction() as s:
        for i in range(n):
            assert await add_notification(s, user_id=actor.user_id, job_id=None, kind="training_progress",
                                          dedupe_key=f"test:{i}", payload={"progress": {"epoch": i}})
        # The same state change written again (a retried transition) is a no-op.
        assert not await add_notification(s, user_id=actor.user_id, job_id=None, kind="training_progress",
                                          dedupe_key="test:0", payload={})


async def test_each_row_delivered_once_by_competing_pumps(services, actor) -> None:
    await _add(services, actor, 30)
    a, b = Recorder(delay=0.01), Recorder(delay=0.01)
    pumps = [OutboxPump(services.db, a, "pump-a", batch=4), OutboxPump(services.db, b, "pump-b", batch=4)]
    while True:
        counts = await asyncio.gather(*(p.run_once() for p in pumps))
        if not any(counts):
            break
    ids = [n.id for n in a.seen + b.seen]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert a.seen and b.seen  # both took part
    assert all(n.user_external_id == "local:alice" and not n.possibly_delivered for n in a.seen + b.seen)
    async with services.db.read() as s:
        rows = list((await s.execute(select(Notification))).scalars())
    assert all(r.delivered_at is not None and r.attempts == 1 for r in rows)


async def test_failed_delivery_is_retried_with_backoff(services, actor) -> None:
    await _add(services, actor, 1)
    rec = Recorder(fail_first=1)
    pump = OutboxPump(services.db, rec, "pump", retry_delay=1.0)  # long enough that a slow machine still sees it
    assert await pump.run_once() == 0
    assert await pump.run_once() == 0  # backing off
    await asyncio.sleep(1.2)
    assert await pump.run_once() == 1
    async with services.db.read() as s:
        row = (await s.execute(select(Notification))).scalar_one()
    assert row.attempts == 2 and row.delivered_at is not None and row.last_error is None
    assert len(rec.seen) == 1 and rec.seen[0].delivery_attempt == 2 and not rec.seen[0].possibly_delivered


async def test_crash_between_deliver_and_mark_is_detected(services, actor) -> None:
    await _add(services, actor, 1)
    crashed = OutboxPump(services.db, Recorder(), "crashed-pump", lease_seconds=60)
    claimed = await crashed.claim()  # claimed, maybe delivered, then the process died before marking
    assert len(claimed) == 1
    rec = Recorder()
    other = OutboxPump(services.db, rec, "restarted-pump", lease_seconds=60)
    assert await other.run_once() == 0  # the lease still holds
    async with services.db.transaction() as s:  # time passes beyond the lease
        await s.execute(update(Notification).values(claimed_at=utcnow() - timedelta(seconds=61)))
    assert await other.run_once() == 1
    assert rec.seen[0].possibly_delivered and rec.seen[0].idempotency_key == f"atelier-notification-{claimed[0].id}"
    # The crashed pump coming back cannot mark a row it no longer holds.
    assert await crashed._finish(claimed[0], None) is False


async def test_pump_run_loop_and_console_rendering(services, actor) -> None:
    await _add(services, actor, 3)
    rec = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxPump(services.db, rec, "loop", poll_interval=0.05).run(stop))
    for _ in range(100):
        if len(rec.seen) == 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [n.payload["progress"]["epoch"] for n in rec.seen] == [0, 1, 2]
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    await ConsoleDeliverer(Console(file=buf, width=200)).deliver(rec.seen[1])
    assert "epoch 1" in buf.getvalue()
    failed = NotificationView(id=1, kind="training_failed", user_id=1, user_external_id="local:a", job_id=9,
                              payload={"element_name": "Ink", "reason": "timeout", "hint": "use fewer epochs"},
                              origin={}, created_at=utcnow(), delivery_attempt=1)
    assert "failed" in render_line(failed) and "use fewer epochs" in render_line(failed)
