"""Queue benchmarks: job start latency and generation latency under a concurrent training run.

    python bench/bench_queue.py [--jobs 30] [--gens 8] [--models-dir DIR]

Everything real: an embedded Redis, SQLite, arq workers running in this process (as ``atelier worker`` runs
them), the training subprocess and the tiny-sd15 generation engine.

1. Start latency (request returned → row ``running``, from the worker's own timestamp) for ``--jobs``
   back-to-back generation jobs on an idle worker, with our poll delay (0.05 s) next to arq's default (0.5 s).
   Target (issue 4): median ≤ 0.6 s.
2. Generation latency (request → finished) on an idle worker vs. while a training job runs on the same worker,
   with the fair-share policy pausing it by SIGSTOP (default) or at its next step boundary, and with no
   policy (both compete) — interleaved, one generation each in turn during the same training run.
   Target: ratio ≤ 2.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.db.models import Job  # noqa: E402
from storage.queue.embedded_redis import embedded_redis  # noqa: E402
from storage.services import build_services  # noqa: E402
from storage.settings import ImageLimits, Settings  # noqa: E402
from worker.app import run_worker  # noqa: E402
from worker.settings import WorkerOptions  # noqa: E402

TRAIN = {"epochs": 50, "repeats": 50, "resolution": 32, "sample_every_n_epochs": 0, "sample_prompts": [],
         "grid": False, "mixed_precision": "no"}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def job_row(services: Any, job_id: int) -> Job:
    async with services.db.read() as s:
        return await s.get(Job, job_id)


async def until_finished(services: Any, job_id: int, poll: float = 0.01) -> Job:
    while True:
        job = await job_row(services, job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            if job.status != "succeeded":
                raise RuntimeError(f"job {job_id} {job.status}: {job.error}")
            return job
        await asyncio.sleep(poll)


class Worker:
    """An in-process worker (the same ``run_worker`` ``atelier worker`` runs) for one configuration."""

    def __init__(self, services: Any, url: str, options: WorkerOptions, on_ready: Any = None) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_worker(services, url, options, stop=self.stop,
                                                   install_signal_handlers=False, on_ready=on_ready))

    async def close(self) -> None:
        self.stop.set()
        await self.task


async def start_latencies(services: Any, actor: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        sent = datetime.now(UTC)
        info = await services.jobs.request_generation(actor, prompt=f"a red cube {i}", seed=i, steps=1)
        job = await until_finished(services, info.id)
        out.append((job.started_at - sent).total_seconds())
    return out


async def generation_latencies(services: Any, actor: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        info = await services.jobs.request_generation(actor, prompt=f"a blue sphere {i}", seed=100 + i)
        await until_finished(services, info.id, poll=0.005)
        out.append(time.perf_counter() - t0)
    return out


async def training_job(services: Any, actor: Any, name: str) -> int:
    info = await services.jobs.request_training(actor, dataset="bench", name=name, category="style",
                                                base_model="tiny-sd15", trigger=f"zqx{name.lower()}",
                                                overrides=TRAIN)
    while True:
        job = await job_row(services, info.id)
        if job.status == "running" and job.progress.get("phase") == "training":
            return info.id
        if job.status in ("failed", "cancelled", "succeeded"):
            raise RuntimeError(f"training job ended early: {job.status} {job.error}")
        await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    from storage.dataset_views import IncomingFile
    from trainer.synthetic import make_dataset

    root = Path(tempfile.mkdtemp(prefix="atelier-bench-queue-"))
    models = Path(args.models_dir) if args.models_dir else root / "models"
    async with embedded_redis(root) as url:
        settings = Settings(_env_file=None, data_dir=root / "data", redis_url=url, models_dir=models,
                            generation_cooldown_seconds=0, default_base_model="tiny-sd15", min_image_side=32,
                            image_limits=ImageLimits(min_images=2))
        services = await build_services(settings)
        await services.attach_jobs(url)
        actor = await services.users.local_actor("bench")
        items = make_dataset(root / "synth", count=4, size=64)
        await services.datasets.create(actor, "bench")
        await services.datasets.add_images(actor, "bench", [IncomingFile(i.image_path.name, i.image_path.read_bytes(),
                                                                         i.caption) for i in items])
        print(f"tiny-sd15, CPU; {args.jobs} jobs for start latency, {args.gens} generations per case\n")

        print("1. start latency (request → running)")
        rows = {}
        for label, poll in (("atelier poll 0.05 s", 0.05), ("arq default 0.5 s", 0.5)):
            w = Worker(services, url, WorkerOptions(queues=("generate",), poll_delay=poll))
            await start_latencies(services, actor, 2)  # warm-up: pipeline load
            lat = await start_latencies(services, actor, args.jobs)
            await w.close()
            rows[label] = (statistics.median(lat), pct(lat, 0.95))
            print(f"   {label:22s} median {rows[label][0] * 1000:7.1f} ms   p95 {rows[label][1] * 1000:7.1f} ms")
        a, b = rows["atelier poll 0.05 s"], rows["arq default 0.5 s"]
        print(f"   ratio atelier/arq-default median {a[0] / b[0]:.2f}   (target: median ≤ 600 ms)\n")

        print("2. generation latency, idle vs. during a training run on the same worker")
        apps: list[Any] = []
        w = Worker(services, url, WorkerOptions(queues=("train", "generate")), on_ready=apps.append)
        await generation_latencies(services, actor, 2)  # warm-up: pipeline load
        idle = await generation_latencies(services, actor, args.gens)
        job_id = await training_job(services, actor, "Bench")
        modes = {"signal": "fair share, SIGSTOP (default)", "step": "fair share, at step boundary",
                 "off": "no policy (both compete)"}
        busy: dict[str, list[float]] = {m: [] for m in modes}
        steps: dict[str, list[tuple[int, float]]] = {m: [] for m in modes}
        order = list(modes)
        for k in range(args.gens):
            # Interleaved, rotating order: the machine's load drifts, every policy sees the same drift.
            for mode in order[k % 3:] + order[:k % 3]:
                share = apps[0].fairshare
                share.enabled = mode != "off"
                share.mode = "step" if mode == "step" else "signal"
                child = share.children[job_id]  # the worker's live view of the training subprocess
                step0, t0 = child.step, time.perf_counter()
                busy[mode] += await generation_latencies(services, actor, 1)
                steps[mode].append((child.step - step0, time.perf_counter() - t0))
        await services.jobs.cancel(actor, job_id)
        while (await job_row(services, job_id)).status == "running":  # noqa: ASYNC110 — a DB row
            await asyncio.sleep(0.1)
        idle += await generation_latencies(services, actor, args.gens)  # idle on both sides of the run
        await w.close()
        base = statistics.median(idle)
        print(f"   {'idle worker':50s} median {base * 1000:7.1f} ms")
        for mode, label in modes.items():
            med = statistics.median(busy[mode])
            rate = sum(n for n, _ in steps[mode]) / sum(t for _, t in steps[mode])
            print(f"   during training, {label:33s} median {med * 1000:7.1f} ms   ratio {med / base:.2f}   "
                  f"(training {rate:.1f} steps/s meanwhile)")
        print("   target: ratio ≤ 2 with fair share")
        await services.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--gens", type=int, default=8)
    parser.add_argument("--models-dir", default=None)
    asyncio.run(main(parser.parse_args()))
