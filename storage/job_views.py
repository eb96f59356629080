"""Read-only views of jobs and notifications that front ends render (no ORM objects leave storage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.db.models import Job, JobStatus, Notification


@dataclass(frozen=True)
class JobInfo:
    """A job as its owner sees it.

    ``progress`` holds what the worker last reported: ``phase`` (loading|caching|training|sampling|exporting|
    done|generating), ``step``/``total_steps``, ``epoch``/``total_epochs``, ``loss``, ``lr``, ``eta_seconds``,
    ``elapsed_seconds``, ``fraction`` (0–1), ``samples`` (blob hashes of the latest sample images).
    ``attempt`` is the attempt that runs or ran last (0 = not started yet).
    """

    id: int
    kind: str
    status: str
    owner_id: int
    progress: dict[str, Any]
    attempt: int
    max_attempts: int
    error: str | None
    error_code: str | None
    hint: str | None
    cancel_requested: bool
    element_id: int | None
    element_name: str | None
    payload: dict[str, Any]
    result: dict[str, Any]
    origin: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = None

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).finished

    @property
    def fraction(self) -> float:
        if self.status == JobStatus.SUCCEEDED:
            return 1.0
        return float(self.progress.get("fraction") or 0.0)

    @property
    def generation_id(self) -> int | None:
        return self.result.get("generation_id")

    @property
    def images(self) -> list[str]:
        """Blob hashes of a finished generation's images."""
        return list(self.result.get("images") or [])

    @classmethod
    def of(cls, job: Job, *, queue_position: int | None = None) -> JobInfo:
        return cls(
            id=job.id, kind=job.kind, status=job.status, owner_id=job.owner_id, progress=dict(job.progress or {}),
            attempt=job.attempts, max_attempts=job.max_attempts, error=job.error, error_code=job.error_code,
            hint=(job.result or {}).get("hint"), cancel_requested=job.cancel_requested, element_id=job.element_id,
            element_name=(job.payload or {}).get("element_name"), payload=dict(job.payload or {}),
            result=dict(job.result or {}), origin=dict(job.origin or {}), created_at=job.created_at,
            started_at=job.started_at, finished_at=job.finished_at, queue_position=queue_position,
        )


@dataclass(frozen=True)
class NotificationView:
    """One outbox row, handed to a :class:`storage.queue.outbox.Deliverer`.

    ``kind``: training_queued | training_started | training_progress | training_finished | training_failed |
    training_cancelled | training_retrying | generation_finished | generation_failed | generation_cancelled |
    generation_retrying.

    ``payload`` always has ``kind``, ``job_id``, ``job_kind``, ``attempt``, ``max_attempts``; training rows add
    ``element_id``, ``element_name``, ``trigger``, ``base_model``, ``category``; then per kind:
    queued → ``position``; progress → ``progress`` (as in :class:`JobInfo`); finished → ``samples`` (blob hashes),
    ``loss_curve``, ``grid``, ``weights``, ``kohya``, ``recommended_strength``, ``final_loss``, ``epochs``,
    ``steps``, ``resumed_from_epoch``; failed → ``reason``, ``hint``, ``error_code``; retrying → ``reason``;
    generation_finished → ``generation_id``, ``images`` (blob hashes), ``seed``, ``seeds``, ``prompt``,
    ``elements``, ``warnings``, ``width``, ``height``.

    ``origin`` is the job's origin (e.g. ``{"guild_id", "channel_id", "interaction_id", ...}``) so a deliverer
    can fall back to the channel. ``possibly_delivered`` is True when an earlier consumer claimed this row and
    vanished without marking it (it may or may not have delivered): an idempotent deliverer checks
    ``idempotency_key`` before sending again.
    """

    id: int
    kind: str
    user_id: int
    user_external_id: str
    job_id: int | None
    payload: dict[str, Any]
    origin: dict[str, Any]
    created_at: datetime
    delivery_attempt: int
    possibly_delivered: bool = False
    idempotency_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, n: Notification, *, external_id: str, origin: dict[str, Any] | None, possibly_delivered: bool,
           ) -> NotificationView:
        return cls(
            id=n.id, kind=n.kind, user_id=n.user_id, user_external_id=external_id, job_id=n.job_id,
            payload=dict(n.payload or {}), origin=dict(origin or {}), created_at=n.created_at,
            delivery_attempt=n.attempts, possibly_delivered=possibly_delivered,
            idempotency_key=f"atelier-notification-{n.id}",
        )
