"""What people do with a finished generation: look at it, run it again (reroll, variations, hi-res, a strength
grid), put its images into a dataset (the bootstrap loop), delete it.

Every action re-checks through the generation use case (:meth:`storage.jobs.JobService.request_generation`), so an
Element that was unshared or deleted since is refused with the usual clear error. Generations are private to their
owner (and Atelier admins): anyone else gets "not found".

A **strength grid** is N one-image generation jobs with the same seed, one per strength, tagged in their
``origin["grid"]`` (``group``, ``index``, ``of``, ``strength``, ``parent``). A front end posts one composite once
the last of them finished (:meth:`GenerationService.grid_members`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from storage.actors import Actor
from storage.dataset_views import AddReport, IncomingFile
from storage.datasets import DatasetService
from storage.db.blob_gc import BlobCollector, tombstone
from storage.db.blobs import BlobStore
from storage.db.engine import Database
from storage.db.models import Generation, Job, JobKind
from storage.errors import InvalidInput, NotFound
from storage.job_views import JobInfo
from storage.jobs import JobService
from storage.names import clean_caption
from trainer.prompting import MAX_COUNT, check_strengths

GRID_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
GRID_SCAN = 300  # recent generation jobs of one owner searched for grid siblings


@dataclass(frozen=True)
class GenerationInfo:
    id: int
    owner_id: int
    job_id: int | None
    base_model: str
    prompt: str
    negative_prompt: str
    elements: list[dict[str, Any]]  # {"element_id", "name", "owner", "strength"}
    params: dict[str, Any]  # steps, guidance, count, hires, aspect, width, height, used_prompt
    seed: int | None
    seeds: list[int]
    images: list[str]
    warnings: list[str]
    created_at: datetime
    origin: dict[str, Any]
    requested_size: tuple[int | None, int | None] = (None, None)  # before any hi-res doubling
    credits: tuple[tuple[str, str], ...] = ()  # (Element name, creator) of others' Elements used

    @property
    def hires(self) -> bool:
        return bool(self.params.get("hires"))

    @property
    def count(self) -> int:
        return len(self.images)

    def seed_of(self, image: int) -> int | None:
        """Seed of image ``image`` (1-based)."""
        if 1 <= image <= len(self.seeds):
            return int(self.seeds[image - 1])
        return None if self.seed is None else int(self.seed) + image - 1


@dataclass(frozen=True)
class GridMember:
    job_id: int
    index: int
    of: int
    strength: float
    status: str
    images: list[str]
    error: str | None
    finished_at: datetime | None


def _info(gen: Generation, job: Job | None) -> GenerationInfo:
    seeds = list((job.result or {}).get("seeds") or []) if job is not None else []
    payload = dict(job.payload or {}) if job is not None else {}
    return GenerationInfo(
        id=gen.id, owner_id=gen.owner_id, job_id=gen.job_id, base_model=gen.base_model, prompt=gen.prompt,
        negative_prompt=gen.negative_prompt, elements=list(gen.elements or []), params=dict(gen.params or {}),
        seed=gen.seed, seeds=[int(s) for s in seeds], images=list(gen.images or []),
        warnings=list(gen.warnings or []), created_at=gen.created_at,
        origin=dict(job.origin or {}) if job is not None else {},
        requested_size=(payload.get("width"), payload.get("height")) if payload else
        (gen.params.get("width"), gen.params.get("height")),
        credits=tuple((str(e.get("name")), str(e.get("owner"))) for e in payload.get("elements", [])
                      if e.get("is_own") is False))


class GenerationService:
    """``jobs`` is the :class:`storage.jobs.JobService`, ``datasets`` the :class:`storage.datasets.DatasetService`."""

    def __init__(self, db: Database, blobs: BlobStore, jobs: JobService, datasets: DatasetService) -> None:
        self.db = db
        self.blobs = blobs
        self.jobs = jobs
        self.datasets = datasets
        self.collector = BlobCollector(db, blobs)

    # ---- reading ---------------------------------------------------------------------------------------------

    async def get(self, actor: Actor, generation_id: int | str) -> GenerationInfo:
        gid = _int_id(generation_id)
        async with self.db.read() as session:
            row = (await session.execute(
                select(Generation, Job).outerjoin(Job, Job.id == Generation.job_id).where(Generation.id == gid)
            )).first()
        if row is None or (row[0].owner_id != actor.user_id and not actor.is_admin):
            raise NotFound(f"No generation {generation_id} of yours.",
                           "Only the person who generated the images can use these buttons.")
        return _info(row[0], row[1])

    async def for_job(self, job_id: int) -> GenerationInfo | None:
        """The generation a finished job produced (for front ends delivering its notification)."""
        async with self.db.read() as session:
            row = (await session.execute(
                select(Generation, Job).join(Job, Job.id == Generation.job_id).where(Generation.job_id == job_id)
            )).first()
        return None if row is None else _info(row[0], row[1])

    # ---- running again ---------------------------------------------------------------------------------------

    async def reroll(self, actor: Actor, generation_id: int | str, *, origin: dict[str, Any]) -> JobInfo:
        """The same request with a new random seed."""
        gen = await self.get(actor, generation_id)
        return await self._again(actor, gen, origin=origin, seed=None, count=max(1, gen.count),
                                 hires=bool(gen.params.get("hires")))

    async def variations(self, actor: Actor, generation_id: int | str, *, origin: dict[str, Any]) -> JobInfo:
        """Four new images of the same request (new seeds)."""
        gen = await self.get(actor, generation_id)
        return await self._again(actor, gen, origin=origin, seed=None, count=MAX_COUNT,
                                 hires=bool(gen.params.get("hires")))

    async def hires(self, actor: Actor, generation_id: int | str, image: int, *, origin: dict[str, Any]
                    ) -> JobInfo:
        """Image ``image`` (1-based) again at twice the size, with the hi-res pass."""
        gen = await self.get(actor, generation_id)
        if gen.params.get("hires"):
            raise InvalidInput("These images already had the hi-res pass.", "Hi-res works on normal generations.")
        seed = gen.seed_of(image)
        if not 1 <= image <= gen.count or seed is None:
            raise InvalidInput(f"Generation {gen.id} has no image {image}.", f"Pick 1–{gen.count}.")
        return await self._again(actor, gen, origin=origin, seed=seed, count=1, hires=True)

    async def _again(self, actor: Actor, gen: GenerationInfo, *, origin: dict[str, Any], seed: int | None,
                     count: int, hires: bool = False, strengths: Sequence[float] | None = None) -> JobInfo:
        p = gen.params
        refs = [(f"#{e['element_id']}", float(e["strength"]) if strengths is None else float(strengths[i]))
                for i, e in enumerate(gen.elements)]
        return await self.jobs.request_generation(
            actor, prompt=gen.prompt, elements=refs, base_model=gen.base_model,
            negative_prompt=gen.negative_prompt, seed=seed, count=count, steps=p.get("steps"),
            guidance=p.get("guidance"), width=gen.requested_size[0], height=gen.requested_size[1], hires=hires,
            origin=origin, parent_generation_id=gen.id)

    async def strength_grid(self, actor: Actor, generation_id: int | str, *, origin: dict[str, Any],
                            strengths: Sequence[float] = GRID_STRENGTHS) -> list[JobInfo]:
        """One image per strength (every Element at that strength), same seed; see the module docstring."""
        gen = await self.get(actor, generation_id)
        if not gen.elements:
            raise InvalidInput("This generation used no Elements, so there is no strength to vary.",
                               "Generate with an Element first (the element1 option of /generate).")
        values = [float(s) for s in strengths]
        if not 2 <= len(values) <= 8:
            raise InvalidInput("A strength grid needs 2–8 strengths.")
        names = [str(e.get("name")) for e in gen.elements]
        for s in values:
            try:
                check_strengths([s] * len(names), names)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
        group = secrets.token_hex(4)

        def tagged(i: int) -> dict[str, Any]:
            return {**origin, "grid": {"group": group, "index": i, "of": len(values), "strength": values[i],
                                       "parent": gen.id}}

        # The whole grid must fit the member's cap on queued generations before any of it is queued.
        async with self.db.transaction() as session:
            await self.jobs.quotas.lock_member(session, actor)
            await self.jobs.check_generation_room(session, actor, len(values))
        # The first request runs every check (visibility, lineage, cooldown); the rest copy its payload with
        # another strength, in one transaction, so a cooldown cannot refuse half a grid.
        first = await self._again(actor, gen, origin=tagged(0), seed=gen.seed_of(1), count=1,
                                  strengths=[values[0]] * len(names))
        rest = await self.jobs.request_at_strengths(actor, first.id,
                                                    [(values[i], tagged(i)) for i in range(1, len(values))])
        return [first, *rest]

    async def grid_members(self, owner_id: int, group: str) -> list[GridMember]:
        """The jobs of one strength grid, by index (only those found among the owner's recent jobs)."""
        async with self.db.read() as session:
            jobs = (await session.execute(
                select(Job).where(Job.owner_id == owner_id, Job.kind == JobKind.GENERATE.value)
                .order_by(Job.id.desc()).limit(GRID_SCAN)
            )).scalars().all()
        out = []
        for job in jobs:
            grid = (job.origin or {}).get("grid") or {}
            if grid.get("group") == group:
                out.append(GridMember(job.id, int(grid.get("index", 0)), int(grid.get("of", 0)),
                                      float(grid.get("strength", 0.0)), job.status,
                                      list((job.result or {}).get("images") or []), job.error, job.finished_at))
        return sorted(out, key=lambda m: m.index)

    # ---- keeping and deleting --------------------------------------------------------------------------------

    async def add_to_dataset(self, actor: Actor, generation_id: int | str, dataset: str,
                             images: Sequence[int] | None = None) -> AddReport:
        """Add images (1-based; all when None) to one of the actor's datasets, captioned with the prompt."""
        gen = await self.get(actor, generation_id)
        wanted = sorted(set(images)) if images else list(range(1, gen.count + 1))
        bad = [i for i in wanted if not 1 <= i <= gen.count]
        if bad:
            raise InvalidInput(f"Generation {gen.id} has no image {bad[0]}.", f"Pick 1–{gen.count}.")
        files = [IncomingFile(f"generation-{gen.id}-{i}.png", await self.blobs.get_bytes(gen.images[i - 1]),
                              clean_caption(gen.prompt)) for i in wanted]
        return await self.datasets.add_images(actor, dataset, files, source="generated")

    async def delete(self, actor: Actor, generation_id: int | str) -> GenerationInfo:
        """Delete the generation row (then its image files, unless something else uses them)."""
        info = await self.get(actor, generation_id)
        async with self.db.transaction() as session:
            await tombstone(self.db, session, info.images)
            await session.execute(delete(Generation).where(Generation.id == info.id))
        await self.collector.collect()
        return info


def _int_id(value: int | str) -> int:
    try:
        return int(str(value).lstrip("#"))
    except ValueError:
        raise NotFound(f"No generation {value!r}.") from None
