"""Shared CLI plumbing: acting user, --json output, one error path (AtelierError → one line, exit 1)."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape as _escape

from cli.state import CliState
from storage.actors import Actor
from storage.errors import AtelierError
from storage.queue.embedded_redis import redis_for
from storage.redact import mask_urls
from storage.services import Services, build_services
from storage.settings import SettingsError, load_settings

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
# Where a command writes its file(s): one spelling for every command, ``--output`` accepted as an alias.
OUT_FLAGS = ("--out", "--output", "-o")


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()


def wants_json(ctx: typer.Context, flag: bool = False) -> bool:
    return flag or state(ctx).json


def out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, datetimes and paths → JSON types (bytes are left out: they go to files)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), bytes | bytearray)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(data), ensure_ascii=False, indent=2) + "\n")


def fail(message: str, *, as_json: bool, code: str = "error", hint: str = "") -> typer.Exit:
    """Report a user error in one line (or as JSON) and return the exit to raise (URL passwords masked)."""
    message, hint = mask_urls(message), mask_urls(hint)
    if as_json:
        print_json({"ok": False, "error": {"code": code, "message": message, "hint": hint}})
    else:
        text = f"{message} {hint}".strip()
        err_console().print(f"[bold red]error:[/] {text}", markup=True, highlight=False)
    return typer.Exit(1)


def confirm_delete(question: str, *, yes: bool, as_json: bool) -> None:
    """Ask ``question`` before deleting unless ``--yes``; with --json there is no one to ask, so --yes is needed."""
    if yes:
        return
    if as_json:
        raise fail("Deleting needs --yes in --json mode.", as_json=True, code="invalid")
    typer.confirm(question, abort=True)


def run(ctx: typer.Context, as_json: bool, fn: Callable[[Services, Actor], Awaitable[T]], *,
        jobs: Literal["none", "local", "queue"] = "none") -> T:
    """Build the services, act as the selected local user, run ``fn``, close everything.

    ``jobs``: "local" attaches ``services.jobs`` without a queue (rows stay queued for a worker to pick up);
    "queue" connects it to Redis too (the configured one, or the embedded one a local ``atelier run`` shares).
    Domain errors (and invalid settings) become a one-line message and exit code 1.
    """
    async def go() -> T:
        settings = load_settings()
        services = await build_services(settings)
        try:
            actor = await services.users.local_actor(state(ctx).user)
            if jobs == "none":  # dataset/element commands: no job machinery to connect
                return await fn(services, actor)
            if jobs == "local":
                await services.attach_jobs(None)
                return await fn(services, actor)
            async with redis_for(settings.resolved_redis_url, settings.data_dir) as url:
                await services.attach_jobs(url)
                return await fn(services, actor)
        finally:
            await services.aclose()

    try:
        return asyncio.run(go())
    except AtelierError as exc:
        raise fail(exc.message, as_json=as_json, code=exc.code, hint=exc.hint) from None
    except SettingsError as exc:
        raise fail(str(exc), as_json=as_json, code="settings") from None


def escape(text: str) -> str:
    """User text shown through rich: never interpreted as markup."""
    return _escape(text)
