"""``atelier dataset …`` — the dataset use cases from a terminal."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.common import (
    OUT_FLAGS,
    JsonOpt,
    YesOpt,
    confirm_delete,
    err_console,
    escape,
    fail,
    out,
    print_json,
    run,
    wants_json,
)
from storage.dataset_views import IncomingFile
from storage.settings import load_settings
from storage.wording import plural

if TYPE_CHECKING:
    from storage.dataset_views import AddReport, IncomingFile

app = typer.Typer(no_args_is_help=True, help="Create datasets and add, caption, check and export their images.")

NameArg = Annotated[str, typer.Argument(help="Dataset name (case-insensitive).")]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "dataset"


@app.command()
def create(ctx: typer.Context, name: NameArg,
           description: Annotated[str, typer.Option("--description", "-d")] = "", json: JsonOpt = False) -> None:
    """Create an empty dataset."""
    as_json = wants_json(ctx, json)
    info = run(ctx, as_json, lambda s, a: s.datasets.create(a, name, description))
    if as_json:
        return print_json({"ok": True, "dataset": info})
    out().print(f"Created dataset “{escape(info.name)}”. Add images with: atelier dataset add {_quote(info.name)} FILES…")


def _quote(s: str) -> str:
    return f'"{s}"' if re.search(r"\s", s) else s


@app.command("list")
def list_(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Your datasets, and the storage they use against your quota."""
    as_json = wants_json(ctx, json)

    async def go(s, a):
        return await s.datasets.list(a), await s.datasets.storage_use(a)

    infos, storage = run(ctx, as_json, go)
    if as_json:
        return print_json({"ok": True, "datasets": infos,
                           "storage": {"used_bytes": storage.used, "limit_bytes": storage.limit}})
    if not infos:
        out().print("No datasets yet. Create one with: atelier dataset create NAME")
    else:
        table = Table("Name", "Images", "Updated", "Description")
        for i in infos:
            table.add_row(escape(i.name), str(i.image_count), f"{i.updated_at:%Y-%m-%d %H:%M}",
                          escape(i.description[:60]))
        out().print(table)
    out().print(f"Storage: {storage.text()} used.")


@app.command()
def show(ctx: typer.Context, name: NameArg, json: JsonOpt = False) -> None:
    """A dataset's images (number, size, caption) and how it fits each base family's limits."""
    as_json = wants_json(ctx, json)

    async def go(s, a):
        info = await s.datasets.get(a, name)
        return info, s.datasets.counts_vs_limits(info)

    info, limits = run(ctx, as_json, go)
    if as_json:
        return print_json({"ok": True, "dataset": info, "limits": {k: {"count": c, "max": m} for k, (c, m) in limits.items()}})
    con = out()
    con.print(f"[bold]{escape(info.name)}[/] — {info.image_count} images. {escape(info.description)}")
    table = Table("#", "Size", "Source", "File", "Group", "Caption")
    for img in info.images or []:
        table.add_row(str(img.index), f"{img.width}×{img.height}", img.source, escape(img.original_name),
                      escape(img.group), escape(img.caption[:80]))
    con.print(table)
    con.print("Limits: " + ", ".join(f"{fam} {c}/{m}" for fam, (c, m) in limits.items()))
    for g in info.groups:
        con.print(f"Group [bold]{escape(g.name)}[/]: {g.image_count} images, trigger “{escape(g.trigger)}”, "
                  f"repeats {g.repeats if g.repeats else 'balanced'}")


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given; a folder contributes its files (not recursive; hidden files and .txt captions skipped)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(c for c in p.iterdir() if c.is_file() and not c.name.startswith(".")
                            and c.suffix.lower() != ".txt")
        else:
            found.append(p)
    return found


def _read_files(paths: list[Path], caption: str | None, max_bytes: int) -> tuple[list[IncomingFile], list[dict]]:
    files, problems = [], []
    for p in _expand(paths):
        if not p.is_file():
            problems.append({"filename": p.name, "status": "refused", "reason": "No such file."})
            continue
        if p.stat().st_size > max_bytes:
            problems.append({"filename": p.name, "status": "refused",
                             "reason": f"The file is too large ({p.stat().st_size / 2**20:.1f} MB; "
                                       f"the limit is {max_bytes / 2**20:.1f} MB)."})
            continue
        text = caption
        sidecar = p.with_suffix(".txt")
        if text is None and sidecar.is_file():  # kohya-style caption file next to the image
            text = sidecar.read_text(encoding="utf-8", errors="replace")
        files.append(IncomingFile(p.name, p.read_bytes(), text))
    return files, problems


def _progress_run(ctx: typer.Context, as_json: bool, label: str, call):
    """Run ``call(services, actor, on_progress)`` with a progress bar on stderr (not in --json mode)."""
    if as_json:
        return run(ctx, as_json, lambda s, a: call(s, a, None))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console(), transient=True) as bar:
        task = bar.add_task(label, total=None)
        return run(ctx, as_json, lambda s, a: call(s, a, lambda done, total: bar.update(task, completed=done,
                                                                                        total=total)))


