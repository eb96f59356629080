"""``atelier demo`` — the whole train → export → generate path offline on the tiny built-in SD1.5."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import OUT_FLAGS, JsonOpt, err_console, escape, fail, out, print_json, wants_json
from storage.settings import SettingsError, load_settings
from trainer.demo import run_demo

app = typer.Typer(help="Offline demo: train a tiny Element on a synthetic dataset and render a strength grid.")


@app.command()
def demo(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option(*OUT_FLAGS, help="Where to write the grid and the export bundle.")]
    = Path("atelier-demo"),
    as_json: JsonOpt = False,
) -> None:
    """Make a synthetic dataset, train a tiny-sd15 Element for a few epochs, generate the same prompt and seeds
    at strengths 0, 0.5 and 1.0, and write a labelled grid PNG plus the export bundle. Works offline."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn


    as_json = wants_json(ctx, as_json)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc), as_json=as_json, code="settings") from None
    _quiet_model_libraries()

    started = time.monotonic()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                   console=err_console(), transient=False, disable=as_json)
    with bar:
        task = bar.add_task("building tiny models…", total=1.0)

        def on_progress(event: Any) -> None:
            text = f"{event.phase} · epoch {event.epoch}/{event.total_epochs}"
            if event.loss is not None:
                text += f" · loss {event.loss:.4f}"
            done = event.step / event.total_steps if event.total_steps else 0.0
            bar.update(task, completed=min(done, 1.0) * 0.9, description=text)

        result = run_demo(out_dir.resolve(), settings.resolved_models_dir, progress=on_progress)
        bar.update(task, completed=1.0, description="done")
    result["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        print_json(result)
        return
    con = out()
    con.print(f"[bold green]Demo finished[/] in {result['seconds']} s ({result['steps']} training steps).")
    con.print(f"  strength grid (0 / 0.5 / 1.0): {escape(str(result['grid']))}")
    con.print(f"  epoch × strength grid:          {escape(str(result['train_grid']))}")
    con.print(f"  loss curve:                     {escape(str(result['loss_curve']))}")
    con.print(f"  LoRA (diffusers):               {escape(str(result['lora_diffusers']))}")
    con.print(f"  LoRA (kohya/A1111/ComfyUI):     {escape(str(result['lora_kohya']))}")
    con.print(f"  element.json:                   {escape(str(result['element_json']))}")
    con.print("Next: put your own images in a dataset with `atelier dataset create/add`, then `atelier train`.")


def _quiet_model_libraries() -> None:
    """diffusers/transformers print their own progress bars and load notes; the demo shows one bar instead."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
