"""``atelier db …`` — schema migrations."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cli.common import JsonOpt, fail, out, print_json, wants_json
from storage.db.engine import Database, make_revision
from storage.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, help="Database schema (migrations).")


def _database():
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc), as_json=False, code="settings") from None
    return Database(settings.resolved_database_url)


@app.command()
def upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument()] = "head", json: JsonOpt = False) -> None:
    """Apply migrations (start-up does this automatically)."""
    db = _database()

    async def go() -> tuple[str | None, str | None]:
        try:
            before = await db.current_revision()
            await db.upgrade(revision)
            return before, await db.current_revision()
        finally:
            await db.dispose()

    before, after = asyncio.run(go())
    if wants_json(ctx, json):
        return print_json({"ok": True, "database": repr(db), "from": before, "to": after})
    out().print(f"Database at revision {after} (was {before or 'empty'}).")


@app.command()
def current(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Show the schema revision of the configured database."""
    db = _database()

    async def go() -> str | None:
        try:
            return await db.current_revision()
        finally:
            await db.dispose()

    rev = asyncio.run(go())
    if wants_json(ctx, json):
        return print_json({"ok": True, "database": repr(db), "revision": rev})
    out().print(rev or "empty (run: atelier db upgrade)")


@app.command()
def revision(message: Annotated[str, typer.Option("--message", "-m")],
             empty: Annotated[bool, typer.Option("--empty", help="No autogenerate.")] = False) -> None:
    """Developers: write a new migration from the difference between the models and the database."""
    make_revision(_database(), message, autogenerate=not empty)
