"""``atelier worker`` — run a GPU worker (the scale-out part; needs the database, Redis and blob URLs only)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from redis.exceptions import RedisError

from cli.common import err_console, fail, out, print_json
from storage.db.blobs import BlobStore
from storage.db.engine import Database
from storage.queue.arq_jobs import connect
from storage.queue.embedded_redis import find_redis_server, redis_for
from storage.redact import install_log_masking, mask_urls
from storage.services import build_services
from storage.settings import Settings, SettingsError, load_settings
from trainer.memory.planner import detect_gpu_gb
from worker.app import run_worker
from worker.checkpoint_mirror import open_store
from worker.settings import WorkerOptions
from worker.stack_versions import stack_report

app = typer.Typer(add_completion=False)

QueuesOpt = Annotated[str, typer.Option("--queues", "-q", help="Comma-separated queues to serve: train, generate.")]
WorkDirOpt = Annotated[Path | None, typer.Option(
    "--work-dir", help="Per-job folders with training checkpoints (default <data dir>/work). Put it on shared "
                       "storage to let another machine resume a crashed training from its checkpoint.")]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    install_log_masking()  # URLs with credentials appear in connection errors; never log the password
    if not verbose:
        logging.getLogger("arq").setLevel(logging.WARNING)


def worker_options(queues: str, work_dir: Path | None, poll_delay: float, reconcile_every: int,
                   heartbeat: float | None) -> WorkerOptions:
    names = tuple(q.strip() for q in queues.split(",") if q.strip())
    try:
        return WorkerOptions(queues=names, work_dir=work_dir, poll_delay=poll_delay,
                             reconcile_seconds=reconcile_every, heartbeat_seconds=heartbeat)
    except ValueError as exc:
        raise fail(str(exc), as_json=False, code="invalid") from None


@app.command()
def worker(
    queues: QueuesOpt = "train,generate",
    check: Annotated[bool, typer.Option("--check", help="Check the configuration and connections, then exit.")]
    = False,
    work_dir: WorkDirOpt = None,
    poll_delay: Annotated[float, typer.Option(help="Seconds between queue polls (job start latency).")] = 0.05,
    reconcile_every: Annotated[int, typer.Option(help="Seconds between reconciler runs (1–60).")] = 10,
    heartbeat: Annotated[float | None, typer.Option(help="Seconds between job heartbeats (default: "
                                                         "ATELIER_STALE_HEARTBEAT_SECONDS / 4, at most 5).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --check: print the report as JSON.")] = False,
) -> None:
    """Take training and generation jobs from Redis until Ctrl-C (running jobs are handed back).

    Needs the database, Redis and blob store settings only — never the Discord token.
    """
    options = worker_options(queues, work_dir, poll_delay, reconcile_every, heartbeat)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc), as_json=json_output, code="settings") from None
    if check:
        report = asyncio.run(check_worker(settings, options))
        if json_output:
            print_json(report)
        else:
            for name, (ok, detail) in report.items():
                out().print(f"{'[green]ok[/]' if ok else '[red]FAIL[/]'}  {name}: {detail}")
        raise typer.Exit(0 if all(ok for ok, _ in report.values()) else 1)
    setup_logging(verbose)
    try:
        asyncio.run(serve(settings, options))
    except (OSError, RedisError) as exc:
        raise fail(mask_urls(f"cannot reach Redis: {exc}"), as_json=False, code="redis",
                   hint="Check ATELIER_REDIS_URL (or leave it unset for the embedded Redis).") from None


async def serve(settings: Settings, options: WorkerOptions) -> None:
    services = await build_services(settings)
    try:
        async with redis_for(settings.resolved_redis_url, settings.data_dir) as url:
            if not settings.resolved_redis_url:
                err_console().print(f"[dim]no ATELIER_REDIS_URL: using the embedded Redis at {url}[/]")
            await run_worker(services, url, options)
    finally:
        await services.aclose()


async def check_worker(settings: Settings, options: WorkerOptions) -> dict[str, tuple[bool, str]]:
    """Each part a worker needs: (ok, detail)."""
    report: dict[str, tuple[bool, str]] = {}

    db = Database(settings.resolved_database_url)
    try:
        rev = await db.current_revision()
        report["database"] = (rev is not None, f"{db!r} at revision {rev}" if rev else
                              f"{db!r} has no schema yet: run `atelier db upgrade` (or start `atelier run`)")
    except Exception as exc:  # noqa: BLE001 — reported, not raised
        report["database"] = (False, mask_urls(f"cannot connect: {exc}"))
    finally:
        await db.dispose()
    report["redis"] = await _check_redis(settings)
    report["blobs"] = await _check_blobs(settings)
    report["checkpoints"] = await asyncio.to_thread(_check_checkpoints, settings)
    work = options.resolved_work_dir(settings)
    try:
        work.mkdir(parents=True, exist_ok=True)
        probe = work / ".probe"
        probe.write_text("ok")
        probe.unlink()
        report["work dir"] = (True, str(work))
    except OSError as exc:
        report["work dir"] = (False, f"{work} is not writable: {exc}")
    report["torch"] = await asyncio.to_thread(_check_torch)
    report["gpu memory"] = await asyncio.to_thread(_check_gpu_budget, settings.gpu_memory_gb)
    report["ML stack"] = stack_report()
    return report


def _check_gpu_budget(setting: float | None) -> tuple[bool, str]:
    """The GPU and the memory budget runs are planned against (trainer.memory.planner)."""
    total, name = detect_gpu_gb()
    gpu = f"{name}, {total:.1f} GB" if total is not None else name
    if setting is None:
        if total is None:
            return True, f"{gpu}; budget: none (set ATELIER_GPU_MEMORY_GB; runs are not refused for memory)"
        return True, f"{gpu}; budget {total:.1f} GB (the whole GPU; ATELIER_GPU_MEMORY_GB to change)"
    if total is not None and setting > total + 0.5:
        return False, f"{gpu}; ATELIER_GPU_MEMORY_GB={setting:g} is more than the GPU has"
    return True, f"{gpu}; budget {setting:g} GB (ATELIER_GPU_MEMORY_GB)"


async def _check_redis(settings: Settings) -> tuple[bool, str]:
    if not settings.resolved_redis_url:
        try:
            return True, f"embedded (no ATELIER_REDIS_URL): {find_redis_server()}"
        except Exception as exc:  # noqa: BLE001
            return False, str(exc)

    try:
        redis = await connect(settings.resolved_redis_url, retries=0)
        await redis.ping()
        await redis.aclose(close_connection_pool=True)
        return True, mask_urls(settings.resolved_redis_url)
    except Exception as exc:  # noqa: BLE001
        return False, mask_urls(f"cannot reach {settings.resolved_redis_url}: {exc}")


async def _check_blobs(settings: Settings) -> tuple[bool, str]:
    store = BlobStore.from_settings(settings)
    try:
        h = await store.put_bytes(b"atelier worker check")
        ok = await store.get_bytes(h) == b"atelier worker check"
        return ok, mask_urls(store.url)
    except Exception as exc:  # noqa: BLE001
        return False, mask_urls(f"{store.url}: {exc}")


def _check_checkpoints(settings: Settings) -> tuple[bool, str]:
    """Where a crashed training resumes from: a probe written to and read back from the checkpoint store."""
    store = settings.checkpoint_store
    if store is None:
        return True, ("in the work dir only: another machine resumes a crashed training only if ATELIER_WORK_DIR is "
                      "on shared storage (or set ATELIER_CHECKPOINT_URL / an s3:// ATELIER_BLOB_URL)")

    url, options = store
    try:
        fs, root = open_store(url, options)
        probe = f"{root.rstrip('/')}/.probe-{os.getpid()}"
        fs.pipe_file(probe, b"ok")
        ok = fs.cat_file(probe) == b"ok"
        fs.rm_file(probe)
        return ok, mask_urls(url)
    except Exception as exc:  # noqa: BLE001 — reported, not raised
        return False, mask_urls(f"{url}: {exc}")


def _check_torch() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed: install the worker extra (pip install 'atelier[worker]')"
    if torch.cuda.is_available():
        return True, f"torch {torch.__version__}, CUDA: {torch.cuda.get_device_name(0)}"
    return True, f"torch {torch.__version__}, CPU only (training will be slow)"
