"""Ingest benchmark: our validate → normalise → blob path vs a bare Pillow loop, and event-loop stalls.

    python bench/bench_ingest.py [--n 50] [--size 1024] [--repeat 3] [--no-service]

Prints, side by side on the same generated JPEGs (photographic-ish: gradients, soft blobs, sensor noise):
  * baseline  : Image.open → verify → re-open → save PNG (Pillow defaults), nothing else
  * ours      : storage.images.ingest.normalize_image + BlobStore.put_bytes_sync (atomic, fsynced) per file
  and the ratio ours / baseline (target ≤ 1.5);
  * the longest event-loop stall while the same files go through the async API (normalize_many, then BlobStore.put_bytes), measured by a
    ticker coroutine that sleeps 1 ms and records the largest gap between wake-ups (target ≤ 50 ms);
  * the same stall through DatasetService.add_images (SQLite + local blobs), unless --no-service.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.db.blobs import BlobStore  # noqa: E402
from storage.images.ingest import ImageRejected, IngestLimits, normalize_image, normalize_many  # noqa: E402
from tests.storage.hostile import photo_jpeg  # noqa: E402


def make_files(n: int, size: int) -> list[bytes]:
    return [photo_jpeg(size, size, seed=i, quality=90) for i in range(n)]


def baseline(files: list[bytes], **save_kw: object) -> None:
    for data in files:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.save(io.BytesIO(), "PNG", **save_kw)


def ours(files: list[bytes], store: BlobStore, limits: IngestLimits) -> None:
    for data in files:
        store.put_bytes_sync(normalize_image(data, limits).data)


async def ingest_many(files: list[bytes], limits: IngestLimits, store: BlobStore, *, concurrency: int = 2
                      ) -> list[object]:
    """The async path on its own: decode in the ingest threads, then write each accepted image to ``store``."""
    results = await normalize_many(files, limits, concurrency=concurrency)
    await asyncio.gather(*(store.put_bytes(r.data) for r in results if not isinstance(r, ImageRejected)))
    return list(results)


def best_of(repeat: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


async def max_stall(work: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
    """(longest gap between ticker wake-ups, median gap, wall time of ``work``) in seconds."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await work()
    wall = time.perf_counter() - t0
    stop.set()
    await task
    return max(gaps), statistics.median(gaps), wall


async def service_stall(files: list[bytes], tmp: Path) -> tuple[float, float, float] | None:
    try:
        from storage.dataset_views import IncomingFile
        from storage.services import build_services
        from storage.settings import load_settings
    except ImportError as exc:
        print(f"  (DatasetService not available: {exc})")
        return None
    settings = load_settings(data_dir=tmp)
    services = await build_services(settings)
    try:
        actor = await services.users.ensure("local:bench", "bench")
        await services.datasets.create(actor, "bench")
        incoming = [IncomingFile(f"{i:03d}.jpg", d, None) for i, d in enumerate(files)]
        return await max_stall(lambda: services.datasets.add_images(actor, "bench", incoming))
    finally:
        await services.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-service", action="store_true")
    args = ap.parse_args()

    files = make_files(args.n, args.size)
    mb = sum(map(len, files)) / 2**20
    print(f"{args.n} JPEGs {args.size}×{args.size}, {mb:.1f} MB total ({mb / args.n * 1024:.0f} KB each)")
    limits = IngestLimits()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        base = best_of(args.repeat, lambda: baseline(files))
        base_fast = best_of(args.repeat, lambda: baseline(files, compress_level=1))
        counter = iter(range(10_000))
        # A fresh store each run so every put really writes (idempotent puts would skip the I/O).
        mine = best_of(args.repeat, lambda: ours(files, BlobStore(str(tmp / f"b{next(counter)}")), limits))
        print(f"baseline  Pillow open→verify→save PNG (level 6): {base:7.3f} s  {base / args.n * 1e3:6.1f} ms/img")
        print(f"baseline  Pillow open→verify→save PNG (level 1): {base_fast:7.3f} s  "
              f"{base_fast / args.n * 1e3:6.1f} ms/img")
        print(f"ours      normalize_image + put_bytes (sync)    : {mine:7.3f} s  {mine / args.n * 1e3:6.1f} ms/img")
        print(f"ratio     ours / baseline(level 6) = {mine / base:.2f}  (target ≤ 1.5)")
        print(f"ratio     ours / baseline(level 1) = {mine / base_fast:.2f}  (same PNG settings as ours)")

        print("event-loop stalls (max gap of a 1 ms ticker, per run; target ≤ 50 ms):")
        walls = []
        for conc in (1, 2):
            runs = []
            for r in range(args.repeat):
                store = BlobStore(str(tmp / f"async{conc}-{r}"))
                runs.append(asyncio.run(max_stall(
                    lambda s=store, c=conc: ingest_many(files, limits, s, concurrency=c))))
            walls.append(min(w for _, _, w in runs))
            report(f"ingest_many(concurrency={conc})", runs)
        if not args.no_service:
            runs = [res for r in range(args.repeat)
                    if (res := asyncio.run(service_stall(files, tmp / f"svc{r}"))) is not None]
            if runs:
                report("DatasetService.add_images", runs)
        # Control: the same ticker over an idle loop for as long as the work took. On a busy machine the OS
        # alone causes gaps; stalls above this line are ours.
        idle = [asyncio.run(max_stall(lambda: asyncio.sleep(max(walls)))) for _ in range(args.repeat)]
        report("control: idle loop", idle)


def report(label: str, runs: list[tuple[float, float, float]]) -> None:
    stalls = ", ".join(f"{w * 1e3:5.1f}" for w, _, _ in runs)
    print(f"  {label:34s} wall {min(w for _, _, w in runs):6.2f} s   max stall per run [{stalls}] ms")


if __name__ == "__main__":
    main()
