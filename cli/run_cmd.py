"""``atelier run`` — the single-box setup in one command: Discord bot + one worker + embedded Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from bot.app import run_bot
from cli.common import err_console, fail
from cli.worker_cmd import setup_logging, worker_options
from storage.queue.embedded_redis import redis_for
from storage.queue.outbox import ConsoleDeliverer, OutboxPump
from storage.services import Services, build_services
from storage.settings import Settings, SettingsError, load_settings
from worker.app import run_worker
from worker.settings import WorkerOptions

app = typer.Typer(add_completion=False)


@app.command()
def run(
    queues: Annotated[str, typer.Option("--queues", "-q", help="Queues the built-in worker serves.")]
    = "train,generate",
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Per-job folders (default <data dir>/work).")]
    = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run the bot only (workers run elsewhere).")]
    = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the bot, a worker and (with no ATELIER_REDIS_URL) an embedded Redis on this box.

    Without ATELIER_DISCORD_TOKEN it says so and runs the worker, so the CLI can queue work
    (`atelier train … --queue`, `atelier generate … --queue`); notifications are printed.
    """
    options = worker_options(queues, work_dir, 0.05, 10, None)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc), as_json=False, code="settings") from None
    setup_logging(verbose)
    try:
        asyncio.run(run_all(settings, options, worker=not no_worker))
    except (RuntimeError, SettingsError) as exc:  # one-line startup errors (the bot's BotStartupError, …)
        raise fail(str(exc), as_json=False, code="startup") from None


async def run_all(settings: Settings, options: WorkerOptions, *, worker: bool = True) -> None:
    con = err_console()
    services = await build_services(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with redis_for(settings.resolved_redis_url, settings.data_dir) as url:
            if not settings.resolved_redis_url:
                con.print(f"[dim]embedded Redis: {url} (data in {settings.data_dir / 'redis'})[/]")
            await services.attach_jobs(url)
            parts: list[asyncio.Task[Any]] = []
            if worker:
                parts.append(asyncio.create_task(
                    run_worker(services, url, options, stop=stop, install_signal_handlers=False), name="worker"))
            if settings.discord_token is None:
                con.print("[yellow]No ATELIER_DISCORD_TOKEN set: running without Discord.[/] Queue work from the "
                          "CLI (`atelier train … --queue`, `atelier generate … --queue`); notifications print here.")
                pump = OutboxPump(services.db, ConsoleDeliverer(con), consumer_id=f"console:{options.worker_id}")
                parts.append(asyncio.create_task(pump.run(stop), name="outbox"))
            else:
                parts.append(asyncio.create_task(_bot(settings, services, con), name="bot"))
            if not parts:
                con.print("nothing to run: --no-worker and no Discord token")
                return
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([*parts, stopper], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            for t in parts:
                if t.get_name() == "bot" and not t.done():
                    t.cancel()
            results = await asyncio.gather(*parts, return_exceptions=True)
            stopper.cancel()
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await services.aclose()


async def _bot(settings: Settings, services: Services, con: Console) -> None:
    # The bot runs the outbox pump (Discord DMs); notifications of CLI users print here.
    await run_bot(settings, services, notification_fallback=ConsoleDeliverer(con))
