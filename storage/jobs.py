"""Job use cases for front ends: request training / generation, list, show, cancel, retry, follow.

The row is the truth and is committed before anything is enqueued; a failed enqueue (Redis down) only delays
the job — the reconciler enqueues queued rows that Redis does not hold. Worker-side state changes live in
:mod:`storage.queue.job_transitions`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.actors import Actor
from storage.dataset_groups import training_groups
from storage.datasets import DatasetService
from storage.db.engine import Database
from storage.db.models import Dataset, Job, JobKind, JobStatus, utcnow
from storage.elements import ElementService
from storage.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from storage.guilds import GuildService
from storage.job_views import JobInfo
from storage.names import clean_text, normalize_trigger
from storage.queue.dispatch import enqueue_committed
from storage.queue.job_transitions import end_job, note_base
from storage.queue.outbox import add_notification
from storage.quotas import QuotaService
from storage.settings import Settings
from storage.training_rules import (
    build_config,
    check_estimate,
    check_image_count,
    known_base,
    parse_category,
    plan_memory,
    trainable_base,
)
from storage.wording import plural
from trainer.config import TrainingConfig
from trainer.memory.planner import MemoryPlan
from trainer.prompting import (
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_PROMPT,
    MAX_STEPS,
    check_strengths,
    resolve_size,
    size_class,
)

if TYPE_CHECKING:
    from storage.queue.arq_jobs import Enqueuer  # arq: only for the processes that talk to Redis

MAX_SEED = 2**63 - 1 - 4  # BigInteger column; the engine uses seed + i for a batch of up to 4


class JobService:
    """``datasets``/``elements``/``quotas`` are the storage services; ``enqueuer`` a :class:`storage.queue.arq_jobs.Enqueuer`
    (None: rows stay queued for an in-process run or for the reconciler)."""

    def __init__(self, db: Database, settings: Settings, *, quotas: QuotaService, elements: ElementService,
                 datasets: DatasetService, enqueuer: Enqueuer | None = None, guilds: GuildService | None = None
                 ) -> None:
        self.db = db
        self.guilds = guilds  # server rules (banned words, generation channels); None outside Discord setups
        self.settings = settings
        self.quotas = quotas
        self.elements = elements
        self.datasets = datasets
        self.enqueuer = enqueuer

    async def _server_rules(self, actor: Actor, origin: dict[str, Any] | None, *texts: str,
                            channel: bool = False) -> None:
        """A server's admin rules apply to every request made there, whichever front end or button made it."""
        guild = (origin or {}).get("guild_id") or actor.guild_id
        if self.guilds is None or not guild:
            return
        if channel:
            await self.guilds.check_channel(guild, (origin or {}).get("channel_id"))
        await self.guilds.check_text(guild, "\n".join(t for t in texts if t))

    # ---- training --------------------------------------------------------------------------------------------

    async def request_training(self, actor: Actor, *, dataset: str, name: str, category: str,
                               base_model: str, trigger: str, description: str = "",
                               overrides: dict[str, Any] | None = None, origin: dict[str, Any] | None = None
                               ) -> JobInfo:
        """Check everything, charge a slot, reserve the Element, freeze the manifest, queue the job."""
        spec = trainable_base(self.settings, base_model)
        cat = parse_category(category)
        trigger_display, _ = normalize_trigger(trigger)
        await self._server_rules(actor, origin, name, trigger, description)
        async with self.db.transaction() as session:
            dataset_id, dataset_name, groups = await self._dataset(session, actor, dataset)
            manifest = await self.datasets.manifest(session, dataset_id)
            check_image_count(self.settings, len(manifest), dataset_name, base_model, spec.family.value)
            config = build_config(cat, spec.family.value, len(manifest), trigger_display, overrides,
                                  training_groups(groups, manifest), tiny=spec.builtin)
            plan = plan_memory(self.settings, base_model, spec, config)
            job, position = await self._create_training(
                session, actor, dataset_id=dataset_id, dataset_name=dataset_name, manifest=manifest, name=name,
                category=cat, base_model=base_model, family=spec.family.value, trigger=trigger_display,
                description=description, config=config, overrides=overrides or {}, origin=origin, plan=plan)
        await self._enqueue(job)
        return JobInfo.of(job, queue_position=position)

    async def _dataset(self, session: AsyncSession, actor: Actor, name: str) -> tuple[int, str, dict[str, Any]]:
        ds = await self.datasets.load_owned(session, actor, name, for_update=True)
        return ds.id, ds.name, dict(ds.groups or {})

    async def _create_training(self, session: AsyncSession, actor: Actor, *, dataset_id: int | None,
                               dataset_name: str, manifest: list[dict[str, Any]], name: str, category: str,
                               base_model: str, family: str, trigger: str, description: str,
                               config: TrainingConfig, overrides: dict[str, Any], origin: dict[str, Any] | None,
                               plan: MemoryPlan | None = None) -> tuple[Job, int]:
        estimate = check_estimate(self.settings, family, config, len(manifest))  # before any slot is charged
        await self.quotas.lock_member(session, actor)  # the checks below and the charge see one state
        await self._check_active_trainings(session, actor)
        job = Job(kind=JobKind.TRAIN.value, owner_id=actor.user_id, status=JobStatus.QUEUED.value,
                  max_attempts=self.settings.max_attempts, origin=dict(origin or {}), payload={})
        session.add(job)
        await session.flush()
        await self.quotas.charge(session, actor, job.id)
        config_dict = config.model_dump(mode="json")
        element = await self.elements.reserve(
            session, actor, name=name, trigger=trigger, category=category, base_model=base_model,
            dataset_id=dataset_id, manifest=manifest, config=config_dict, description=description)
        job.element_id = element.id
        n = len(manifest)
        job.payload = {
            "dataset_id": dataset_id, "dataset_name": dataset_name, "element_name": element.name,
            "trigger": element.trigger_word, "category": category, "base_model": base_model, "family": family,
            "description": description, "image_count": n, "manifest": manifest, "config": config_dict,
            "overrides": overrides, "total_steps": config.total_steps(n), "epochs": config.epochs,
            "estimate_seconds": round(estimate),
            "memory": plan.as_dict() if plan is not None else None,
        }
        await session.flush()
        position = await self._position(session, job)
        await add_notification(session, user_id=actor.user_id, job_id=job.id, kind="training_queued",
                               dedupe_key=f"job:{job.id}:queued",
                               payload={**note_base(job), "position": position, "image_count": n,
                                        "total_steps": job.payload["total_steps"],
                                        "estimate_seconds": job.payload["estimate_seconds"]})
        return job, position

    async def _active(self, session: AsyncSession, actor: Actor, kind: JobKind) -> int:
        """The actor's queued + running jobs of ``kind``."""
        return int(await session.scalar(select(func.count(Job.id)).where(
            Job.owner_id == actor.user_id, Job.kind == kind.value,
            Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))) or 0)

    async def _check_active_trainings(self, session: AsyncSession, actor: Actor) -> None:
        limit = self.settings.max_active_trainings
        if not actor.is_admin and await self._active(session, actor, JobKind.TRAIN) >= limit:
            raise QuotaExceeded(
                f"You already have {'a training' if limit == 1 else f'{limit} trainings'} queued or running.",
                "Wait for it to finish (see /jobs), or cancel it first.")

    async def check_generation_room(self, session: AsyncSession, actor: Actor, adding: int = 1) -> None:
        """Raise :class:`QuotaExceeded` unless ``adding`` more generations fit the actor's queued cap."""
        limit = self.settings.max_queued_generations
        if actor.is_admin:
            return
        active = await self._active(session, actor, JobKind.GENERATE)
        if active + adding > limit:
            raise QuotaExceeded(
                f"You have {plural(active, 'generation')} waiting; at most {limit} can be queued "
                f"at once{f' (this asks for {adding})' if adding > 1 else ''}.",
                "Wait for some to finish (see /jobs).")

    async def _position(self, session: AsyncSession, job: Job) -> int:
        """1 + queued jobs of the same kind ahead of ``job``."""
        ahead = await session.scalar(select(func.count(Job.id)).where(
            Job.kind == job.kind, Job.status == JobStatus.QUEUED.value, Job.id < job.id))
        return int(ahead or 0) + 1

    # ---- generation ------------------------------------------------------------------------------------------

    async def request_generation(self, actor: Actor, *, prompt: str,
                                 elements: Sequence[tuple[str, float | None]] = (), base_model: str | None = None,
                                 negative_prompt: str = "", seed: int | None = None, count: int = 1,
                                 steps: int | None = None, guidance: float | None = None,
                                 aspect: str | None = None, hires: bool = False,
                                 width: int | None = None, height: int | None = None,
                                 origin: dict[str, Any] | None = None, parent_generation_id: int | None = None
                                 ) -> JobInfo:
        """Resolve the Elements the actor may use, check the request, queue it."""
        prompt = clean_text(prompt, max_len=MAX_PROMPT)
        negative_prompt = clean_text(negative_prompt, max_len=MAX_PROMPT)
        if not prompt and not elements:
            raise InvalidInput("The prompt is empty.", "Describe what to generate.")
        await self._server_rules(actor, origin, prompt, negative_prompt, channel=True)
        if not 1 <= count <= MAX_COUNT:
            raise InvalidInput(f"You can ask for 1–{MAX_COUNT} images at a time, not {count}.")
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise InvalidInput(f"Steps must be between 1 and {MAX_STEPS} (got {steps}).",
                               "Leave it out for the default.")
        if guidance is not None and not (0 <= guidance <= MAX_GUIDANCE and math.isfinite(guidance)):
            raise InvalidInput(f"Guidance must be between 0 and {MAX_GUIDANCE:g} (got {guidance}).",
                               "Leave it out for the default.")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise InvalidInput(f"The seed must be between 0 and {MAX_SEED}.", "Leave it out for a random seed.")
        base = base_model or await self._default_base(actor, elements)
        spec = known_base(self.settings, base)
        try:
            w, h, size_warnings = resolve_size(size_class(spec.family.value, spec.source), width=width,
                                               height=height, aspect=aspect)
        except ValueError as exc:
            raise InvalidInput(str(exc)[0].upper() + str(exc)[1:] + ".") from None
        async with self.db.transaction() as session:
            await self.quotas.lock_member(session, actor)  # concurrent requests of one member run one by one
            await self._cooldown(session, actor)
            await self.check_generation_room(session, actor)
            resolved = await self.elements.resolve_for_generation(session, actor, list(elements), base)
            warnings = [*self.elements.strength_warnings(resolved), *size_warnings]
            job = self._generation_row(actor, origin, {
                "prompt": prompt, "negative_prompt": negative_prompt, "base_model": base,
                "family": spec.family.value, "seed": seed, "count": count, "steps": steps,
                "guidance": guidance, "aspect": aspect, "width": w, "height": h, "hires": hires,
                "parent_generation_id": parent_generation_id, "warnings": warnings,
                "elements": [{**r.as_record(), "key": r.key, "trigger": r.trigger_word,
                              "weights_blob": r.weights_blob, "owner_id": r.owner_id,
                              "is_own": r.is_own} for r in resolved],
            })
            session.add(job)
            await session.flush()
            position = await self._position(session, job)
        await self._enqueue(job)
        return JobInfo.of(job, queue_position=position)

    async def request_at_strengths(self, actor: Actor, job_id: int,
                                   variants: Sequence[tuple[float, dict[str, Any]]]) -> list[JobInfo]:
        """One image each like the actor's generation job ``job_id``, with every Element at another strength
        (``(strength, origin)`` per copy), queued in one transaction that checks the queued cap for all of them —
        the rest of a strength grid once its first image passed :meth:`request_generation`'s checks."""
        created: list[Job] = []
        async with self.db.transaction() as session:
            await self.quotas.lock_member(session, actor)
            await self.check_generation_room(session, actor, len(variants))
            base = await self._visible(session, actor, job_id)
            elements = base.payload.get("elements", [])
            names = [f"“{e.get('name')}”" for e in elements]
            for strength, origin in variants:
                job = self._generation_row(actor, origin, {
                    **base.payload, "count": 1,
                    "elements": [{**e, "strength": strength} for e in elements],
                    "warnings": check_strengths([strength] * len(elements), names)})
                session.add(job)
                created.append(job)
            await session.flush()
        for job in created:
            await self._enqueue(job)
        return [JobInfo.of(j) for j in created]

    def _generation_row(self, actor: Actor, origin: dict[str, Any] | None, payload: dict[str, Any]) -> Job:
        return Job(kind=JobKind.GENERATE.value, owner_id=actor.user_id, status=JobStatus.QUEUED.value,
                   max_attempts=self.settings.max_attempts, origin=dict(origin or {}), payload=payload)

    async def _default_base(self, actor: Actor, refs: Sequence[tuple[str, float | None]]) -> str:
        """The Elements' base model when they all agree, else the configured default."""
        bases = {(await self.elements.get_for_generation(actor, ref)).base_model for ref, _ in refs}
        return bases.pop() if len(bases) == 1 else self.settings.default_base_model

    async def _cooldown(self, session: AsyncSession, actor: Actor) -> None:
        """One generation request per cooldown; the caller holds the member's row lock (see ``lock_member``)."""
        wait = float(self.settings.generation_cooldown_seconds)
        if wait <= 0 or actor.is_admin:
            return
        last = await session.scalar(select(func.max(Job.created_at)).where(
            Job.owner_id == actor.user_id, Job.kind == JobKind.GENERATE.value))
        if last is not None:
            left = (last + timedelta(seconds=wait) - utcnow()).total_seconds()
            if left > 0:
                raise QuotaExceeded(f"Slow down a little: one generation every {wait:g} s.",
                                    f"Try again in {math.ceil(left)} s.")

    # ---- reading ---------------------------------------------------------------------------------------------

    async def list(self, actor: Actor, *, active_only: bool = False, limit: int = 25) -> list[JobInfo]:
        """The actor's jobs, newest first (queued/running only with ``active_only``)."""
        async with self.db.read() as session:
            stmt = select(Job).where(Job.owner_id == actor.user_id)
            if active_only:
                stmt = stmt.where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
            jobs = list((await session.execute(
                stmt.order_by(Job.id.desc()).limit(max(1, min(limit, 100))))).scalars())
            return [JobInfo.of(j, queue_position=await self._position(session, j) if j.status == "queued" else None)
                    for j in jobs]

    async def get(self, actor: Actor, job_id: int) -> JobInfo:
        async with self.db.read() as session:
            job = await self._visible(session, actor, job_id)
            pos = await self._position(session, job) if job.status == JobStatus.QUEUED else None
            return JobInfo.of(job, queue_position=pos)

    async def _visible(self, session: AsyncSession, actor: Actor, job_id: int, *, lock: bool = False) -> Job:
        job = await session.get(Job, job_id, with_for_update=lock or None, populate_existing=lock)
        if job is None or (job.owner_id != actor.user_id and not actor.is_admin):
            raise NotFound(f"No job {job_id} of yours.", "See your jobs with /jobs (or `atelier jobs list`).")
        return job

    # ---- changing --------------------------------------------------------------------------------------------

    async def cancel(self, actor: Actor, job_id: int) -> JobInfo:
        """Queued: cancelled now (slot refunded). Running: the worker stops it within seconds (the slot is used)."""
        async with self.db.transaction() as session:
            job = await self._visible(session, actor, job_id, lock=True)
            if JobStatus(job.status).finished:
                raise Conflict(f"Job {job_id} has already {_past(job.status)}.", "Nothing to cancel.")
            if job.status == JobStatus.QUEUED:
                await end_job(session, self.quotas, self.elements, job, JobStatus.CANCELLED)
            else:
                job.cancel_requested = True
            return JobInfo.of(job)

    async def retry(self, actor: Actor, job_id: int) -> JobInfo:
        """Start a failed or cancelled job again as a new job with the same settings (and frozen images)."""
        async with self.db.transaction() as session:
            old = await self._visible(session, actor, job_id)
            if old.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise Conflict(f"Job {job_id} is {old.status}; only failed or cancelled jobs can be retried.")
            if old.owner_id != actor.user_id:
                raise NotFound(f"No job {job_id} of yours.")
            p = old.payload
        if old.kind == JobKind.GENERATE:
            return await self.request_generation(
                actor, prompt=p["prompt"], elements=[(f"#{e['element_id']}", e["strength"]) for e in p["elements"]],
                base_model=p["base_model"], negative_prompt=p.get("negative_prompt", ""), seed=p.get("seed"),
                count=p.get("count", 1), steps=p.get("steps"), guidance=p.get("guidance"), aspect=p.get("aspect"),
                width=p.get("width"), height=p.get("height"), hires=p.get("hires", False), origin=old.origin,
                parent_generation_id=p.get("parent_generation_id"))
        spec = trainable_base(self.settings, p["base_model"])
        async with self.db.transaction() as session:
            dataset_id = p.get("dataset_id")
            if dataset_id is not None and await session.get(Dataset, dataset_id) is None:
                dataset_id = None  # deleted since: the frozen manifest is all a retry needs
            job, position = await self._create_training(
                session, actor, dataset_id=dataset_id, dataset_name=p.get("dataset_name", ""),
                manifest=p["manifest"], name=p["element_name"], category=p["category"],
                base_model=p["base_model"], family=spec.family.value, trigger=p["trigger"],
                description=p.get("description", ""), config=TrainingConfig(**p["config"]),
                overrides=p.get("overrides", {}), origin=old.origin)
        await self._enqueue(job)
        return JobInfo.of(job, queue_position=position)

    async def _enqueue(self, job: Job) -> None:
        await enqueue_committed(self.enqueuer, job)

    # ---- following -------------------------------------------------------------------------------------------

    async def follow(self, actor: Actor, job_id: int, *, poll: float = 1.0) -> AsyncIterator[JobInfo]:
        """Yield the job as it changes until it finishes: live worker messages when Redis is there, with a
        database read at least every ``poll`` seconds (so nothing is missed if a message is)."""
        info = await self.get(actor, job_id)
        yield info
        if info.finished:
            return
        stream = self.enqueuer.subscribe(job_id) if self.enqueuer is not None else None
        last_read = asyncio.get_running_loop().time()
        try:
            while True:
                msg: dict[str, Any] = {}
                if stream is not None:
                    msg = await anext(stream)
                else:
                    await asyncio.sleep(poll)
                now = asyncio.get_running_loop().time()
                if msg.get("progress") and not msg.get("status"):
                    info = _with_progress(info, msg["progress"])
                    yield info
                if msg.get("status") or now - last_read >= poll or stream is None:
                    info, last_read = await self.get(actor, job_id), now
                    yield info
                    if info.finished:
                        return
        finally:
            if stream is not None:
                await stream.aclose()


def _with_progress(info: JobInfo, progress: dict[str, Any]) -> JobInfo:

    return replace(info, progress={**info.progress, **progress}, status=JobStatus.RUNNING.value)


def _past(status: str) -> str:
    return {"succeeded": "finished", "failed": "failed", "cancelled": "been cancelled"}.get(status, status)
