"""``atelier bot`` — the Discord front end on its own (the scale-out case: workers run with ``atelier worker``).

Builds the services, connects the job queue (the embedded Redis when ``ATELIER_REDIS_URL`` is unset), and runs
the bot; the bot delivers job notifications itself (outbox pump + Discord deliverer, see bot/delivery_loop.py).
Notifications of non-Discord users (jobs queued from the CLI) are printed here.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from bot.app import discord_token, run_bot
from cli.common import err_console, fail
from cli.worker_cmd import setup_logging
from storage.queue.embedded_redis import redis_for
from storage.queue.outbox import ConsoleDeliverer
from storage.services import build_services
from storage.settings import Settings, SettingsError, load_settings

app = typer.Typer(add_completion=False)


@app.command()
def bot(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
        sync: Annotated[bool, typer.Option(
            "--sync", help="Register the slash commands with Discord even if they did not change (they are "
                           "otherwise synced only when their definitions changed).")] = False) -> None:
    """Run the Discord bot until Ctrl-C (needs ATELIER_DISCORD_TOKEN; workers run with `atelier worker`)."""
    try:
        settings = load_settings()
        discord_token(settings)  # a missing token is a one-line error before anything starts
    except SettingsError as exc:
        raise fail(str(exc), as_json=False, code="settings") from None
    setup_logging(verbose)
    try:
        asyncio.run(serve(settings, force_sync=sync))
    except KeyboardInterrupt:
        pass
    except (RuntimeError, SettingsError) as exc:  # BotStartupError (wrong token, …), embedded Redis problems
        raise fail(str(exc), as_json=False, code="startup") from None
    except OSError as exc:  # aiohttp's connection errors are OSErrors: Discord (or the proxy) is unreachable
        where = settings.discord_api_base or "discord.com"
        raise fail(f"cannot reach Discord at {where}: {exc}", as_json=False, code="startup",
                   hint="Check the network (and ATELIER_DISCORD_API_BASE / ATELIER_DISCORD_GATEWAY_URL if set).") \
            from None


async def serve(settings: Settings, *, force_sync: bool = False) -> None:
    con = err_console()
    services = await build_services(settings)
    try:
        async with redis_for(settings.resolved_redis_url, settings.data_dir) as url:
            if not settings.resolved_redis_url:
                con.print(f"[dim]no ATELIER_REDIS_URL: using the embedded Redis at {url}[/]")
            await services.attach_jobs(url)
            await run_bot(settings, services, notification_fallback=ConsoleDeliverer(con), force_sync=force_sync)
    finally:
        await services.aclose()
