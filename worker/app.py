"""The arq worker process: one arq ``Worker`` per queue (train, generate) plus a control queue for the
reconciler and storage-sweep crons, sharing one event loop, one Redis pool and one :class:`WorkerApp` (services,
generator, fair-share state). Everything is built at start-up and passed in through arq's ``ctx``.

Why a control queue: arq runs cron jobs on the queue of the worker that schedules them, and counts them against
``max_jobs``; a training worker runs one job for hours, so its cron would never get a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arq import cron
from arq.connections import ArqRedis
from arq.worker import Worker, func

from storage.db.blob_gc import BlobCollector
from storage.db.models import Job
from storage.queue.arq_jobs import FUNCTIONS, QUEUES, Enqueuer, deserialize, serialize
from storage.queue.arq_jobs import connect as connect_redis
from storage.queue.dispatch import enqueue_committed
from storage.queue.job_transitions import JobTransitions
from storage.services import Services
from storage.settings import Settings
from trainer.memory.planner import budget_gb
from worker.fairshare import FairShare
from worker.outcomes import Outcome
from worker.settings import WorkerOptions
from worker.stack_versions import stack_report

if TYPE_CHECKING:
    from trainer.generate import Generator  # imports torch: built on first use only

log = logging.getLogger(__name__)
CONTROL_QUEUE = "atelier:control"


@dataclass
class WorkerApp:
    """What job functions need, built once per worker process."""

    services: Services
    options: WorkerOptions
    enqueuer: Enqueuer | None = None
    fairshare: FairShare = field(default_factory=FairShare)
    transitions: JobTransitions = field(init=False)
    _generator: Generator | None = None

    def __post_init__(self) -> None:
        s = self.services
        self.transitions = JobTransitions(s.db, s.settings, s.quotas, s.elements)
        self.fairshare.max_wait = self.options.fair_share_max_wait
        self.fairshare.enabled = self.options.fair_share
        if self.options.fair_share_mode == "step" or not hasattr(signal, "SIGSTOP"):
            self.fairshare.mode = "step"
        self.fairshare.budget_gb = budget_gb(self.settings.gpu_memory_gb)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def generator(self) -> Generator:
        """The resident generation engine (built on first use: train-only workers never import torch here)."""
        if self._generator is None:
            from trainer.generate import Generator

            self._generator = Generator(self.settings.resolved_models_dir, max_pipelines=self.options.max_pipelines,
                                        max_adapters=self.options.max_adapters)
        return self._generator

    async def publish(self, job_id: int, message: dict[str, Any]) -> None:
        if self.enqueuer is None:
            return
        try:
            await self.enqueuer.publish(job_id, message)
        except Exception as exc:  # noqa: BLE001 — live progress is best effort; the row is the truth
            log.debug("publish for job %s failed: %s", job_id, exc)

    async def enqueue(self, job: Job) -> None:
        await enqueue_committed(self.enqueuer, job)

    async def release_generation_pipelines(self) -> None:
        """Free the GPU memory resident generation pipelines hold (waits for a generation in progress)."""
        if self._generator is not None:
            await asyncio.to_thread(self._generator.close)

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()


# The job modules import WorkerApp from here; importing them when a job runs keeps that one-way at import time.
async def run_train_job(ctx: dict[str, Any], job_id: int, dispatch: int) -> Outcome:
    from worker.train_job import execute_training

    return await execute_training(ctx["app"], int(job_id), int(dispatch))


async def run_generate_job(ctx: dict[str, Any], job_id: int, dispatch: int) -> Outcome:
    from worker.generate_job import execute_generation

    return await execute_generation(ctx["app"], int(job_id), int(dispatch))


async def reconcile(ctx: dict[str, Any]) -> dict[str, int]:
    from worker.reconciler import Reconciler

    return await Reconciler(ctx["app"]).run_once()


async def sweep_storage(ctx: dict[str, Any]) -> dict[str, int]:
    """Delete unreferenced blobs and stale temp files (see :meth:`storage.db.blob_gc.BlobCollector.sweep`)."""
    app = ctx["app"]
    s = app.services
    report = await BlobCollector(s.db, s.blobs).sweep(grace_seconds=s.settings.sweep_grace_seconds,
                                                      temp_dirs=[s.settings.temp_dir])
    return {"blobs_deleted": report.blobs_deleted, "temp_files_deleted": report.temp_files_deleted}


def sweep_schedule(minutes: int) -> dict[str, Any]:
    """arq cron fields for "every ``minutes`` minutes" (whole hours above 59)."""
    if minutes < 60:
        return {"minute": set(range(0, 60, minutes)), "second": 0}
    return {"hour": set(range(0, 24, max(1, minutes // 60))), "minute": 0, "second": 0}


def worker_settings(app: WorkerApp, queue: str, redis: ArqRedis) -> dict[str, Any]:
    """arq ``Worker`` keyword arguments for ``queue`` ("train", "generate" or "control")."""
    settings, opts = app.settings, app.options
    common: dict[str, Any] = dict(
        redis_pool=redis, job_serializer=serialize, job_deserializer=deserialize, poll_delay=opts.poll_delay,
        keep_result=0, handle_signals=False, ctx={"app": app}, health_check_interval=30,
        max_tries=1_000_000,  # attempts are counted on the job row (reconciler), not by arq
    )
    if queue == "control":
        every = opts.reconcile_seconds
        return dict(common, queue_name=CONTROL_QUEUE, max_jobs=2, functions=[], cron_jobs=[
            cron(reconcile, name="atelier-reconcile", second=set(range(0, 60, every)), run_at_startup=True,
                 unique=True, timeout=300, keep_result=0),
            cron(sweep_storage, name="atelier-sweep", unique=True, timeout=3600, keep_result=0,
                 **sweep_schedule(settings.sweep_interval_minutes))])
    if queue == "train":
        fn = func(run_train_job, name=FUNCTIONS["train"], timeout=settings.train_timeout_seconds + 300)
    else:
        fn = func(run_generate_job, name=FUNCTIONS["generate"], timeout=settings.generate_timeout_seconds + 120)
    # One job at a time per queue: a worker owns one GPU; more capacity = more workers.
    return dict(common, queue_name=QUEUES[queue], max_jobs=1, functions=[fn])


async def run_worker(services: Services, redis_url: str, options: WorkerOptions, *,
                     stop: asyncio.Event | None = None, install_signal_handlers: bool = True,
                     on_ready: Callable[[WorkerApp], None] | None = None) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM; then stop taking jobs and hand running ones back.

    ``on_ready`` receives the :class:`WorkerApp` once built (benchmarks inspect its fair-share state).
    """
    stop = stop or asyncio.Event()
    stack_ok, stack = stack_report()
    (log.info if stack_ok else log.warning)("ML stack: %s", stack)
    redis = await connect_redis(redis_url)
    app = WorkerApp(services, options, enqueuer=Enqueuer(redis))
    if on_ready is not None:
        on_ready(app)
    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    workers = [Worker(**worker_settings(app, q, redis)) for q in (*options.queues, "control")]
    mains = [asyncio.create_task(w.main(), name=f"arq-{w.queue_name}") for w in workers]
    stopper = asyncio.create_task(stop.wait())
    log.info("worker %s listening on %s", options.worker_id, ", ".join(w.queue_name for w in workers))
    try:
        done, _ = await asyncio.wait([*mains, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        await _shutdown(workers, mains, stopper)
        app.close()
        with contextlib.suppress(Exception):
            await redis.aclose(close_connection_pool=True)
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)


async def _shutdown(workers: list[Worker], mains: list[asyncio.Task[Any]], stopper: asyncio.Task[Any]) -> None:
    """Stop polling, cancel running jobs (their bodies release the attempt), wait for their cleanup."""
    stopper.cancel()
    for w in workers:
        w.allow_pick_jobs = False
    for t in mains:
        t.cancel()
    running = [t for w in workers for t in w.tasks.values() if not t.done()]
    for t in running:
        t.cancel()
    await asyncio.gather(*mains, *running, return_exceptions=True)
    for w in workers:  # no longer serving: `atelier train --queue` must not think we are
        with contextlib.suppress(Exception):
            await w.pool.delete(w.health_check_key)
