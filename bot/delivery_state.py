"""Where a front end put each job's messages (Discord ids), so progress edits land on one message and a repeated
delivery never posts twice.

Kept in ``Job.result["delivery"]`` — a JSON field the worker only ever merges into (``end_job`` keeps existing
keys), so no migration is needed. Every change is a locked read-modify-write of the job row.

Shape::

    {"progress": [channel_id, message_id] | absent, "final": bool, "dm_closed": bool,
     "sent": {"<key>": [channel_id, message_id]}}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from storage.db.models import Job, JobKind, JobStatus, User
from storage.job_views import JobInfo

KEY = "delivery"
MessageRef = tuple[int, int]  # (channel id, message id)


def _ref(value: Any) -> MessageRef | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


@dataclass(frozen=True)
class DeliveryRecord:
    job_id: int
    progress: MessageRef | None = None
    final: bool = False
    dm_closed: bool = False
    sent: dict[str, MessageRef] = field(default_factory=dict)

    @classmethod
    def of(cls, job_id: int, data: dict[str, Any] | None) -> DeliveryRecord:
        d = data or {}
        sent = {str(k): r for k, v in (d.get("sent") or {}).items() if (r := _ref(v)) is not None}
        return cls(job_id, _ref(d.get("progress")), bool(d.get("final")), bool(d.get("dm_closed")), sent)


@dataclass(frozen=True)
class ActiveProgress:
    """A queued/running training job whose progress message a front end keeps up to date."""

    job_id: int
    owner_external_id: str
    status: str
    attempt: int
    max_attempts: int
    progress: dict[str, Any]
    payload: dict[str, Any]
    message: MessageRef


class DeliveryLog:
    """Reads and records delivery state on job rows (``db`` is a :class:`storage.db.engine.Database`)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def get(self, job_id: int | None) -> DeliveryRecord:
        if job_id is None:
            return DeliveryRecord(0)
        async with self.db.read() as session:
            result = await session.scalar(select(Job.result).where(Job.id == job_id))
        return DeliveryRecord.of(job_id, (result or {}).get(KEY))

    async def job(self, job_id: int | None) -> JobInfo | None:
        """The job as it is now (with its queue position when queued), for rendering; None if gone."""
        if job_id is None:
            return None
        async with self.db.read() as session:
            job = await session.get(Job, job_id)
            if job is None:
                return None
            position = None
            if job.status == JobStatus.QUEUED.value:
                ahead = await session.scalar(select(func.count(Job.id)).where(
                    Job.kind == job.kind, Job.status == JobStatus.QUEUED.value, Job.id < job.id))
                position = int(ahead or 0) + 1
            return JobInfo.of(job, queue_position=position)

    async def _change(self, job_id: int | None, fn: Callable[[dict[str, Any]], None]) -> None:
        if job_id is None:
            return
        async with self.db.transaction() as session:
            job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
            if job is None:  # deleted meanwhile: nothing to remember
                return
            result = dict(job.result or {})
            data = dict(result.get(KEY) or {})
            fn(data)
            result[KEY] = data
            job.result = result

    async def set_progress(self, job_id: int | None, ref: MessageRef | None, *, final: bool = False) -> None:
        def change(d: dict[str, Any]) -> None:
            if ref is None:
                d.pop("progress", None)
            else:
                d["progress"] = list(ref)
            d["final"] = bool(d.get("final")) or final
        await self._change(job_id, change)

    async def mark_final(self, job_id: int | None) -> None:
        await self._change(job_id, lambda d: d.__setitem__("final", True))

    async def set_dm_closed(self, job_id: int | None) -> None:
        await self._change(job_id, lambda d: d.__setitem__("dm_closed", True))

    async def record_sent(self, job_id: int | None, key: str, ref: MessageRef) -> None:
        def change(d: dict[str, Any]) -> None:
            d["sent"] = {**(d.get("sent") or {}), key: list(ref)}
        await self._change(job_id, change)

    async def active_progress(self, limit: int = 500) -> list[ActiveProgress]:
        """Queued/running training jobs that have a progress message not yet finalised (oldest first)."""
        async with self.db.read() as session:
            rows = (await session.execute(
                select(Job, User.external_id).join(User, User.id == Job.owner_id)
                .where(Job.kind == JobKind.TRAIN.value,
                       Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
                .order_by(Job.id).limit(limit)
            )).all()
        out = []
        for job, external_id in rows:
            rec = DeliveryRecord.of(job.id, (job.result or {}).get(KEY))
            if rec.progress is not None and not rec.final:
                out.append(ActiveProgress(job.id, external_id, job.status, job.attempts, job.max_attempts,
                                          dict(job.progress or {}), dict(job.payload or {}), rec.progress))
        return out
