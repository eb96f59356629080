"""The generation job body: runs in the worker process on its resident ``Generator`` (in a thread), with the
GPU taken from any training subprocess through the fair-share policy (worker.fairshare)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, cast

from storage.db.models import Job
from storage.errors import AtelierError
from storage.queue.job_transitions import LostJob
from trainer.api import BaseModelRef, GenerationRequest, GenerationStopped, LoraRef
from trainer.vocabulary import FamilyName
from worker.app import WorkerApp
from worker.outcomes import Outcome

log = logging.getLogger(__name__)
LORA_FILES_KEPT = 64  # weight files kept in the work dir for the engine (least recently used go first)


async def execute_generation(app: WorkerApp, job_id: int, dispatch: int) -> Outcome:
    job = await app.transitions.start(job_id, dispatch, app.options.worker_id)
    if job is None:
        return "skipped"
    attempt = job.attempts
    cancel = asyncio.Event()
    beats = asyncio.create_task(_heartbeat(app, job_id, attempt, cancel))
    try:
        outcome = await _generate(app, job, attempt, cancel)
    except LostJob:
        outcome = "lost"
    except asyncio.CancelledError:
        await asyncio.shield(_release(app, job_id, attempt))
        raise
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError, LostJob):
            await beats
    if outcome == "retrying":
        await app.enqueue(job)
    await app.publish(job_id, {"status": outcome})
    return outcome


async def _release(app: WorkerApp, job_id: int, attempt: int) -> None:
    with contextlib.suppress(Exception):
        await app.transitions.release(job_id, attempt)


async def _heartbeat(app: WorkerApp, job_id: int, attempt: int, cancel: asyncio.Event) -> None:
    every = app.options.heartbeat(app.settings)
    while True:
        await asyncio.sleep(every)
        try:
            if await app.transitions.beat(job_id, attempt):
                cancel.set()
        except LostJob:
            cancel.set()
            return
        except Exception as exc:  # noqa: BLE001 — keep generating; the next beat may work
            log.warning("heartbeat of job %s failed: %s", job_id, exc)


async def _generate(app: WorkerApp, job: Job, attempt: int, cancel: asyncio.Event) -> Outcome:
    t, p = app.transitions, job.payload
    spec = app.settings.base_models.get(p["base_model"])
    if gone := await app.services.elements.deleted_of([e["element_id"] for e in p["elements"]]):
        names = ", ".join(f"“{e['name']}”" for e in p["elements"] if e["element_id"] in gone)
        return await t.fail(job.id, attempt, code="element_deleted",
                            reason=f"that Element was deleted ({names}) after this generation was queued",
                            hint="Generate again without it, or pick another one (/element browse).")
    try:
        if spec is None:
            raise ValueError(f"the base model “{p['base_model']}” is not configured on this worker")
        loras = [LoraRef(key=e["key"], path=await lora_file(app, e["weights_blob"]),
                         trigger=e.get("trigger", ""), strength=float(e["strength"])) for e in p["elements"]]
    except (ValueError, AtelierError) as exc:
        return await t.fail(job.id, attempt, code="invalid", reason=_sentence(exc),
                            hint="Check the Elements and options, then try again.")
    family = cast(FamilyName, spec.family.value)  # storage.settings.Family is built from FamilyName's values
    base = BaseModelRef(name=p["base_model"], family=family, source=spec.source, arch=spec.arch)
    request = GenerationRequest(prompt=p["prompt"], loras=loras, negative_prompt=p.get("negative_prompt", ""),
                                seed=p.get("seed"), steps=p.get("steps"), guidance=p.get("guidance"),
                                width=p.get("width"), height=p.get("height"), count=int(p.get("count", 1)),
                                hires=bool(p.get("hires")))
    await app.publish(job.id, {"progress": {"phase": "generating", "fraction": 0.0}})
    limit = app.settings.generate_timeout_seconds
    timed_out = threading.Event()

    def should_stop() -> bool:  # polled by the engine thread after every denoising step
        return timed_out.is_set() or cancel.is_set()

    try:
        generator = await asyncio.to_thread(app.generator)
        # Plan into the GPU memory the running trainings leave; nothing fits → wait for them (worker.fairshare).
        plan = await app.fairshare.plan_generation(generator, base, request, on_wait=lambda: app.publish(
            job.id, {"progress": {"phase": "waiting for the GPU", "fraction": 0.0}}))
        async with app.fairshare.gpu_for_generation():
            run = asyncio.ensure_future(asyncio.to_thread(generator.generate, base, request, should_stop,
                                                          mode=plan.mode))
            try:
                result = await asyncio.wait_for(asyncio.shield(run), limit)
            except TimeoutError:
                # Stop the engine at its next step and wait for it: the GPU (and the fair-share hold) must be
                # free before the next job, and nobody else may drive the resident pipeline meanwhile.
                timed_out.set()
                with contextlib.suppress(GenerationStopped):
                    await run
                raise
        images = await asyncio.to_thread(_png_all, result.images)
    except TimeoutError:
        return await t.fail(job.id, attempt, code="timeout", reason=f"generation took longer than {limit} s",
                            hint="Try fewer images, fewer steps or no hi-res pass.")
    except GenerationStopped:
        pass  # cancelled: handled below
    except ValueError as exc:  # the engine's refusals (LoraFileError included) are meant for people
        return await t.fail(job.id, attempt, code="invalid", reason=_sentence(exc),
                            hint="Change the request and try again.")
    except Exception as exc:  # noqa: BLE001 — unexpected: retried while attempts remain
        log.exception("generation job %s failed", job.id)
        return await t.fail(job.id, attempt, code="internal", reason=f"the generation failed ({type(exc).__name__})",
                            retryable=True)
    if cancel.is_set():
        with contextlib.suppress(LostJob):
            await t.cancelled(job.id, attempt)
        return "cancelled"
    hashes = [await app.services.blobs.put_bytes(data) for data in images]
    await t.succeed_generation(job.id, attempt, images=hashes, seed=result.seed, seeds=list(result.seeds),
                               prompt=result.prompt, warnings=list(result.warnings), width=result.width,
                               height=result.height)
    return "succeeded"


async def lora_file(app: WorkerApp, blob_hash: str) -> Path:
    """The Element's weights as ``<work dir>/loras/<hash>.safetensors`` (the engine only loads files with
    that suffix): a link to the blob for local stores, a verified cached copy for remote ones."""
    source = await app.services.blobs.open_local(blob_hash)
    target = app.options.resolved_work_dir(app.settings) / "loras" / f"{blob_hash}.safetensors"

    def link() -> Path:
        if target.exists():
            os.utime(target)  # most recently used: kept by the pruning below
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        _prune(target.parent, keep=LORA_FILES_KEPT - 1)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem: copy
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target

    return await asyncio.to_thread(link)


def _prune(folder: Path, keep: int) -> None:
    """Drop the least recently used weight files beyond ``keep`` (copies from a remote store take real space;
    the engine holds loaded adapters in memory, and a pruned file is simply fetched again when needed)."""
    def last_used(f: Path) -> float:
        try:
            return f.stat().st_mtime
        except FileNotFoundError:  # pruned by a sibling worker sharing the folder
            return 0.0

    for old in sorted(folder.glob("*.safetensors"), key=last_used, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def _png_all(images: list[Any]) -> list[bytes]:
    out = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _sentence(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text[:1].upper() + text[1:] if text else type(exc).__name__
