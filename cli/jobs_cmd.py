"""``atelier jobs list|show|cancel|retry`` — and the job plumbing the train/generate commands share
(services with the job side attached, a live progress bar, result printing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.common import JsonOpt, err_console, escape, out, print_json, run, wants_json

if TYPE_CHECKING:
    from storage.actors import Actor
    from storage.job_views import JobInfo

T = TypeVar("T")
app = typer.Typer(no_args_is_help=True, help="Your training and generation jobs: list, show, cancel, retry.")
JobArg = Annotated[int, typer.Argument(help="Job id (see `atelier jobs list`).")]


def run_jobs(ctx: typer.Context, as_json: bool, fn: Callable[[Any, Actor], Awaitable[T]], *, redis: bool) -> T:
    """``cli.common.run`` with ``services.jobs`` attached; ``redis``: connect the queue too."""
    return run(ctx, as_json, fn, jobs="queue" if redis else "local")


async def warn_if_no_worker(services: Any, kind: str) -> None:
    if not await services.enqueuer.workers_alive(kind):
        err_console().print(f"[yellow]No worker is serving the {kind} queue right now; the job waits until "
                            "`atelier worker` or `atelier run` starts.[/]")


def describe(info: JobInfo) -> str:
    p = info.progress
    if info.kind == "train":
        what = f"train “{escape(info.element_name or '?')}”"
        if p.get("epoch"):
            what += f" · epoch {p.get('epoch')}/{p.get('total_epochs')}"
        if isinstance(p.get("loss"), float):
            what += f" · loss {p['loss']:.4f}"
    else:
        what = f"generate “{escape(str(info.payload.get('prompt', ''))[:40])}”"
    phase = p.get("phase") or info.status
    if info.status == "queued":
        phase = f"queued (position {info.queue_position})" if info.queue_position else "queued"
    return f"job {info.id} · {what} · {phase}"


def new_progress(console: Any) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


async def follow_job(services: Any, actor: Actor, job_id: int, *, quiet: bool = False) -> JobInfo:
    """Follow a job to its end with a live progress bar; returns its final state."""
    last = None
    with new_progress(err_console()) as bar:
        task = bar.add_task("…", total=1.0, visible=not quiet)
        async for info in services.jobs.follow(actor, job_id):
            last = info
            bar.update(task, completed=info.fraction, description=describe(info))
    assert last is not None
    return last


def report(info: JobInfo, *, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print a finished job's outcome; exit 1 unless it succeeded."""
    if as_json:
        print_json({"ok": info.status == "succeeded", "job": info, **(extra or {})})
    elif info.status == "succeeded":
        out().print(f"[green]job {info.id} finished[/]")
    elif info.status == "cancelled":
        out().print(f"job {info.id} was cancelled")
    elif info.status == "failed":
        hint = f" {info.hint}" if info.hint else ""
        err_console().print(f"[bold red]job {info.id} failed:[/] {escape(info.error or '')}{escape(hint)}")
    else:
        out().print(describe(info))
    if info.finished and info.status != "succeeded":
        raise typer.Exit(1)


def _table(jobs: list[JobInfo]) -> Table:
    table = Table("Id", "Kind", "Status", "What", "Progress", "Attempt", "Created")
    for j in jobs:
        what = j.element_name if j.kind == "train" else str(j.payload.get("prompt", ""))[:40]
        status = f"{j.status} (#{j.queue_position})" if j.queue_position else j.status
        table.add_row(str(j.id), j.kind, status, escape(what or ""), f"{j.fraction:.0%}",
                      f"{j.attempt}/{j.max_attempts}", f"{j.created_at:%Y-%m-%d %H:%M}")
    return table


@app.command("list")
def list_(ctx: typer.Context,
          active: Annotated[bool, typer.Option("--active", help="Only queued and running jobs.")] = False,
          limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100)] = 25,
          json: JsonOpt = False) -> None:
    """Your jobs, newest first."""
    as_json = wants_json(ctx, json)
    jobs = run_jobs(ctx, as_json, lambda s, a: s.jobs.list(a, active_only=active, limit=limit), redis=False)
    if as_json:
        return print_json({"ok": True, "jobs": jobs})
    if not jobs:
        out().print("No jobs.")
        return
    out().print(_table(jobs))


@app.command()
def show(ctx: typer.Context, job_id: JobArg,
         wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
         json: JsonOpt = False) -> None:
    """One job: status, progress, attempts, error and what to do about it."""
    as_json = wants_json(ctx, json)

    async def go(s: Any, a: Actor) -> JobInfo:
        return await follow_job(s, a, job_id, quiet=as_json) if wait else await s.jobs.get(a, job_id)

    info = run_jobs(ctx, as_json, go, redis=wait)
    if as_json:
        return print_json({"ok": True, "job": info})
    con = out()
    con.print(describe(info))
    con.print(f"attempt {info.attempt}/{info.max_attempts} · created {info.created_at:%Y-%m-%d %H:%M:%S}"
              + (f" · finished {info.finished_at:%H:%M:%S}" if info.finished_at else ""))
    if info.error:
        con.print(f"[red]{escape(info.error)}[/] {escape(info.hint or '')}")
    if info.generation_id:
        con.print(f"generation {info.generation_id}: {len(info.images)} image(s), seed {info.result.get('seed')}")
    if info.kind == "train" and info.status == "succeeded":
        con.print(f"Element “{escape(info.element_name or '')}” is ready (resumed from epoch "
                  f"{info.result.get('resumed_from_epoch', 0)}, final loss {info.result.get('final_loss')}).")


@app.command()
def cancel(ctx: typer.Context, job_id: JobArg, json: JsonOpt = False) -> None:
    """Cancel a queued or running job (a queued training's slot is refunded; a running one's is used)."""
    as_json = wants_json(ctx, json)
    info = run_jobs(ctx, as_json, lambda s, a: s.jobs.cancel(a, job_id), redis=False)
    if as_json:
        return print_json({"ok": True, "job": info})
    if info.status == "cancelled":
        out().print(f"job {info.id} cancelled")
    else:
        out().print(f"job {info.id}: cancel requested; the worker stops it within seconds")


@app.command()
def retry(ctx: typer.Context, job_id: JobArg, json: JsonOpt = False) -> None:
    """Run a failed or cancelled job again (as a new job with the same settings)."""
    as_json = wants_json(ctx, json)
    info = run_jobs(ctx, as_json, lambda s, a: s.jobs.retry(a, job_id), redis=True)
    if as_json:
        return print_json({"ok": True, "job": info})
    out().print(f"queued again as job {info.id}")
