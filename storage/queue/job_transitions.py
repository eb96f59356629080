"""Job state changes made by workers and the reconciler; each writes its outbox row in the same transaction.

Attempt fencing: ``Job.attempts`` counts started attempts. A queued row with ``attempts == d`` is dispatched to
arq as ``atelier:<kind>:<id>:<d>``; starting it is a compare-and-set ``queued ∧ attempts == d → running,
attempts = d + 1``. Every later write of that attempt checks ``running ∧ attempts == d + 1``, so a worker that
lost its job (cancelled, re-queued by the reconciler after a missed heartbeat, finished elsewhere) finds out at
its next write (:class:`LostJob`) and stops, and a duplicate arq delivery of an old dispatch does nothing.

Refunds: GPU time is paid for. The training slot is refunded (exactly once, :meth:`QuotaService.refund_in` is
idempotent) only when the member did not cause the loss: a failure of ours (:data:`REFUNDED_FAILURES`: the worker
crashed or was lost, a system error, an input gone from storage) or a cancel before the run started. A timeout,
invalid or diverging settings, running out of memory, or a cancel of a running job use the slot. Every terminal
state writes exactly one notification (dedupe key ``job:<id>:end``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db.engine import Database
from storage.db.models import Generation, Job, JobKind, JobStatus, utcnow
from storage.elements import ElementService
from storage.queue.outbox import add_notification
from storage.quotas import QuotaService
from storage.settings import Settings

# What ending an attempt after an error comes to (a subset of worker.outcomes.Outcome).
FailOutcome = Literal["retrying", "cancelled", "failed"]
# Failure codes that are not the member's doing; every other failure (timeout, invalid, diverged, oom) is paid.
REFUNDED_FAILURES = frozenset({"crashed", "exhausted", "internal", "missing_input", "busy", "base_model"})


def refundable(job: Job, status: JobStatus, code: str | None) -> bool:
    """Whether ending ``job`` in ``status`` gives its training slot back (the rule in the module docstring)."""
    if status == JobStatus.CANCELLED:
        return job.started_at is None
    return status == JobStatus.FAILED and code in REFUNDED_FAILURES


class LostJob(Exception):
    """This attempt no longer owns the job row (cancelled, re-queued, or finished by someone else)."""


def note_base(job: Job) -> dict[str, Any]:
    """Fields every notification payload of ``job`` carries."""
    p = job.payload or {}
    base: dict[str, Any] = {"job_id": job.id, "job_kind": job.kind, "attempt": job.attempts,
                            "max_attempts": job.max_attempts}
    if job.kind == JobKind.TRAIN:
        base.update(element_id=job.element_id, element_name=p.get("element_name"), trigger=p.get("trigger"),
                    base_model=p.get("base_model"), category=p.get("category"))
    else:
        base.update(base_model=p.get("base_model"), prompt=p.get("prompt"),
                    elements=[{k: e.get(k) for k in ("element_id", "name", "owner", "strength")}
                              for e in p.get("elements", [])])
    return base


async def end_job(session: AsyncSession, quotas: QuotaService, elements: ElementService, job: Job,
                  status: JobStatus, *, code: str | None = None, reason: str | None = None,
                  hint: str | None = None, result: dict[str, Any] | None = None,
                  note: dict[str, Any] | None = None) -> None:
    """Put a locked, unfinished ``job`` in terminal ``status`` with its refund and its one notification."""
    job.status = status.value
    job.finished_at = utcnow()
    job.heartbeat_at = None
    job.error, job.error_code = reason, code
    job.result = {**(job.result or {}), **(result or {}), **({"hint": hint} if hint else {})}
    if status == JobStatus.SUCCEEDED:
        job.progress = {**(job.progress or {}), "fraction": 1.0, "phase": "done"}
    elif job.kind == JobKind.TRAIN:
        refunded = refundable(job, status, code)
        if refunded:
            await quotas.refund_in(session, job.id, f"{status.value}:{code or ''}"[:64])
        job.result = {**job.result, "slot_refunded": refunded}  # what the member is told
        note = {**(note or {}), "slot_refunded": refunded}
        if job.element_id is not None:
            await elements.mark_failed(session, job.element_id)
    prefix = "training" if job.kind == JobKind.TRAIN else "generation"
    word = {"succeeded": "finished", "failed": "failed", "cancelled": "cancelled"}[status.value]
    payload = {**note_base(job), **(note or {})}
    if status == JobStatus.FAILED:
        payload.update(reason=reason, hint=hint, error_code=code)
    await add_notification(session, user_id=job.owner_id, job_id=job.id, kind=f"{prefix}_{word}",
                           dedupe_key=f"job:{job.id}:end", payload=payload)


class JobTransitions:
    """Worker-side transitions. ``quotas``/``elements`` are the storage services (refunds, Element writes)."""

    def __init__(self, db: Database, settings: Settings, quotas: QuotaService, elements: ElementService) -> None:
        self.db = db
        self.settings = settings
        self.quotas = quotas
        self.elements = elements

    async def _locked(self, session: AsyncSession, job_id: int) -> Job | None:
        return await session.get(Job, job_id, with_for_update=True, populate_existing=True)

    async def _owned(self, session: AsyncSession, job_id: int, attempt: int) -> Job:
        job = await self._locked(session, job_id)
        if job is None or job.status != JobStatus.RUNNING or job.attempts != attempt:
            raise LostJob(f"job {job_id} attempt {attempt} no longer owns the row")
        return job

    async def start(self, job_id: int, dispatch: int, worker_id: str = "") -> Job | None:
        """Begin attempt ``dispatch + 1``; None when this dispatch is stale, finished or cancelled."""
        async with self.db.transaction() as session:
            job = await self._locked(session, job_id)
            if job is None or job.status != JobStatus.QUEUED or job.attempts != dispatch:
                return None
            if job.cancel_requested:
                await end_job(session, self.quotas, self.elements, job, JobStatus.CANCELLED)
                return None
            job.status = JobStatus.RUNNING.value
            job.attempts = dispatch + 1
            now = utcnow()
            job.started_at = job.started_at or now
            job.heartbeat_at = now
            job.progress = {"phase": "starting", "attempt_started_at": now.isoformat(), "worker": worker_id}
            if job.kind == JobKind.TRAIN:
                await add_notification(session, user_id=job.owner_id, job_id=job.id, kind="training_started",
                                       dedupe_key=f"job:{job.id}:started", payload=note_base(job))
            return job

    async def beat(self, job_id: int, attempt: int, progress: dict[str, Any] | None = None, *,
                   milestone: dict[str, Any] | None = None) -> bool:
        """Heartbeat (+ progress, + a milestone notification); returns whether a cancel was requested."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        async with self.db.transaction() as session:
            if progress is not None or milestone is not None:
                job = await self._owned(session, job_id, attempt)
                if progress is not None:
                    keep = {k: v for k, v in (job.progress or {}).items()
                            if k in ("attempt_started_at", "worker", "samples")}
                    job.progress = {**keep, **progress}
                job.heartbeat_at = values["heartbeat_at"]
                if milestone is not None:
                    await add_notification(
                        session, user_id=job.owner_id, job_id=job.id, kind="training_progress",
                        dedupe_key=f"job:{job.id}:epoch:{milestone['epoch']}",
                        payload={**note_base(job), "progress": dict(job.progress), **milestone})
                return bool(job.cancel_requested)
            row = (await session.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.attempts == attempt)
                .values(**values).returning(Job.cancel_requested)
            )).first()
            if row is None:
                raise LostJob(f"job {job_id} attempt {attempt} no longer owns the row")
            return bool(row[0])

    async def succeed_training(self, job_id: int, attempt: int, *, weights_blob: str, kohya_blob: str | None,
                               metadata_blob: str | None, artifacts: dict[str, Any], recommended_strength: float,
                               summary: dict[str, Any], strength_range: tuple[float, float] | None = None) -> None:
        """Element READY with its files + job succeeded + "training_finished", in one transaction."""
        async with self.db.transaction() as session:
            await self.db.hold_blob_references(session)
            job = await self._owned(session, job_id, attempt)
            if job.element_id is not None:
                await self.elements.finish(session, job.element_id, weights_blob=weights_blob,
                                           kohya_blob=kohya_blob, metadata_blob=metadata_blob,
                                           artifacts=artifacts, recommended_strength=recommended_strength,
                                           strength_range=strength_range)
            note = {"weights": weights_blob, "kohya": kohya_blob, "metadata": metadata_blob,
                    "samples": artifacts.get("samples_final", []), "loss_curve": artifacts.get("loss_curve"),
                    "grid": artifacts.get("grid"), "recommended_strength": recommended_strength,
                    "strength_range": list(strength_range) if strength_range else None, **summary}
            await end_job(session, self.quotas, self.elements, job, JobStatus.SUCCEEDED,
                          result={"artifacts": artifacts, **summary}, note=note)

    async def succeed_generation(self, job_id: int, attempt: int, *, images: list[str], seed: int,
                                 seeds: list[int], prompt: str, warnings: list[str], width: int, height: int
                                 ) -> int:
        """Generation row + usage counts + job succeeded + "generation_finished"; returns the generation id."""
        async with self.db.transaction() as session:
            await self.db.hold_blob_references(session)
            job = await self._owned(session, job_id, attempt)
            p = job.payload
            records = [{k: e.get(k) for k in ("element_id", "name", "owner", "strength")} for e in p["elements"]]
            params = {k: p.get(k) for k in ("steps", "guidance", "count", "hires", "aspect")}
            params.update(width=width, height=height, used_prompt=prompt)
            if p.get("parent_generation_id"):
                params["parent_generation_id"] = p["parent_generation_id"]
            gen = Generation(owner_id=job.owner_id, job_id=job.id, base_model=p["base_model"], prompt=p["prompt"],
                             negative_prompt=p.get("negative_prompt", ""), elements=records, params=params,
                             seed=seed, images=list(images), warnings=[*p.get("warnings", []), *warnings])
            session.add(gen)
            await session.flush()
            await self.elements.record_usage(session, [e["element_id"] for e in p["elements"]],
                                             exclude_owner_id=job.owner_id)
            result = {"generation_id": gen.id, "images": list(images), "seed": seed, "seeds": list(seeds),
                      "prompt": prompt, "warnings": gen.warnings, "width": width, "height": height}
            await end_job(session, self.quotas, self.elements, job, JobStatus.SUCCEEDED, result=result,
                          note=result)
            return gen.id

    async def fail(self, job_id: int, attempt: int, *, code: str, reason: str, hint: str = "",
                   retryable: bool = False) -> FailOutcome:
        """End the attempt after an error: "retrying" when ``retryable`` and attempts remain, else "failed"."""
        async with self.db.transaction() as session:
            job = await self._owned(session, job_id, attempt)
            return await self._retry_or_fail(session, job, code=code, reason=reason, hint=hint,
                                             retryable=retryable)

    async def _retry_or_fail(self, session: AsyncSession, job: Job, *, code: str, reason: str, hint: str = "",
                             retryable: bool) -> FailOutcome:
        if retryable and job.attempts < job.max_attempts and not job.cancel_requested:
            job.status = JobStatus.QUEUED.value
            job.heartbeat_at = None
            job.progress = {**(job.progress or {}), "phase": "retrying"}
            kind = "training_retrying" if job.kind == JobKind.TRAIN else "generation_retrying"
            await add_notification(session, user_id=job.owner_id, job_id=job.id, kind=kind,
                                   dedupe_key=f"job:{job.id}:retry:{job.attempts}",
                                   payload={**note_base(job), "attempt": job.attempts + 1, "reason": reason})
            return "retrying"
        if job.cancel_requested:
            await end_job(session, self.quotas, self.elements, job, JobStatus.CANCELLED)
            return "cancelled"
        if retryable:  # attempts exhausted
            reason = f"{reason} (gave up after {job.attempts} attempts)"
            hint = hint or "This looks like a problem on our side, not with your images: try again later."
        await end_job(session, self.quotas, self.elements, job, JobStatus.FAILED, code=code, reason=reason,
                      hint=hint)
        return "failed"

    async def cancelled(self, job_id: int, attempt: int) -> None:
        async with self.db.transaction() as session:
            job = await self._owned(session, job_id, attempt)
            await end_job(session, self.quotas, self.elements, job, JobStatus.CANCELLED)

    async def release(self, job_id: int, attempt: int) -> bool:
        """Give an interrupted attempt back (the worker is shutting down): queued again, attempt not counted."""
        async with self.db.transaction() as session:
            try:
                job = await self._owned(session, job_id, attempt)
            except LostJob:
                return False
            job.status = JobStatus.QUEUED.value
            job.attempts = attempt - 1
            job.heartbeat_at = None
            job.progress = {**(job.progress or {}), "phase": "requeued"}
            return True

    # ---- reconciler ------------------------------------------------------------------------------------------

    async def stale_running(self, older_than: datetime) -> list[tuple[int, int]]:
        async with self.db.read() as session:
            rows = (await session.execute(
                select(Job.id, Job.attempts).where(Job.status == JobStatus.RUNNING.value,
                                                   Job.heartbeat_at < older_than)
            )).all()
        return [(r[0], r[1]) for r in rows]

    async def recover_stale(self, job_id: int, attempt: int, older_than: datetime) -> Job | None:
        """A running attempt whose worker went silent: re-queue it ("retrying") or fail it when exhausted.

        Returns the re-queued job (to enqueue), else None.
        """
        async with self.db.transaction() as session:
            job = await self._locked(session, job_id)
            if (job is None or job.status != JobStatus.RUNNING or job.attempts != attempt
                    or job.heartbeat_at is None or job.heartbeat_at >= older_than):
                return None
            what = "training" if job.kind == JobKind.TRAIN else "generation"
            outcome = await self._retry_or_fail(
                session, job, code="crashed", retryable=True,
                reason=f"the worker running this {what} stopped responding (crash or restart)")
            return job if outcome == "retrying" else None

    async def queued(self) -> list[Job]:
        async with self.db.read() as session:
            return list((await session.execute(
                select(Job).where(Job.status == JobStatus.QUEUED.value).order_by(Job.id)
            )).scalars())

    async def fail_exhausted(self, job_id: int) -> bool:
        """A queued row with no attempts left (should not happen, but never leave it hanging)."""
        async with self.db.transaction() as session:
            job = await self._locked(session, job_id)
            if job is None or job.status != JobStatus.QUEUED or job.attempts < job.max_attempts:
                return False
            await end_job(session, self.quotas, self.elements, job, JobStatus.FAILED, code="exhausted",
                          reason=f"gave up after {job.attempts} attempts",
                          hint="This looks like a problem on our side: try again later.")
            return True