def _report(report: AddReport, extra: list[dict], as_json: bool) -> None:
    rows = [{"filename": f.filename, "status": f.status, "index": f.index, "reason": f.reason, "hint": f.hint,
             "warnings": f.warnings, "code": f.code} for f in report.files] + extra
    added = sum(1 for r in rows if r["status"] == "added")
    if as_json:
        print_json({"ok": added > 0 or not rows, "dataset": report.dataset, "added": added,
                    "refused": len(rows) - added, "image_count": report.image_count, "files": rows})
    else:
        con = out()
        for r in rows:
            if r["status"] == "added":
                warn = f" [yellow]({escape('; '.join(r['warnings']))})[/]" if r.get("warnings") else ""
                con.print(f"[green]added[/]   #{r['index']:<3} {escape(r['filename'])}{warn}")
            else:
                hint = f" {escape(r['hint'])}" if r.get("hint") else ""
                con.print(f"[red]refused[/]      {escape(r['filename'])}: {escape(r['reason'])}{hint}")
        con.print(f"{added} added, {len(rows) - added} refused; “{escape(report.dataset)}” has "
                  f"{plural(report.image_count, 'image')}.")
    if rows and added == 0:
        raise typer.Exit(1)


@app.command()
def add(ctx: typer.Context, name: NameArg,
        files: Annotated[list[Path], typer.Argument(help="Image files or folders (a NAME.txt beside an image is its caption).")],
        caption: Annotated[str | None, typer.Option("--caption", "-c", help="Caption for every file added.")] = None,
        json: JsonOpt = False) -> None:
    """Add images; each file is listed as added (with its number) or refused (with the reason). Exit 1 if none was added."""
    as_json = wants_json(ctx, json)
    incoming, problems = _read_files(files, caption, load_settings().max_upload_bytes)
    report = _progress_run(ctx, as_json, "Adding images",
                           lambda s, a, p: s.datasets.add_images(a, name, incoming, on_progress=p))
    _report(report, problems, as_json)


@app.command("import")
def import_(ctx: typer.Context, name: NameArg,
            archive: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".zip of images (+ .txt captions).")],
            create: Annotated[bool, typer.Option("--create", help="Create the dataset if it does not exist.")] = False,
            json: JsonOpt = False) -> None:
    """Import a .zip of images; a same-named .txt beside an image is its caption (kohya style)."""
    as_json = wants_json(ctx, json)

    async def call(s, a, progress):
        if create and not any(d.name.casefold() == name.strip().casefold() for d in await s.datasets.list(a)):
            await s.datasets.create(a, name)
        return await s.datasets.import_zip(a, name, archive, on_progress=progress)

    _report(_progress_run(ctx, as_json, "Importing", call), [], as_json)


@app.command()
def remove(ctx: typer.Context, name: NameArg,
           indices: Annotated[list[str], typer.Argument(help="Image numbers: 3  2,5,7  4-9")], json: JsonOpt = False) -> None:
    """Remove images by number; the remaining ones are renumbered."""
    as_json = wants_json(ctx, json)
    try:
        wanted = _parse_indices(indices)
    except ValueError as exc:
        raise fail(str(exc), as_json=as_json, code="invalid", hint="Use numbers like 3, 2,5,7 or 4-9.") from None
    removed = run(ctx, as_json, lambda s, a: s.datasets.remove_images(a, name, wanted))
    if as_json:
        return print_json({"ok": True, "removed": removed})
    out().print(f"Removed {plural(len(removed), 'image')}: "
                + ", ".join(f"#{r.index}" for r in removed) + ". The others were renumbered.")


def _parse_indices(parts: list[str]) -> list[int]:
    found: list[int] = []
    for part in ",".join(parts).split(","):
        part = part.strip().lstrip("#")
        if not part:
            continue
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo > 1000:
                raise ValueError(f"“{part}” is not a valid range.")
            found += range(lo, hi + 1)
        elif part.isdigit():
            found.append(int(part))
        else:
            raise ValueError(f"“{part}” is not an image number.")
    return found


@app.command()
def group(ctx: typer.Context, name: NameArg,
          group_name: Annotated[str, typer.Argument(metavar="GROUP", help="Group name, e.g. outfit2.")],
          indices: Annotated[list[str] | None, typer.Argument(help="Images to put in it: 3  2,5,7  4-9")] = None,
          trigger: Annotated[str | None, typer.Option("--trigger", "-t",
                                                      help="The group's trigger or class word.")] = None,
          repeats: Annotated[int | None, typer.Option("--repeats", help="Fixed repeats (default: balanced).")] = None,
          balanced: Annotated[bool, typer.Option("--balanced", help="Back to balanced repeats.")] = False,
          remove_: Annotated[bool, typer.Option("--remove", help="Delete the group (its images stay).")] = False,
          json: JsonOpt = False) -> None:
    """Put images into a named group with its own trigger word and repeats (multi-concept datasets)."""
    as_json = wants_json(ctx, json)
    if remove_:
        info = run(ctx, as_json, lambda s, a: s.datasets.remove_group(a, name, group_name))
        if as_json:
            return print_json({"ok": True, "removed": info})
        out().print(f"Removed group “{escape(info.name)}”; its {info.image_count} images are in no group now.")
        return
    try:
        wanted = _parse_indices(indices or [])
    except ValueError as exc:
        raise fail(str(exc), as_json=as_json, code="invalid", hint="Use numbers like 3, 2,5,7 or 4-9.") from None
    info = run(ctx, as_json, lambda s, a: s.datasets.set_group(a, name, group_name, wanted, trigger=trigger,
                                                               repeats=repeats, auto_repeats=balanced))
    if as_json:
        return print_json({"ok": True, "group": info})
    out().print(f"Group “{escape(info.name)}”: {info.image_count} images, trigger “{escape(info.trigger)}”, "
                f"repeats {info.repeats if info.repeats else 'balanced'}.")


