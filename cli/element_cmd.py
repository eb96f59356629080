"""``atelier element …`` — your Elements and the ones others share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    OUT_FLAGS,
    JsonOpt,
    YesOpt,
    confirm_delete,
    escape,
    out,
    print_json,
    run,
    wants_json,
)
from storage.export_privacy import SHARED_DOWNLOAD_NOTE

app = typer.Typer(no_args_is_help=True, help="Your trained Elements and shared ones: list, info, share, export.")

RefArg = Annotated[str, typer.Argument(help="Your Element's name, or #<id> for a shared one.")]


def _table(items) -> Table:
    table = Table("Ref", "Name", "Base", "Category", "Trigger", "Status", "Visibility", "Owner", "Uses")
    for e in items:
        table.add_row(e.ref, escape(e.name), e.base_model, e.category, escape(e.trigger_word), e.status,
                      e.visibility, escape(e.owner_name), str(e.usage_count))
    return table


@app.command("list")
def list_(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Your Elements (every status)."""
    as_json = wants_json(ctx, json)
    items = run(ctx, as_json, lambda s, a: s.elements.list_own(a))
    if as_json:
        return print_json({"ok": True, "elements": items})
    if not items:
        out().print("No Elements yet. Train one from a dataset.")
        return
    out().print(_table(items))


@app.command()
def info(ctx: typer.Context, ref: RefArg, json: JsonOpt = False) -> None:
    """Details of one Element."""
    as_json = wants_json(ctx, json)
    e = run(ctx, as_json, lambda s, a: s.elements.get(a, ref))
    if as_json:
        return print_json({"ok": True, "element": e})
    con = out()
    con.print(f"[bold]{escape(e.name)}[/] ({e.ref}) by {escape(e.owner_name)} — {e.category}, {e.base_model} "
              f"({e.base_family}), {e.status}, {e.visibility}")
    works = f" (works {e.strength_range[0]:g}–{e.strength_range[1]:g})" if e.strength_range else ""
    con.print(f"Trigger word: {escape(e.trigger_word)}   Recommended strength: {e.recommended_strength:g}{works}   "
              f"Trained on {e.image_count} images   Used {e.usage_count} times")
    if e.groups:
        con.print("Image groups: " + ", ".join(f"@{escape(str(g['name']))} ({escape(str(g.get('trigger') or '—'))})"
                                               for g in e.groups))
    if e.description:
        con.print(escape(e.description))


@app.command()
def browse(ctx: typer.Context,
           query: Annotated[str | None, typer.Option("--query", "-q", help="Search names, triggers, descriptions.")] = None,
           base_model: Annotated[str | None, typer.Option("--base-model", "-b")] = None,
           page: Annotated[int, typer.Option("--page", "-p", min=1)] = 1,
           json: JsonOpt = False) -> None:
    """Elements others have shared publicly, most used first."""
    as_json = wants_json(ctx, json)
    result = run(ctx, as_json, lambda s, a: s.elements.browse(a, query=query, base_model=base_model, page=page - 1))
    if as_json:
        return print_json({"ok": True, "page": result.page + 1, "pages": result.pages, "total": result.total,
                           "elements": result.items})
    if not result.items:
        out().print("Nothing shared matches.")
        return
    out().print(_table(result.items))
    out().print(f"Page {result.page + 1} of {result.pages} ({result.total} Elements).")


@app.command()
def share(ctx: typer.Context, ref: RefArg,
          visibility: Annotated[str, typer.Argument(help="private | server | public")],
          guild: Annotated[str | None, typer.Option("--guild", help="Server id (for server visibility).")] = None,
          json: JsonOpt = False) -> None:
    """Change who can use an Element of yours."""
    as_json = wants_json(ctx, json)
    e = run(ctx, as_json, lambda s, a: s.elements.share(a, ref, visibility, guild))
    if as_json:
        return print_json({"ok": True, "element": e})

    note = f" {SHARED_DOWNLOAD_NOTE}" if e.visibility != "private" else ""
    out().print(f"“{escape(e.name)}” is now {e.visibility}.{escape(note)}")


@app.command()
def delete(ctx: typer.Context, ref: RefArg, yes: YesOpt = False, json: JsonOpt = False) -> None:
    """Delete an Element of yours (its weights go too)."""
    as_json = wants_json(ctx, json)
    confirm_delete(f"Delete Element “{ref}”?", yes=yes, as_json=as_json)
    e = run(ctx, as_json, lambda s, a: s.elements.delete(a, ref))
    if as_json:
        return print_json({"ok": True, "deleted": e})
    out().print(f"Deleted “{escape(e.name)}”.")


@app.command()
def export(ctx: typer.Context, ref: RefArg,
           output: Annotated[Path, typer.Option(*OUT_FLAGS, file_okay=False, help="Folder to write into.")]
           = Path("."),
           json: JsonOpt = False) -> None:
    """Write the A1111/ComfyUI (kohya) .safetensors and element.json of an Element."""
    as_json = wants_json(ctx, json)
    bundle = run(ctx, as_json, lambda s, a: s.elements.export(a, ref))
    output.mkdir(parents=True, exist_ok=True)
    weights, meta = output / bundle.filename, output / bundle.json_filename
    weights.write_bytes(bundle.kohya)
    meta.write_bytes(bundle.element_json)
    if as_json:
        return print_json({"ok": True, "weights": str(weights), "metadata": str(meta)})
    out().print(f"Wrote {weights} and {meta}.")
