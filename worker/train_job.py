"""The training job body: job id → training subprocess → Element, with progress, cancel, timeout, resume.

Idempotent: ``transitions.start`` only lets the current dispatch of a queued row through, so a duplicate or
stale arq delivery returns at once, and the Element is written once (in the success transition).
The same body serves the worker and ``atelier train`` without ``--queue`` (``on_event`` drives its progress bar).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storage.db.models import Job
from storage.errors import AtelierError, InvalidInput
from storage.queue.job_transitions import LostJob
from trainer.config import TrainingConfig
from trainer.memory.planner import RESERVE_GB, PlanError, TrainShape, arch_for, plan_training
from worker.app import WorkerApp
from worker.checkpoint_mirror import CheckpointMirror
from worker.child_protocol import CANCEL_FILE, EXIT_CANCELLED, EXIT_INVALID, EXIT_OK, PAUSE_FILE, PAUSED_FILE
from worker.fairshare import TrainingChild
from worker.outcomes import Outcome, StopReason
from worker.progress import Throttle, epoch_finished, shape

log = logging.getLogger(__name__)
EventFn = Callable[[str, dict[str, Any]], None]


def job_dir(app: WorkerApp, job_id: int) -> Path:
    return app.options.resolved_work_dir(app.settings) / "jobs" / str(job_id)


async def execute_training(app: WorkerApp, job_id: int, dispatch: int, *, on_event: EventFn | None = None
                           ) -> Outcome:
    """Run dispatch ``dispatch`` of training job ``job_id``; returns the outcome (skipped, succeeded, failed,
    cancelled, retrying, lost)."""
    job = await app.transitions.start(job_id, dispatch, app.options.worker_id)
    if job is None:
        return "skipped"
    run = TrainingRun(app, job, on_event)
    try:
        return await run.run()
    except asyncio.CancelledError:
        # The worker is shutting down: stop the child (it resumes from its checkpoint) and give the attempt back.
        await asyncio.shield(run.interrupt())
        raise


class TrainingRun:
    def __init__(self, app: WorkerApp, job: Job, on_event: EventFn | None) -> None:
        self.app = app
        self.job = job
        self.attempt = job.attempts
        self.on_event = on_event or (lambda kind, data: None)
        self.dir = job_dir(app, job.id)
        self.control = self.dir / "control"
        self.proc: asyncio.subprocess.Process | None = None
        self.child: TrainingChild | None = None  # its fair-share record
        self.progress: dict[str, Any] = {}
        self.last_training: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.stopping: StopReason | None = None  # set once we decided to stop the child
        self.throttle = Throttle(app.options.progress_interval)
        self.publish_throttle = Throttle(app.options.publish_interval)  # live followers: same rule, faster
        self.started = time.monotonic()

    # ---- orchestration ---------------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        t = self.app.transitions
        try:
            spec_path = await self._prepare()
        except AtelierError as exc:  # an image gone from the blob store, a base model no longer configured
            await t.fail(self.job.id, self.attempt, code="missing_input", reason=str(exc.message),
                         hint=exc.hint or "An image of this dataset is gone from storage; re-add it and train again.")
            await self._cleanup()
            return "failed"
        except LostJob:
            return "lost"
        child = self.app.fairshare.register(self.job.id, self.control, gpu_gb=self._planned_gb())
        if self.app.fairshare.budget_gb is not None:
            await self.app.release_generation_pipelines()  # the training's plan assumed the GPU was empty
        try:
            rc = await self._supervise(spec_path, child)
        except OSError as exc:  # the training process could not be started (missing interpreter, no memory, …)
            self.error = {"code": "internal", "message": f"could not start the training process: {exc}"}
            rc = 1
        finally:
            self.app.fairshare.unregister(self.job.id)
        try:
            outcome = await self._conclude(rc)
        except LostJob:
            return "lost"
        if outcome != "retrying":
            await self._cleanup()
        await self.app.publish(self.job.id, {"status": outcome})
        self.on_event("end", {"outcome": outcome})
        return outcome

    async def _prepare(self) -> Path:
        p = self.job.payload
        spec = self.app.settings.base_models.get(p["base_model"])
        if spec is None:  # checked at request time; the configuration changed under a queued job
            raise InvalidInput(f"The base model “{p['base_model']}” is not configured on this worker.",
                               "Ask the admin to add it to ATELIER_BASE_MODELS, then train again.")
        self.control.mkdir(parents=True, exist_ok=True)
        for name in (CANCEL_FILE, PAUSE_FILE, PAUSED_FILE):
            (self.control / name).unlink(missing_ok=True)
        items = [{"image_path": str(await self.app.services.blobs.open_local(i["blob"])),
                  "caption": i.get("caption", ""), "group": i.get("group", "")} for i in p["manifest"]]
        spec_doc = {
            "job_id": self.job.id, "attempt": self.attempt,
            "base": {"name": p["base_model"], "family": spec.family.value, "source": spec.source,
                     "arch": spec.arch},
            "config": p["config"], "items": items, "out_dir": str(self.dir / "out"),
            "models_dir": str(self.app.settings.resolved_models_dir), "control_dir": str(self.control),
            "parent_pid": os.getpid(), "element_name": p.get("element_name", ""), "category": p.get("category", ""),
            "checkpoint_store": self._checkpoint_store(),
        }
        path = self.dir / "spec.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec_doc))
        tmp.replace(path)
        return path

    async def _supervise(self, spec_path: Path, child: TrainingChild) -> int:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # noqa: ASYNC240 — no I/O worth a thread
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.dir / "child.log", "ab") as log_fh:  # noqa: ASYNC230 — opening is instant
            self.proc = await asyncio.create_subprocess_exec(
                *self.app.options.child_argv, str(spec_path), stdout=asyncio.subprocess.PIPE, stderr=log_fh,
                stdin=asyncio.subprocess.DEVNULL, env=env, limit=1 << 22)
        child.pid = self.proc.pid
        self.child = child
        ticker = asyncio.create_task(self._tick())
        try:
            assert self.proc.stdout is not None
            async for raw in self.proc.stdout:
                await self._handle(raw, child)
            return await self.proc.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if self.proc.returncode is None:
                await self._terminate(grace=0)

    async def _tick(self) -> None:
        """Heartbeat + cancel flag + timeout, every heartbeat interval."""
        every = self.app.options.heartbeat(self.app.settings)
        limit = self.app.settings.train_timeout_seconds
        while True:
            await asyncio.sleep(every)
            if self.stopping == "lost":
                continue
            try:
                cancel = await self.app.transitions.beat(self.job.id, self.attempt)
            except LostJob:
                await self._stop("lost", grace=0)
                continue
            except Exception as exc:  # noqa: BLE001 — a DB hiccup must not kill the training
                log.warning("heartbeat of job %s failed: %s", self.job.id, exc)
                continue
            if self.stopping:
                # Still beating while the child winds down (it may be copying a checkpoint off the machine):
                # a silent row would be taken for a dead worker and ended by the reconciler under our feet.
                continue
            if cancel:
                await self._stop("cancel", grace=self.app.options.cancel_grace_seconds)
            elif self._elapsed() > limit:
                await self._stop("timeout", grace=0)

    def _elapsed(self) -> float:
        """Seconds this attempt has run, less the time generations held it (those are not its fault)."""
        held = self.child.held_total if self.child is not None else 0.0
        return time.monotonic() - self.started - held

    async def _stop(self, why: StopReason, grace: float) -> None:
        self.stopping = why
        (self.control / CANCEL_FILE).touch()
        asyncio.get_running_loop().create_task(self._terminate(grace))

    async def _terminate(self, grace: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self.child is not None:
            self.child.resume()  # a child held by the fair-share policy must run to see the cancel file
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
        if self.child is not None:
            self.child.resume()  # a generation may have paused it again meanwhile
        for sig_fn, wait in ((proc.terminate, 5.0), (proc.kill, 10.0)):
            if proc.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                sig_fn()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), wait)

    async def interrupt(self) -> None:
        self.stopping = self.stopping or "shutdown"
        await self._terminate(grace=0)
        with contextlib.suppress(Exception):
            await self.app.transitions.release(self.job.id, self.attempt)

    # ---- child events ----------------------------------------------------------------------------------------

    async def _handle(self, raw: bytes, child: TrainingChild) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        event = msg.pop("event", "")
        if event == "progress":
            await self._on_progress(msg, child)
        elif event == "result":
            self.result = msg
        elif event == "error":
            self.error = msg
        elif event == "cancelled":
            self.stopping = self.stopping or "cancel"

    async def _on_progress(self, ev: dict[str, Any], child: TrainingChild) -> None:
        p = shape(ev)
        child.stepped(int(ev.get("step") or 0), ev.get("phase") == "training")
        self.on_event("progress", p)
        if self.publish_throttle.due(p):
            await self.app.publish(self.job.id, {"progress": p})
        milestone = None
        samples = ev.get("sample_paths") or []
        if samples:
            # Sampling follows the epoch the training events last reported (the trainer's own "epoch" on
            # non-training events counts completed epochs, which is not updated yet at that point).
            hashes = [await self.app.services.blobs.put_file(s) for s in samples]
            p["samples"] = hashes
            epoch = (self.last_training or {}).get("epoch") or (p.get("epoch") or 0) + 1
            milestone = {"epoch": epoch, "samples": hashes}
        elif ev.get("phase") == "training" and (done := epoch_finished(self.last_training, p)) is not None:
            milestone = {"epoch": done, "samples": []}
        elif ev.get("phase") == "training" and self.last_training is None and (p.get("epoch") or 0) > 1:
            # First step of a resumed attempt: the epoch before it was completed (the outbox's dedupe key
            # makes this a no-op when the crashed attempt already reported it).
            milestone = {"epoch": p["epoch"] - 1, "samples": []}
        if ev.get("phase") == "training":
            self.last_training = p
        if ev.get("phase") == "training" or self.last_training is None:
            self.progress = p
        else:  # sampling/exporting/done: keep the step and epoch the training reported, change the phase
            self.progress = {**self.last_training, "phase": p["phase"], **({"samples": p["samples"]}
                                                                           if "samples" in p else {})}
        if milestone is None and not self.throttle.due(p):
            return
        try:
            cancel = await self.app.transitions.beat(self.job.id, self.attempt, self.progress, milestone=milestone)
        except LostJob:
            await self._stop("lost", grace=0)
            return
        if cancel and not self.stopping:
            await self._stop("cancel", grace=self.app.options.cancel_grace_seconds)

    # ---- outcome ---------------------------------------------------------------------------------------------

    def _planned_gb(self) -> float:
        """GPU memory this training occupies: its plan in this worker's budget, plus the planner's reserve (the
        request may have been planned elsewhere, or without a known budget). All of it when it fits nowhere."""
        budget = self.app.fairshare.budget_gb
        p = self.job.payload
        spec = self.app.settings.base_models.get(p["base_model"])
        if budget is None or spec is None:
            return 0.0
        config = TrainingConfig(**p["config"])
        arch = spec.arch or arch_for(p["base_model"], spec.family.value, spec.source)
        try:
            plan = plan_training(arch, TrainShape.of(config), budget, config.memory_mode)
        except PlanError:
            return budget
        return plan.peak_gb + RESERVE_GB if plan.arch else 0.0

    async def _conclude(self, rc: int) -> Outcome:
        t, jid, att = self.app.transitions, self.job.id, self.attempt
        if self.stopping == "lost":
            return "lost"
        if self.stopping == "timeout":
            limit = self.app.settings.train_timeout_seconds
            await t.fail(jid, att, code="timeout", reason=f"training took longer than the limit of {_span(limit)}",
                         hint="Train with fewer epochs, fewer images or a lower resolution, or ask the admin to "
                              "raise ATELIER_TRAIN_TIMEOUT_SECONDS.")
            return "failed"
        if self.stopping == "cancel" or rc == EXIT_CANCELLED:
            await t.cancelled(jid, att)
            return "cancelled"
        if rc == EXIT_OK and self.result is not None:
            try:
                await self._succeed()
                return "succeeded"
            except LostJob:
                raise
            except Exception as exc:  # noqa: BLE001 — e.g. the blob store was unreachable: retry (resumes)
                log.exception("job %s: storing the results failed", jid)
                self.error = {"code": "internal", "message": f"storing the results failed: {exc}"}
                rc = 1
        err = self.error or {}
        if rc == EXIT_INVALID:
            return await t.fail(jid, att, code=err.get("code", "invalid"), reason=err.get("message", "invalid"),
                                hint=err.get("hint", ""), retryable=False)
        reason = err.get("message") or (f"the training process was killed (signal {-rc})" if rc < 0
                                        else f"the training process exited with status {rc}")
        outcome = await t.fail(jid, att, code=err.get("code", "crashed"), reason=reason,
                               hint=err.get("hint", ""), retryable=True)
        if outcome == "retrying":
            await self.app.enqueue(self.job)  # dispatch = this attempt: a fresh arq id
        return outcome

    async def _succeed(self) -> None:
        r, blobs = self.result or {}, self.app.services.blobs

        async def put(path: str | None) -> str | None:
            return await blobs.put_file(path) if path and Path(path).is_file() else None  # noqa: ASYNC240

        samples = {e: [h for h in [await put(s) for s in paths] if h] for e, paths in r.get("samples", {}).items()}
        final = samples.get(str(r.get("epochs")), []) or (samples[max(samples, key=int)] if samples else [])
        artifacts = {"samples": samples, "samples_final": final, "loss_curve": await put(r.get("loss_curve_png")),
                     "grid": await put(r.get("grid_png"))}
        summary = {"epochs": r.get("epochs"), "steps": r.get("steps"), "final_loss": r.get("final_loss"),
                   "resumed_from_epoch": r.get("resumed_from_epoch", 0)}
        weights = await put(r.get("lora_diffusers"))
        if weights is None:
            raise RuntimeError("the trainer reported success but wrote no LoRA weights")
        await self.app.transitions.succeed_training(
            self.job.id, self.attempt, weights_blob=weights, kohya_blob=await put(r.get("lora_kohya")),
            metadata_blob=await put(r.get("element_json")), artifacts=artifacts,
            recommended_strength=float(r.get("recommended_strength") or 1.0), summary=summary,
            strength_range=tuple(r["strength_range"]) if r.get("strength_range") else None)

    def _checkpoint_store(self) -> dict[str, Any] | None:
        store = self.app.settings.checkpoint_store
        return {"url": store[0], "options": store[1]} if store else None

    async def _cleanup(self) -> None:
        """The job is over: its local folder and its mirrored checkpoints go."""
        shutil.rmtree(self.dir, ignore_errors=True)
        mirror = CheckpointMirror.for_job(self.app.settings.checkpoint_store, self.job.id)
        if mirror is not None:
            try:
                await asyncio.to_thread(mirror.delete)
            except Exception as exc:  # noqa: BLE001 — leftovers cost space, not correctness
                log.warning("job %s: could not delete its checkpoints at %s: %s", self.job.id, mirror.url, exc)


def _span(seconds: int) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds} s"
