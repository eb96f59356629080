"""Notifications outbox: rows written with the state change they report, delivered by a pump.

Guarantee (honest version):

* A row is written in the same transaction as the state change, with a unique ``dedupe_key``, so a retried
  transition never writes it twice (:func:`add_notification` is a no-op when the key exists).
* :class:`OutboxPump` claims a row (its own transaction: ``claimed_by``/``claimed_at``, ``attempts += 1``),
  calls ``Deliverer.deliver``, then marks it delivered in another transaction. Each claim is a compare-and-set,
  so two pumps (two bot processes) never hold the same row at once.
* A failed ``deliver`` (exception) releases the claim and records ``last_error``; the row is retried with backoff
  up to ``max_attempts`` times.
* A crash *between* deliver and mark is the one window no database can close on its own. It is detected: the
  claim's lease expires, the next pump re-claims the row and hands it over with ``possibly_delivered=True`` and a
  stable ``idempotency_key``. A deliverer that honours the key (for example by checking what it last sent, or by
  using the key as a message nonce) delivers exactly once; one that ignores it delivers at least once, and the
  duplicate can only happen after a crash in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db.engine import Database
from storage.db.models import Job, Notification, User, utcnow
from storage.job_views import NotificationView

log = logging.getLogger(__name__)


class Deliverer(Protocol):
    """Sends one notification to its user (Discord DM, console line, …). Raise to have it retried later."""

    async def deliver(self, n: NotificationView) -> None: ...


async def add_notification(session: AsyncSession, *, user_id: int, job_id: int | None, kind: str, dedupe_key: str,
                           payload: dict[str, Any]) -> bool:
    """Add an outbox row in the caller's transaction; False (and nothing written) if ``dedupe_key`` exists."""
    exists = await session.scalar(select(Notification.id).where(Notification.dedupe_key == dedupe_key))
    if exists is not None:
        return False
    try:
        async with session.begin_nested():
            session.add(Notification(user_id=user_id, job_id=job_id, kind=kind, dedupe_key=dedupe_key,
                                     payload={"kind": kind, **payload}))
    except IntegrityError:
        return False  # a concurrent transaction wrote the same state change first
    return True


class ConsoleDeliverer:
    """Prints notifications with rich (``atelier run`` without Discord, the CLI, tests)."""

    def __init__(self, console: Any | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)

    async def deliver(self, n: NotificationView) -> None:
        self.console.print(render_line(n), highlight=False)


def render_line(n: NotificationView) -> str:
    """A one-line, person-readable rendering of a notification."""
    p = n.payload
    what = p.get("element_name") or (f"generation {p['generation_id']}" if p.get("generation_id") else "")
    head = f"[bold]job {n.job_id}[/bold] {what}".strip()
    if n.kind == "training_queued":
        return f"{head}: queued (position {p.get('position', '?')})"
    if n.kind == "training_started":
        return f"{head}: training started (attempt {p.get('attempt')}/{p.get('max_attempts')})"
    if n.kind == "training_progress":
        pr = p.get("progress") or {}
        loss = f", loss {pr['loss']:.4f}" if isinstance(pr.get("loss"), float) else ""
        return f"{head}: epoch {pr.get('epoch')}/{pr.get('total_epochs')}{loss}"
    if n.kind == "training_finished":
        return (f"{head}: [green]training finished[/green] — trigger '{p.get('trigger')}', "
                f"recommended strength {p.get('recommended_strength')}")
    if n.kind == "training_retrying":
        return f"{head}: retrying (attempt {p.get('attempt')}/{p.get('max_attempts')}): {p.get('reason')}"
    if n.kind.endswith("_failed"):
        return f"{head}: [red]failed[/red] — {p.get('reason')} {p.get('hint') or ''}".rstrip()
    if n.kind.endswith("_cancelled"):
        return f"{head}: cancelled"
    if n.kind == "generation_finished":
        return f"{head}: {len(p.get('images') or [])} image(s), seed {p.get('seed')}"
    return f"{head}: {n.kind}"


