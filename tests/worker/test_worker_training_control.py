"""Real worker processes training tiny-sd15: cancel, fair share with generation, timeout, SIGKILL + resume."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from storage.db.models import Element, Job, Notification, QuotaCharge
from tests.worker.conftest import FAST_TRAIN, wait_for

pytestmark = pytest.mark.slow  # a real worker process trains, is cancelled, killed and resumed

LONG_TRAIN = {**FAST_TRAIN, "epochs": 40, "sample_every_n_epochs": 0}


async def _job(services: Any, job_id: int) -> Job:
    async with services.db.read() as s:
        return await s.get(Job, job_id)


async def _kinds(services: Any, job_id: int) -> Counter[str]:
    async with services.db.read() as s:
        return Counter((await s.execute(select(Notification.kind).where(Notification.job_id == job_id))).scalars())


async def _charges(services: Any, job_id: int) -> list[QuotaCharge]:
    async with services.db.read() as s:
        return list((await s.execute(select(QuotaCharge).where(QuotaCharge.job_id == job_id))).scalars())


async def _training_step(services: Any, job_id: int, at_least: int) -> bool:
    job = await _job(services, job_id)
    return job.status == "running" and job.progress.get("phase") == "training" and (
        job.progress.get("step") or 0) >= at_least


async def _request(services: Any, actor: Any, make_dataset: Any, overrides: dict[str, Any]) -> Any:
    await make_dataset(actor, "shapes", count=3)
    return await services.jobs.request_training(actor, dataset="shapes", name="Ink", category="style",
                                                base_model="tiny-sd15", trigger="zqxink", overrides=overrides)


async def test_generation_runs_during_training_then_cancel_stops_it(services, actor, make_dataset,
                                                                     worker_process, settings) -> None:
    info = await _request(services, actor, make_dataset, LONG_TRAIN)
    worker = worker_process("train,generate")
    await wait_for(lambda: _training_step(services, info.id, 2), 300, "training to be under way")

    # Fair share: a generation on the same worker does not wait for the training run to finish.
    gen = await services.jobs.request_generation(actor, prompt="a cat", seed=1)
    await wait_for(lambda: _status_in(services, gen.id, "succeeded", "failed"), 240, "the generation")
    assert (await _job(services, gen.id)).status == "succeeded", worker.output()
    assert (await _job(services, info.id)).status == "running", "the training was still going"

    await services.jobs.cancel(actor, info.id)
    await wait_for(lambda: _status_in(services, info.id, "cancelled"), 30, "the cancel to take effect")
    job = await _job(services, info.id)
    assert job.progress["step"] < job.payload["total_steps"]
    charges = await _charges(services, info.id)
    assert len(charges) == 1 and charges[0].refunded_at is None, "a cancel after the start uses the slot"
    kinds = await _kinds(services, info.id)
    assert kinds["training_cancelled"] == 1 and kinds["training_failed"] == 0 and kinds["training_finished"] == 0
    async with services.db.read() as s:
        assert (await s.get(Element, info.element_id)).status == "failed"
    # The folder goes right after the outcome is recorded; under load a moment later.
    await wait_for(lambda: not (settings.data_dir / "work" / "jobs" / str(info.id)).exists(), 30, "the job folder to go")
    assert "Traceback" not in worker.output()


async def test_timeout_fails_uses_the_slot_and_notifies_once(services, actor, make_dataset, worker_process,
                                                       settings) -> None:
    info = await _request(services, actor, make_dataset, LONG_TRAIN)
    settings.train_timeout_seconds = 6  # the worker's limit (after the request, whose estimate it would refuse)
    worker = worker_process("train")
    await wait_for(lambda: _status_in(services, info.id, "failed", "succeeded", "cancelled"), 300, "the timeout")
    job = await _job(services, info.id)
    assert job.status == "failed" and job.error_code == "timeout", (job.error, worker.output())
    assert "longer than the limit of 6 s" in job.error and "fewer epochs" in job.result["hint"]
    assert job.attempts == 1, "a timeout is not retried"
    charges = await _charges(services, info.id)
    assert len(charges) == 1 and charges[0].refunded_at is None, "a timeout uses the slot"
    kinds = await _kinds(services, info.id)
    assert kinds["training_failed"] == 1 and kinds["training_retrying"] == 0
    async with services.db.read() as s:
        failed = (await s.execute(select(Notification).where(Notification.kind == "training_failed"))).scalar_one()
    assert failed.payload["reason"] == job.error and failed.payload["hint"] and failed.payload["error_code"] == "timeout"


async def test_shutdown_and_sigkill_mid_training_resume_from_checkpoints(services, actor, make_dataset,
                                                                         worker_process, settings) -> None:
    info = await _request(services, actor, make_dataset, {**FAST_TRAIN, "epochs": 4, "sample_every_n_epochs": 0})
    checkpoints = settings.data_dir / "work" / "jobs" / str(info.id) / "out" / "checkpoints"

    # 1. A graceful stop (SIGTERM) inside epoch 2 hands the attempt back: queued again, attempt not counted.
    first = worker_process("train")
    await wait_for(lambda: checkpoints.exists() and any(checkpoints.iterdir()), 300, "the first checkpoint")
    await wait_for(lambda: _training_step(services, info.id, 4), 120, "the second epoch")
    assert first.stop() == 0, first.output()
    job = await _job(services, info.id)
    assert job.status == "queued" and job.attempts == 0, (job.status, job.attempts)

    # 2. SIGKILL (no chance to clean up) inside epoch 3: the next worker's reconciler notices the silent
    #    heartbeat, re-queues the job as attempt 2, and the training resumes from the epoch 2 checkpoint.
    second = worker_process("train")
    await wait_for(lambda: _training_step(services, info.id, 7), 300, "the third epoch")
    second.kill()
    third = worker_process("train")
    await wait_for(lambda: _status_in(services, info.id, "succeeded", "failed", "cancelled"), 420,
                   "the job to be picked up again and finish")
    job = await _job(services, info.id)
    assert job.status == "succeeded", (job.error, third.output())
    assert job.attempts == 2
    assert job.result["resumed_from_epoch"] >= 2, "resumed from its checkpoint, not from scratch"
    assert job.result["steps"] == job.payload["total_steps"]
    kinds = await _kinds(services, info.id)
    assert kinds == Counter({"training_queued": 1, "training_started": 1, "training_retrying": 1,
                             "training_finished": 1, "training_progress": 4}), kinds
    charges = await _charges(services, info.id)
    assert len(charges) == 1 and charges[0].refunded_at is None, "charged once, not refunded"
    async with services.db.read() as s:
        assert (await s.get(Element, info.element_id)).status == "ready"


async def _status_in(services: Any, job_id: int, *statuses: str) -> bool:
    return (await _job(services, job_id)).status in statuses
