"""``atelier generate PROMPT`` — generate with up to four Elements, here or through the queue; writes PNGs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import OUT_FLAGS, JsonOpt, fail, out, print_json, wants_json
from cli.jobs_cmd import follow_job, report, run_jobs, warn_if_no_worker
from trainer.prompting import MAX_LORAS
from worker.app import WorkerApp
from worker.generate_job import execute_generation
from worker.settings import WorkerOptions

if TYPE_CHECKING:
    from storage.actors import Actor
    from storage.job_views import JobInfo

app = typer.Typer(add_completion=False)
Opt = typer.Option
_SIZE = re.compile(r"^(\d{1,5})[xX×](\d{1,5})$")


def parse_element(ref: str) -> tuple[str, float | None]:
    """``NAME``, ``NAME:STRENGTH``, ``NAME:STRENGTH@GROUP`` or ``NAME@GROUP:STRENGTH`` (the part after the last colon
    must be a number to count as a strength); the group stays on the name as ``NAME@GROUP`` for storage."""
    m = re.fullmatch(r"(.+):\s*([0-9.]+)\s*@([\w-]{1,40})", ref.strip())
    if m:
        try:
            return f"{m.group(1).strip()}@{m.group(3)}", float(m.group(2))
        except ValueError:
            pass
    name, sep, tail = ref.rpartition(":")
    if sep and name.strip():
        try:
            return name.strip(), float(tail)
        except ValueError:
            pass
    return ref.strip(), None


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None:
        return None, None
    m = _SIZE.match(size.strip())
    if not m:
        raise fail(f"--size {size!r} is not WIDTHxHEIGHT", as_json=False, code="invalid", hint="e.g. --size 768x1024")
    return int(m.group(1)), int(m.group(2))


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to generate.")],
    element: Annotated[list[str], Opt("--element", "-e", help=f"NAME[:STRENGTH][@GROUP] (up to {MAX_LORAS}; #id for shared ones).")]
    = [],  # noqa: B006 — typer needs a list
    out_dir: Annotated[Path, Opt(*OUT_FLAGS, help="Folder for the PNG files.")] = Path("."),
    negative: Annotated[str, Opt("--negative", help="Negative prompt (not used by Flux).")] = "",
    seed: Annotated[int | None, Opt(help="Seed (random when left out; printed).")] = None,
    count: Annotated[int, Opt("--count", "-n", min=1, max=4)] = 1,
    size: Annotated[str | None, Opt(help="WIDTHxHEIGHT (overrides --aspect).")] = None,
    aspect: Annotated[str | None, Opt(help="1:1 | 3:4 | 4:3 | 16:9 | 9:16")] = None,
    steps: Annotated[int | None, Opt()] = None,
    guidance: Annotated[float | None, Opt()] = None,
    hires: Annotated[bool, Opt("--hires", help="A second pass at twice the size for detail.")] = False,
    base: Annotated[str | None, Opt("--base", "-b", help="Base model (default: the Elements' own, else "
                                                         "ATELIER_DEFAULT_BASE_MODEL).")] = None,
    queue: Annotated[bool, Opt("--queue", help="Queue it for a worker instead of generating here.")] = False,
    wait: Annotated[bool, Opt("--wait", help="With --queue: wait for the images.")] = False,
    json: JsonOpt = False,
) -> None:
    """Generate images and write them as PNG files; prints their paths."""
    as_json = wants_json(ctx, json)
    if len(element) > MAX_LORAS:  # before opening the database; the use case checks the same rule
        raise fail(f"{len(element)} Elements given; at most {MAX_LORAS} can be combined.", as_json=as_json,
                   code="invalid")
    refs = [parse_element(e) for e in element]
    width, height = parse_size(size)

    async def go(services: Any, actor: Actor) -> tuple[JobInfo, list[Path]]:
        info = await services.jobs.request_generation(
            actor, prompt=prompt, elements=refs, base_model=base, negative_prompt=negative, seed=seed, count=count,
            steps=steps, guidance=guidance, aspect=aspect, width=width, height=height, hires=hires,
            origin={"cli": True})
        if queue:
            await warn_if_no_worker(services, "generate")
            if not wait:
                return info, []
            final = await follow_job(services, actor, info.id, quiet=as_json)
        else:
            final = await generate_here(services, actor, info)
        return final, await write_images(services, final, out_dir) if final.status == "succeeded" else []

    final, paths = run_jobs(ctx, as_json, go, redis=queue)
    if not final.finished:
        if as_json:
            return print_json({"ok": True, "job": final})
        out().print(f"queued as job {final.id}; follow it with `atelier jobs show {final.id} --wait`")
        return
    report(final, as_json=as_json, extra={"files": [str(p) for p in paths]})
    if not as_json and final.status == "succeeded":
        for w in final.result.get("warnings", []):
            out().print(f"[yellow]warning:[/] {w}")
        out().print(f"seed {final.result.get('seed')}")
        for p in paths:
            out().print(str(p))


async def generate_here(services: Any, actor: Actor, info: JobInfo) -> JobInfo:
    """Run the worker's generation job body in this process (one code path)."""
    app = WorkerApp(services, WorkerOptions(queues=("generate",)), enqueuer=None)
    try:
        outcome = await execute_generation(app, info.id, 0)
    finally:
        app.close()
    if outcome == "skipped":
        return await follow_job(services, actor, info.id, quiet=True)
    return await services.jobs.get(actor, info.id)


async def write_images(services: Any, info: JobInfo, folder: Path) -> list[Path]:

    seeds = info.result.get("seeds") or []
    paths = []
    for k, h in enumerate(info.images):
        data = await services.blobs.get_bytes(h)
        seed_part = f"-seed{seeds[k]}" if k < len(seeds) else ""
        path = folder / f"atelier-{info.generation_id}-{k + 1}{seed_part}.png"
        await asyncio.to_thread(_write, path, data)
        paths.append(path.resolve())
    return paths


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
