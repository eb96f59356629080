"""Scale-out across machines, as the README deploys it: the bot and two GPU workers, each a real process with its
own ``ATELIER_DATA_DIR``, work dir and models dir (no local folder shared), meeting only through PostgreSQL,
Redis and an S3 server (moto).

A member's Element trains on machine A; A is SIGKILLed mid-epoch; machine B — which never saw A's disk — resumes
from the epoch checkpoint A mirrored to S3 and finishes; the member gets exactly one completion DM from the bot;
``/generate`` with the Element works from B and then from A restarted with an empty blob cache.

Needs ``ATELIER_TEST_DATABASE_URL`` (PostgreSQL) and ``ATELIER_TEST_S3=1``; skipped without them (CI runs it).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.db.models import Job, Notification
from storage.settings import Settings
from tests.conftest import pg_schema, pg_url
from tests.s3_server import s3_selected
from tests.worker.conftest import FAST_TRAIN, ROOT, WorkerProcess, settings_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.postgres]

# Three epochs of 80 steps (4 images × 20 repeats): each epoch lasts seconds, so the kill lands inside epoch 2.
# UNet-only LoRA: the text-encoder LoRA path is not what this test is about.
TRAIN = {**FAST_TRAIN, "epochs": 3, "repeats": 20, "train_text_encoder": False}
TRAIN_S = 480  # two cores shared with other test processes


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A fresh schema on the PostgreSQL server every machine connects to (no SQLite: no shared disk)."""
    base = pg_url()
    if not base:
        pytest.skip("needs PostgreSQL: set ATELIER_TEST_DATABASE_URL")
    async with pg_schema(base) as url:
        yield url


@pytest.fixture
def blob_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if not s3_selected():
        pytest.skip("needs the S3 server: set ATELIER_TEST_S3=1")
    server = request.getfixturevalue("moto_server")
    return {"blob_url": f"s3://{server.new_bucket()}/blobs", "blob_options": server.options()}


def machine(settings: Settings, root: Path) -> Settings:
    """The same cluster settings seen from another machine: its own data, work and models folders."""
    return settings.model_copy(update={"data_dir": root / "data", "work_dir": root / "work", "models_dir": None})


def worker_id(w: WorkerProcess) -> str:
    return f"{socket.gethostname()}:{w.proc.pid}"  # worker.settings.default_worker_id


async def job_row(services: Any, job_id: int) -> Job:
    async with services.db.read() as s:
        return await s.get(Job, job_id)


async def start_bot(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with open(log_path, "ab") as log:  # noqa: ASYNC230 — opening is instant
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", "bot", cwd=ROOT, env=env,
                                                    stdout=log, stderr=asyncio.subprocess.STDOUT)


async def generate_on(emu: Any, services: Any, user: Any, element: str, seed: int) -> Job:
    """/generate in #general through the bot; returns the finished job once its images are posted."""
    mark = emu.mark()
    await (await emu.slash(user, "generate", prompt="a cat", element1=element, strength1=0.7, seed=seed)).reply()
    post = await emu.wait_for_message("general", lambda m: m.files, after=mark, timeout=180)
    assert f"{element}** × 0.7" in post.text() and len(post.files) == 1, post.text()
    async with services.db.read() as s:
        return (await s.execute(select(Job).where(Job.kind == "generate").order_by(Job.id.desc()))).scalars().first()


