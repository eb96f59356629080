"""Fixtures for queue/worker tests: a real (embedded) Redis with one DB per test, a real database (SQLite,
or PostgreSQL when ATELIER_TEST_DATABASE_URL is set), real services, tiny models, real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from storage.queue.embedded_redis import EmbeddedRedis
from storage.settings import ImageLimits, Settings

ROOT = Path(__file__).resolve().parents[2]
_DB_INDEX = itertools.count(1)
# Small and fast: tiny SD1.5 at 32 px, a few steps per epoch, one sample per epoch.
FAST_TRAIN = {"epochs": 2, "repeats": 1, "resolution": 32, "sample_steps": 2, "sample_every_n_epochs": 1,
              "sample_prompts": ["{trigger} a cat"], "grid_strengths": [0.0, 1.0], "mixed_precision": "no"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = asyncio.run(server.start())
    yield url
    asyncio.run(server.stop())


@pytest.fixture
async def redis_url(redis_server: str) -> AsyncIterator[str]:
    """A Redis database of its own for this test (1–15 cycling, flushed first)."""
    url = f"{redis_server}?db={next(_DB_INDEX) % 15 + 1}"
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str, models_dir: Path,
             blob_settings: dict[str, Any]) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url, **blob_settings,
        models_dir=models_dir, generation_cooldown_seconds=0, stale_heartbeat_seconds=3, max_attempts=3,
        image_limits=ImageLimits(min_images=2), default_base_model="tiny-sd15", min_image_side=32,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as ATELIER_* variables, for worker subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update({
        "ATELIER_DATA_DIR": str(settings.data_dir), "ATELIER_DATABASE_URL": settings.resolved_database_url,
        "ATELIER_REDIS_URL": settings.resolved_redis_url or "", "ATELIER_MODELS_DIR": str(settings.resolved_models_dir),
        "ATELIER_GENERATION_COOLDOWN_SECONDS": str(settings.generation_cooldown_seconds),
        "ATELIER_STALE_HEARTBEAT_SECONDS": str(settings.stale_heartbeat_seconds),
        "ATELIER_MAX_ATTEMPTS": str(settings.max_attempts),
        "ATELIER_TRAIN_TIMEOUT_SECONDS": str(settings.train_timeout_seconds),
        "ATELIER_GENERATE_TIMEOUT_SECONDS": str(settings.generate_timeout_seconds),
        "ATELIER_IMAGE_LIMITS__MIN_IMAGES": str(settings.image_limits.min_images),
        "ATELIER_DEFAULT_BASE_MODEL": settings.default_base_model, "ATELIER_MIN_IMAGE_SIDE": "32",
        "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    })
    if settings.blob_url:
        env["ATELIER_BLOB_URL"] = settings.resolved_blob_url
        env["ATELIER_BLOB_OPTIONS"] = json.dumps(settings.blob_options)
    if settings.work_dir:
        env["ATELIER_WORK_DIR"] = str(settings.work_dir)
    return env


@contextlib.asynccontextmanager
async def wired_services(settings: Settings) -> AsyncIterator[Any]:
    """Services with the job queue attached: the same wiring as the bot, the CLI and the worker."""
    from storage.services import build_services

    s = await build_services(settings)
    await s.attach_jobs(settings.resolved_redis_url)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Any]:
    async with wired_services(settings) as s:
        yield s


@pytest.fixture
async def actor(services: Any) -> Any:
    return await services.users.local_actor("alice")


@pytest.fixture
def make_dataset(services: Any, tmp_path: Path) -> Callable[..., Any]:
    """``await make_dataset(actor, "name", count=4)``: a dataset of synthetic images, added through ingest."""
    from storage.dataset_views import IncomingFile
    from trainer.synthetic import make_dataset as synth

    async def make(actor: Any, name: str = "shapes", count: int = 4, seed: int = 0) -> str:
        items = synth(tmp_path / f"synth-{name}", count=count, size=64, seed=seed)
        await services.datasets.create(actor, name)
        files = [IncomingFile(filename=i.image_path.name, data=i.image_path.read_bytes(), caption=i.caption)
                 for i in items]
        await services.datasets.add_images(actor, name, files)
        return name

    return make


class WorkerProcess:
    """``atelier worker`` as a real subprocess (SIGKILL-able)."""

    def __init__(self, settings: Settings, log_path: Path, queues: str = "train,generate",
                 extra: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        args = [sys.executable, "-m", "cli.main", "worker", "--queues", queues, "--reconcile-every", "1",
                "--heartbeat", "0.5", *extra]
        self.log = open(log_path, "ab")  # noqa: SIM115 — closed in stop()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=settings_env(settings), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker only (its training child dies with it through PDEATHSIG)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Any:
    started: list[WorkerProcess] = []

    def start(queues: str = "train,generate", *extra: str) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", queues, extra)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


async def wait_for(predicate: Callable[[], Any], seconds: float, what: str, interval: float = 0.1) -> Any:
    """Await ``predicate()`` (sync or async) until truthy; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