class OutboxPump:
    """Delivers undelivered outbox rows through ``deliverer``; run one per front-end process."""

    def __init__(self, db: Database, deliverer: Deliverer, consumer_id: str, *, lease_seconds: float = 120.0,
                 batch: int = 20, poll_interval: float = 1.0, max_attempts: int = 8,
                 retry_delay: float = 5.0) -> None:
        self.db = db
        self.deliverer = deliverer
        self.consumer_id = consumer_id[:64]
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.wake = asyncio.Event()

    async def claim(self) -> list[NotificationView]:
        """Claim up to ``batch`` deliverable rows (oldest first) for this consumer."""
        now = utcnow()
        stale = now - self.lease
        async with self.db.transaction() as session:
            rows = (await session.execute(
                select(Notification, User.external_id, Job.origin)
                .join(User, User.id == Notification.user_id)
                .outerjoin(Job, Job.id == Notification.job_id)
                .where(Notification.delivered_at.is_(None), Notification.attempts < self.max_attempts,
                       or_(Notification.claimed_by.is_(None), Notification.claimed_at < stale))
                .order_by(Notification.id).limit(self.batch * 3)
            )).all()
            claimed: list[NotificationView] = []
            for n, external_id, origin in rows:
                if len(claimed) >= self.batch:
                    break
                if n.claimed_by is None and n.claimed_at is not None:
                    # released after a failed delivery: back off linearly with the attempt count
                    if n.claimed_at > now - timedelta(seconds=self.retry_delay * n.attempts):
                        continue
                possibly_delivered = n.claimed_by is not None  # previous holder vanished mid-delivery
                res = await session.execute(
                    update(Notification)
                    .where(Notification.id == n.id, Notification.attempts == n.attempts,
                           Notification.delivered_at.is_(None))
                    .values(claimed_by=self.consumer_id, claimed_at=now, attempts=n.attempts + 1)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount != 1:
                    continue  # another pump got it first
                n.attempts += 1
                claimed.append(NotificationView.of(n, external_id=external_id, origin=origin,
                                                   possibly_delivered=possibly_delivered))
        return claimed

    async def _finish(self, n: NotificationView, error: str | None) -> bool:
        values: dict[str, Any] = (
            {"delivered_at": utcnow(), "last_error": None} if error is None
            else {"claimed_by": None, "claimed_at": utcnow(), "last_error": error[:2000]}
        )
        async with self.db.transaction() as session:
            res = await session.execute(
                update(Notification)
                .where(Notification.id == n.id, Notification.claimed_by == self.consumer_id,
                       Notification.attempts == n.delivery_attempt, Notification.delivered_at.is_(None))
                .values(**values).execution_options(synchronize_session=False)
            )
        if res.rowcount != 1:
            log.warning("notification %s: lease lost before it was marked (another consumer re-claimed it)", n.id)
            return False
        return True

    async def run_once(self) -> int:
        """Claim and deliver one batch; returns how many were delivered."""
        delivered = 0
        for n in await self.claim():
            try:
                # Finish well inside the lease so no other pump re-claims a row we are still delivering.
                await asyncio.wait_for(self.deliverer.deliver(n), self.lease.total_seconds() / 2)
            except Exception as exc:  # noqa: BLE001 — any deliverer failure is retried later
                log.warning("notification %s (%s) not delivered: %s", n.id, n.kind, exc)
                await self._finish(n, f"{type(exc).__name__}: {exc}")
                continue
            if await self._finish(n, None):
                delivered += 1
        return delivered

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Pump until ``stop`` is set (or the task is cancelled). ``wake`` shortens the wait after a write."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                n = await self.run_once()
            except Exception:  # noqa: BLE001 — a database hiccup must not kill the pump
                log.exception("outbox pump iteration failed")
                n = 0
            if n:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop.wait(), self.wake.wait()), self.poll_interval)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