async def test_train_on_a_kill_resume_on_b_generate_on_both(settings, services, moto_server, tmp_path) -> None:
    from tests.discord_emulator import DiscordEmulator

    bot_machine, a_machine, b_machine = (machine(settings, tmp_path / m) for m in ("bot", "gpu-a", "gpu-b"))
    a_log, b_log = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    workers: list[WorkerProcess] = []
    bot = None
    async with DiscordEmulator() as emu:
        env = settings_env(bot_machine)
        env.update(ATELIER_DISCORD_TOKEN=emu.token, ATELIER_DISCORD_API_BASE=emu.api_base,
                   ATELIER_DISCORD_GATEWAY_URL=emu.gateway_url, ATELIER_DEV_GUILD=str(emu.guild_id))
        bot = await start_bot(env, tmp_path / "bot.log")
        try:
            await emu.state.changes.wait_for(lambda: emu.state.commands.get(emu.guild_id), 90,
                                             lambda: "the bot to sync its commands" + emu.state.recent_problems())
            await emu.wait_until_connected(30)
            alice = emu.user("alice")

            # -- a dataset through the bot: its images land in S3, the only store the workers share ----------
            from tests.bot.stack import png

            await (await emu.slash(alice, "dataset", "create", options={"name": "shapes"})).reply(timeout=30)
            images = {f"image{i + 1}": emu.upload(f"s{i}.png", png(i, colour=(12, 70, 78))) for i in range(4)}
            added = await (await emu.slash(alice, "dataset", "add", options={"name": "shapes", **images})
                           ).reply(timeout=60)
            assert "4" in added.text(), added.text()

            # -- train on machine A (B not started yet, so A takes it) -----------------------------------------
            me = await services.users.ensure(f"discord:{alice.id}", "alice")
            origin = {"guild_id": str(emu.guild_id), "channel_id": str(emu.channel("general").id), "dm": False,
                      "user_id": str(alice.id)}
            info = await services.jobs.request_training(me, dataset="shapes", name="Inkwash", category="style",
                                                        base_model="tiny-sd15", trigger="zqxink", overrides=TRAIN,
                                                        origin=origin)
            worker_a = WorkerProcess(a_machine, a_log)
            workers.append(worker_a)

            async def in_epoch_two() -> bool:
                p = (await job_row(services, info.id)).progress or {}
                return p.get("phase") == "training" and p.get("epoch") == 2

            try:
                await wait_for(in_epoch_two, TRAIN_S, "machine A to train into epoch 2")
            except AssertionError:
                raise AssertionError(worker_a.output()) from None
            worker_a.kill()  # SIGKILL: no goodbye, its training child dies with it
            killed_at = (await job_row(services, info.id)).progress
            assert killed_at["epoch"] == 2 and killed_at["step"] < 3 * 80, killed_at
            assert (a_machine.work_dir / "jobs" / str(info.id) / "out" / "checkpoints" / "epoch-1").is_dir()

            # -- machine B: own disk, resumes from the checkpoint in S3 ---------------------------------------
            worker_b = WorkerProcess(b_machine, b_log)
            workers.append(worker_b)

            async def finished() -> Job | None:
                row = await job_row(services, info.id)
                return row if row.status in ("succeeded", "failed", "cancelled") else None

            try:
                job = await wait_for(finished, TRAIN_S, "machine B to finish the training")
            except AssertionError:
                raise AssertionError(worker_b.output()) from None
            assert job.status == "succeeded", (job.error, worker_b.output())
            assert job.attempts == 2 and job.progress["worker"] == worker_id(worker_b)
            # B's disk never held epoch 1: resuming from it means it came from S3.
            assert job.result["resumed_from_epoch"] == 1 and job.result["epochs"] == 3, job.result
            # Cleaned up once the success is recorded: B's job folder and the checkpoints in S3.
            mirror_fs, mirror_root = _mirror(settings, info.id)

            def cleaned() -> bool:
                mirror_fs.invalidate_cache()  # s3fs caches listings; ask the server
                return not (b_machine.work_dir / "jobs" / str(info.id)).exists() and not mirror_fs.exists(mirror_root)

            await wait_for(cleaned, 30, "the job's folder and checkpoints to go")

            # -- exactly one completion message -----------------------------------------------------------------
            done = await emu.wait_for_message(emu.dm(alice), lambda m: "is ready" in m.text(), timeout=60)
            assert {"grid.png", "loss-curve.png"} <= set(done.files), done.files
            async with services.db.read() as s:
                finished_rows = (await s.execute(select(func.count()).select_from(Notification).where(
                    Notification.job_id == info.id, Notification.kind == "training_finished"))).scalar_one()
            await asyncio.sleep(3)  # let a duplicate delivery (if any) arrive before counting
            ready = [m for m in emu.messages(emu.dm(alice)) if "is ready" in m.text()]
            assert finished_rows == 1 and len(ready) == 1, [m.text() for m in ready]

            # -- generation from B, then from A restarted (its blob cache is empty: weights come from S3) ------
            on_b = await generate_on(emu, services, alice, "Inkwash", seed=3)
            assert on_b.status == "succeeded" and on_b.progress["worker"] == worker_id(worker_b), on_b.progress
            assert worker_b.stop() == 0, worker_b.output()
            worker_a2 = WorkerProcess(a_machine, a_log)
            workers.append(worker_a2)
            on_a = await generate_on(emu, services, alice, "Inkwash", seed=4)
            assert on_a.status == "succeeded" and on_a.progress["worker"] == worker_id(worker_a2), on_a.progress
            assert worker_a2.stop() == 0, worker_a2.output()
        finally:
            for w in workers:
                w.stop()
            bot.send_signal(signal.SIGINT)
            try:
                rc = await asyncio.wait_for(bot.wait(), 30)
            except TimeoutError:
                bot.kill()
                rc = await bot.wait()
    assert rc == 0, (tmp_path / "bot.log").read_text(errors="replace")[-3000:]


def _mirror(settings: Settings, job_id: int) -> tuple[Any, str]:
    from worker.checkpoint_mirror import CheckpointMirror

    m = CheckpointMirror.for_job(settings.checkpoint_store, job_id)
    assert m is not None and settings.checkpoint_store[0].startswith("s3://")
    return m.fs, m.root