@app.command()
def caption(ctx: typer.Context, name: NameArg, index: Annotated[int, typer.Argument(help="Image number.")],
            text: Annotated[str, typer.Argument(help="The caption ('' to clear).")], json: JsonOpt = False) -> None:
    """Set one image's caption."""
    as_json = wants_json(ctx, json)
    img = run(ctx, as_json, lambda s, a: s.datasets.set_caption(a, name, index, text))
    if as_json:
        return print_json({"ok": True, "image": img})
    out().print(f"#{img.index}: {escape(img.caption) or '(no caption)'}")


@app.command()
def rename(ctx: typer.Context, name: NameArg, new_name: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """Rename a dataset."""
    as_json = wants_json(ctx, json)
    info = run(ctx, as_json, lambda s, a: s.datasets.rename(a, name, new_name))
    if as_json:
        return print_json({"ok": True, "dataset": info})
    out().print(f"Renamed to “{escape(info.name)}”.")


@app.command()
def delete(ctx: typer.Context, name: NameArg, yes: YesOpt = False, json: JsonOpt = False) -> None:
    """Delete a dataset (Elements trained on it keep working)."""
    as_json = wants_json(ctx, json)
    confirm_delete(f"Delete dataset “{name}” and its images?", yes=yes, as_json=as_json)
    info = run(ctx, as_json, lambda s, a: s.datasets.delete(a, name))
    if as_json:
        return print_json({"ok": True, "deleted": info})
    out().print(f"Deleted “{escape(info.name)}” ({plural(info.image_count, 'image')}).")


@app.command()
def export(ctx: typer.Context, name: NameArg,
           output: Annotated[Path | None, typer.Option(*OUT_FLAGS, help="Where to write the .zip.")] = None,
           json: JsonOpt = False) -> None:
    """Export as a .zip of the images with .txt captions (what `dataset import` reads)."""
    as_json = wants_json(ctx, json)

    async def go(s, a):

        info = await s.datasets.get(a, name)
        path = output or Path(f"{_slug(info.name)}.zip")
        async with s.datasets.export_zip(a, name) as built:  # streamed to a temp file, then copied
            await asyncio.to_thread(shutil.copyfile, built, path)
        return info, path

    info, path = run(ctx, as_json, go)
    size = path.stat().st_size
    if as_json:
        return print_json({"ok": True, "path": str(path), "bytes": size, "images": info.image_count})
    out().print(f"Wrote {path} ({info.image_count} images, {size / 2**20:.1f} MB).")


@app.command()
def lint(ctx: typer.Context, name: NameArg,
         category: Annotated[str | None, typer.Option("--category", help="style|character|object|concept")] = None,
         base_model: Annotated[str | None, typer.Option("--base", "--base-model", "-b", help="e.g. flux-dev, sdxl")] = None,
         json: JsonOpt = False) -> None:
    """Check a dataset before training: duplicates, resolution, aspect ratios, image counts."""
    as_json = wants_json(ctx, json)
    findings = run(ctx, as_json, lambda s, a: s.datasets.lint(a, name, category=category, base_model=base_model))
    if as_json:
        return print_json({"ok": True, "findings": findings})
    if not findings:
        out().print("No problems found.")
        return
    colors = {"error": "red", "warning": "yellow", "info": "cyan"}
    for f in findings:
        out().print(f"[{colors.get(f.severity, 'white')}]{f.severity}[/] {escape(f.message)} {escape(f.hint)}")


@app.command()
def sheet(ctx: typer.Context, name: NameArg,
          output: Annotated[Path | None, typer.Option(*OUT_FLAGS, help="Where to write the PNG.")] = None,
          json: JsonOpt = False) -> None:
    """Render a contact sheet (numbered thumbnails) as a PNG."""
    as_json = wants_json(ctx, json)

    async def go(s, a):
        info = await s.datasets.get(a, name)
        return info, await s.datasets.contact_sheet(a, name)

    info, data = run(ctx, as_json, go)
    path = output or Path(f"{_slug(info.name)}-sheet.png")
    path.write_bytes(data)
    if as_json:
        return print_json({"ok": True, "path": str(path), "bytes": len(data), "images": info.image_count})
    out().print(f"Wrote {path}.")
