"""Scale-out bench: a stream of tiny generation jobs through 1, 2 and 4 ``atelier worker`` processes.

    python bench/bench_scale.py [--jobs 24] [--workers 1,2,4] [--rounds 1] [--steps 2] [--models-dir DIR]
                                [--database-url postgresql+asyncpg://…/db] [--redis-url redis://127.0.0.1:6379/9]

Everything real: ``atelier worker --queues generate`` subprocesses (the same command a GPU box runs) on one
Redis (embedded unless ``--redis-url``) and one database (SQLite in WAL mode, or a fresh schema on the PostgreSQL
server of ``--database-url``, dropped afterwards), tiny-sd15 on the CPU. Each round starts fresh workers, warms
them up (pipeline load), then requests ``--jobs`` generations at once and waits for the last to finish.

Prints per round: jobs/s, speed-up over one worker and per-worker efficiency, median job service time
(started → finished), and the round trips a job costs — SQL (BEGIN + statements + COMMIT/ROLLBACK) and Redis
(a pipeline counts once) on the requesting side (what the bot pays per request) and summed over the workers
(heartbeats, transitions, arq's polling and bookkeeping). An idle window shows what the workers cost Redis and the
database while doing nothing (arq polls; the reconciler runs). Workers are counted from the inside: each runs
under this script's ``--as-worker`` wrapper, which hooks SQLAlchemy's engine events and redis-py's
``send_packed_command`` and reports on SIGUSR2 (SIGUSR1 resets).

On a machine with fewer cores than workers, jobs/s stops growing at the core count: tiny models are CPU-bound
here, as real ones are GPU-bound on a GPU box (one worker per GPU). What the bench is for is the fixed cost per
job — the round trips, which decide how many workers one PostgreSQL and one Redis carry (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- round-trip counters (this process and, through --as-worker, each worker process) -------------------------

class Counters:
    """SQL round trips (BEGIN, statements, COMMIT/ROLLBACK) and Redis round trips (one per sent command or
    pipeline) made by this process while ``enabled``."""

    def __init__(self) -> None:
        self.sql = 0
        self.redis = 0
        self.enabled = True

    def install(self, pre_ping: bool) -> Counters:
        from redis.asyncio.connection import AbstractConnection
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from sqlalchemy.pool import Pool

        def sql(*_: Any, **__: Any) -> None:
            if self.enabled:
                self.sql += 1

        for name in ("begin", "commit", "rollback", "before_cursor_execute"):
            event.listen(Engine, name, sql)
        if pre_ping:  # storage.db.engine pings a PostgreSQL connection at each checkout (pool_pre_ping)
            event.listen(Pool, "checkout", sql)
        send = AbstractConnection.send_packed_command

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            if self.enabled:
                self.redis += 1
            await send(conn, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        return self

    def snapshot(self) -> dict[str, int]:
        return {"sql": self.sql, "redis": self.redis}

    def reset(self) -> None:
        self.sql = self.redis = 0


def as_worker(stats_file: str, worker_args: list[str]) -> None:
    """``atelier worker …`` with counters: SIGUSR1 resets them, SIGUSR2 writes them to ``stats_file``."""
    counters = Counters().install(os.environ.get("ATELIER_DATABASE_URL", "").startswith("postgresql"))
    signal.signal(signal.SIGUSR1, lambda *_: counters.reset())

    def dump(*_: Any) -> None:
        tmp = Path(stats_file + ".tmp")
        tmp.write_text(json.dumps(counters.snapshot()))
        tmp.replace(stats_file)

    signal.signal(signal.SIGUSR2, dump)
    from cli.main import app

    sys.argv = ["atelier", "worker", *worker_args]
    app()


# ---- the bench -------------------------------------------------------------------------------------------------

class WorkerPool:
    def __init__(self, n: int, env: dict[str, str], root: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stats = [root / f"stats-{uuid.uuid4().hex[:8]}-{i}.json" for i in range(n)]
        self.logs = [root / f"worker-{n}-{i}.log" for i in range(n)]
        for stats, log in zip(self.stats, self.logs, strict=True):
            with open(log, "ab") as fh:
                self.procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--as-worker", str(stats), "--", "--queues", "generate",
                     "--reconcile-every", "10"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT))

    def signal(self, sig: int) -> None:
        for p in self.procs:
            p.send_signal(sig)

    async def read_stats(self) -> dict[str, int]:
        for s in self.stats:
            s.unlink(missing_ok=True)
        self.signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not all(s.exists() for s in self.stats):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not report their counters; see " + str(self.logs[0]))
            await asyncio.sleep(0.05)
        total = {"sql": 0, "redis": 0}
        for s in self.stats:
            for k, v in json.loads(s.read_text()).items():
                total[k] += v
        return total

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def wait_done(services: Any, ids: list[int], limit_s: float = 900) -> list[Any]:
    from sqlalchemy import select

    from storage.db.models import Job

    deadline = time.monotonic() + limit_s
    while True:
        async with services.db.read() as s:
            rows = list((await s.execute(select(Job).where(Job.id.in_(ids)))).scalars())
        if all(r.status in ("succeeded", "failed", "cancelled") for r in rows):
            bad = [(r.id, r.status, r.error) for r in rows if r.status != "succeeded"]
            if bad:
                raise RuntimeError(f"jobs did not succeed: {bad[:3]}")
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the jobs")
        await asyncio.sleep(0.05)


async def request(services: Any, actor: Any, counters: Counters, n: int, tag: str, steps: int) -> list[int]:
    """Request ``n`` generations at once, counting only what the requests themselves cost."""
    counters.enabled = True
    try:
        infos = [await services.jobs.request_generation(actor, prompt=f"a red cube {tag} {i}", seed=i, steps=steps)
                 for i in range(n)]
    finally:
        counters.enabled = False
    return [i.id for i in infos]


async def one_round(n_workers: int, services: Any, actor: Any, counters: Counters, env: dict[str, str],
                    root: Path, jobs: int, steps: int, idle_s: float, connections: Any) -> dict[str, Any]:
    before = await connections()
    pool = WorkerPool(n_workers, env, root)
    try:
        # Warm-up: every worker loads its pipeline (jobs go to whichever polls first: give each a few).
        await wait_done(services, await request(services, actor, counters, 3 * n_workers, "warm", steps))
        pool.signal(signal.SIGUSR1)
        await asyncio.sleep(idle_s)
        idle = await pool.read_stats()
        pool.signal(signal.SIGUSR1)
        counters.reset()
        t0 = time.perf_counter()
        ids = await request(services, actor, counters, jobs, f"w{n_workers}", steps)
        rows = await wait_done(services, ids)
        wall = time.perf_counter() - t0
        work = await pool.read_stats()
        conns = await connections()
    finally:
        pool.stop()
    service = [(r.finished_at - r.started_at).total_seconds() for r in rows]
    return {"workers": n_workers, "jobs_per_s": jobs / wall, "wall": wall, "service_median": statistics.median(service),
            "by_worker": len({r.progress.get("worker") for r in rows}),
            "size": f"{rows[0].payload.get('width')}×{rows[0].payload.get('height')}",
            "req_sql": counters.sql / jobs, "req_redis": counters.redis / jobs,
            "wrk_sql": work["sql"] / jobs, "wrk_redis": work["redis"] / jobs,
            "idle_sql_s": idle["sql"] / idle_s / n_workers, "idle_redis_s": idle["redis"] / idle_s / n_workers,
            "conns": None if conns is None else (conns - before) / n_workers}


async def main(args: argparse.Namespace) -> None:
    from storage.dataset_views import IncomingFile  # noqa: F401 — storage import check before anything starts
    from storage.queue.embedded_redis import redis_for
    from storage.services import build_services
    from storage.settings import Settings

    counters = Counters().install(bool(args.database_url))
    counters.enabled = False
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-scale-"))
    models = Path(args.models_dir) if args.models_dir else root / "models"
    db_url, drop, connections = await database(args.database_url, root)
    try:
        async with redis_for(args.redis_url, root) as redis_url:
            settings = Settings(_env_file=None, data_dir=root / "data", database_url=db_url, redis_url=redis_url,
                                models_dir=models, generation_cooldown_seconds=0, default_base_model="tiny-sd15")
            services = await build_services(settings)
            await services.attach_jobs(redis_url)
            actor = await services.users.local_actor("bench")
            env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
            env.update({"ATELIER_DATA_DIR": str(root / "data"), "ATELIER_DATABASE_URL": db_url,
                        "ATELIER_REDIS_URL": redis_url, "ATELIER_MODELS_DIR": str(models),
                        "ATELIER_GENERATION_COOLDOWN_SECONDS": "0", "ATELIER_DEFAULT_BASE_MODEL": "tiny-sd15",
                        "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            kind = "PostgreSQL" if db_url.startswith("postgresql") else "SQLite (WAL)"
            print(f"tiny-sd15 generation ({args.steps} steps), CPU, {os.cpu_count()} cores; "
                  f"{args.jobs} jobs per round; {kind}; Redis {'embedded' if not args.redis_url else 'external'}\n")
            runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.workers}
            for _ in range(args.rounds):  # interleaved: a load drift on the machine hits every worker count
                for n in args.workers:
                    runs[n].append(await one_round(n, services, actor, counters, env, root, args.jobs, args.steps,
                                                   args.idle, connections))
            rows = [median_run(runs[n]) for n in args.workers]
            await services.aclose()
    finally:
        await drop()
    base = rows[0]["jobs_per_s"] / rows[0]["workers"]
    print(f"image size {rows[0]['size']} px")
    print(f"{'workers':>7} {'jobs/s':>7} {'speed-up':>8} {'per worker':>10} {'service':>8} {'used':>4} │"
          f" {'request SQL':>11} {'request Redis':>13} │ {'worker SQL':>10} {'worker Redis':>12} │"
          f" {'idle SQL/s':>10} {'idle Redis/s':>12} │ {'PG conns':>8}")
    for r in rows:
        speed = r["jobs_per_s"] / rows[0]["jobs_per_s"]
        print(f"{r['workers']:>7} {r['jobs_per_s']:>7.2f} {speed:>7.2f}× {r['jobs_per_s'] / r['workers'] / base:>9.0%}"
              f" {r['service_median']:>7.2f}s {r['by_worker']:>4} │ {r['req_sql']:>11.1f} {r['req_redis']:>13.1f} │"
              f" {r['wrk_sql']:>10.1f} {r['wrk_redis']:>12.1f} │ {r['idle_sql_s']:>10.1f} {r['idle_redis_s']:>12.1f}"
              f" │ {'—' if r['conns'] is None else format(r['conns'], '.1f'):>8}")
    print("\nspeed-up: jobs/s over the 1-worker round; per worker: speed-up ÷ workers; service: median started →"
          " finished;\nused: workers that ran a measured job; SQL/Redis per job: round trips (worker side summed"
          " over all workers,\nincluding arq's polling while jobs wait); idle: per worker per second with nothing"
          " queued;\nPG conns: PostgreSQL connections each worker process holds open after the round;"
          f" medians of {args.rounds} interleaved round(s).")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median jobs/s (its other figures with it)."""
    return sorted(runs, key=lambda r: r["jobs_per_s"])[len(runs) // 2]


async def database(url: str | None, root: Path) -> tuple[str, Any, Any]:
    """(URL, async drop, async connection count): a fresh schema on ``url``'s PostgreSQL, or a SQLite file under
    ``root`` (no connection count)."""
    if not url:
        async def nothing() -> None:
            return None
        return f"sqlite+aiosqlite:///{root / 'atelier.db'}", nothing, nothing
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    schema = f"bench_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> Any:
        conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host or "127.0.0.1",
                                     port=u.port or 5432, database=u.database)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    await admin(f'CREATE SCHEMA "{schema}"')

    async def drop() -> None:
        await admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    async def connections() -> int:
        return await admin("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")

    return u.update_query_dict({"search_path": schema}).render_as_string(hide_password=False), drop, connections


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--as-worker":
        as_worker(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=24, help="generations per round (default 24)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per generation (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats; medians are printed")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of the idle window (default 3)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server/database for a fresh schema")
    parser.add_argument("--redis-url", default=None, help="an external Redis (default: embedded)")
    parser.add_argument("--models-dir", default=None)
    asyncio.run(main(parser.parse_args()))
