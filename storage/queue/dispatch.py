"""Handing a committed job row to the queue: enqueue it now, or leave it for the reconciler.

Kept apart from :mod:`storage.queue.arq_jobs` so the use cases that call it do not import arq/Redis.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class CanEnqueue(Protocol):
    async def enqueue(self, job: Any) -> bool: ...


async def enqueue_committed(enqueuer: CanEnqueue | None, job: Any) -> None:
    """Enqueue ``job`` (its row already committed). Redis being down is not the member's problem: the row stays
    queued and the reconciler enqueues queued rows that Redis does not hold. ``None``: no queue (in-process runs)."""
    if enqueuer is None:
        return
    try:
        await enqueuer.enqueue(job)
    except Exception as exc:  # noqa: BLE001 — any Redis/network failure: the row is the truth, the reconciler retries
        log.warning("job %s committed but not enqueued (%s); the reconciler will retry", job.id, exc)
