"""Disk is bounded: the worker's periodic sweep deletes blobs nothing refers to (queued job payloads count as
references) and stale temp files; a queued generation whose Element was deleted fails saying so."""

from __future__ import annotations

import os
import time
from typing import Any

from storage.db.models import Job
from tests.storage.conftest import ready_element
from worker.app import WorkerApp, sweep_storage, worker_settings
from worker.generate_job import execute_generation
from worker.settings import WorkerOptions


def _age(path: Any, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_deleted_element_fails_its_queued_generation_and_the_sweep_frees_its_files(services, actor,
                                                                                        make_dataset) -> None:
    other = await services.users.local_actor("bob")
    element = await ready_element(services, other, "Shared", "zqxshared", base_model="tiny-sd15",
                                  visibility="public")
    job = await services.jobs.request_generation(actor, prompt="a cat", elements=[(f"#{element.id}", 0.8)],
                                                 base_model="tiny-sd15", seed=1)
    await services.elements.delete(other, f"#{element.id}")
    # The owner's delete collected what it could, but the queued job still refers to the weights.
    assert await services.blobs.exists(element.weights_blob)

    app = WorkerApp(services, WorkerOptions(), enqueuer=services.enqueuer)
    assert await execute_generation(app, job.id, 0) == "failed"
    async with services.db.read() as s:
        row = await s.get(Job, job.id)
    assert row.error_code == "element_deleted" and "that Element was deleted (“Shared”)" in row.error
    assert "admin" not in (row.error + row.result.get("hint", ""))

    # The sweep: unreferenced old blobs and temp files go; referenced, or too new to judge, stay.
    await make_dataset(actor, "keep", count=2)
    kept = [i.blob_hash for i in (await services.datasets.get(actor, "keep")).images]
    fresh = await services.blobs.put_bytes(b"written a moment ago, its row not committed yet")
    crashed = await services.blobs.put_bytes(b"written long ago by an add that crashed before its commit")
    orphans = [element.weights_blob, crashed]
    for h in [*orphans, *kept]:
        _age(services.blobs.path_for(h), 7200)
    tmp = services.settings.temp_dir
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "export-old.zip").write_bytes(b"x")
    (tmp / "export-new.zip").write_bytes(b"x")
    _age(tmp / "export-old.zip", 7200)
    services.settings.sweep_grace_seconds = 3600

    report = await sweep_storage({"app": app})
    assert report == {"blobs_deleted": 2, "temp_files_deleted": 1}
    assert not any([await services.blobs.exists(h) for h in orphans])
    assert all([await services.blobs.exists(h) for h in [*kept, fresh]])
    assert sorted(p.name for p in tmp.iterdir()) == ["export-new.zip"]


async def test_queued_training_payload_keeps_its_images_through_the_sweep(services, actor, make_dataset) -> None:
    from tests.worker.conftest import FAST_TRAIN

    await make_dataset(actor, "shapes", count=2)
    job = await services.jobs.request_training(actor, dataset="shapes", name="Ink", category="style",
                                               base_model="tiny-sd15", trigger="zqxink", overrides=FAST_TRAIN)
    hashes = [m["blob"] for m in job.payload["manifest"]]
    async with services.db.transaction() as s:  # only the queued job's payload refers to them now
        from sqlalchemy import delete

        from storage.db.models import Dataset, Element
        await s.execute(delete(Element).where(Element.id == job.element_id))
        await s.execute(delete(Dataset))
    for h in hashes:
        _age(services.blobs.path_for(h), 7200)
    services.settings.sweep_grace_seconds = 60
    app = WorkerApp(services, WorkerOptions(), enqueuer=services.enqueuer)
    assert (await sweep_storage({"app": app}))["blobs_deleted"] == 0
    assert all([await services.blobs.exists(h) for h in hashes])
    await services.jobs.cancel(actor, job.id)  # finished: no longer a reference
    assert (await sweep_storage({"app": app}))["blobs_deleted"] == 2


def test_the_control_worker_schedules_the_sweep(services) -> None:
    app = WorkerApp(services, WorkerOptions(), enqueuer=services.enqueuer)
    crons = {c.name: c for c in worker_settings(app, "control", services.enqueuer.redis)["cron_jobs"]}
    assert crons["atelier-sweep"].coroutine is sweep_storage
    assert crons["atelier-sweep"].minute == 0 and crons["atelier-sweep"].hour == set(range(24))  # hourly
    assert crons["atelier-sweep"].unique
