"""``atelier train DATASET`` — train an Element here (the worker's job body, in-process) or through the queue."""

from __future__ import annotations

import asyncio
import json as jsonlib
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import JsonOpt, err_console, escape, fail, out, print_json, wants_json
from cli.jobs_cmd import describe, follow_job, new_progress, report, run_jobs, warn_if_no_worker
from storage.training_preview import preview_training
from worker.app import WorkerApp
from worker.settings import WorkerOptions
from worker.train_job import execute_training

if TYPE_CHECKING:
    from storage.actors import Actor
    from storage.job_views import JobInfo
    from storage.training_preview import TrainingPreview

app = typer.Typer(add_completion=False)

Opt = typer.Option
ADV = "Advanced (default: the category preset)"


def _overrides(values: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    """Options the user set (None = preset) plus ``--set key=value`` pairs (values parsed as JSON if they can)."""
    overrides = {k: v for k, v in values.items() if v is not None and v != []}
    for item in extra:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set {item!r} is not KEY=VALUE", as_json=False, code="invalid",
                       hint="For example --set noise_offset=0.05")
        try:
            overrides[key.strip()] = jsonlib.loads(raw)
        except ValueError:
            overrides[key.strip()] = raw
    return overrides


@app.command()
def train(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Your dataset to train on.")],
    name: Annotated[str | None, Opt("--name", "-n", help="Name of the new Element.")] = None,
    trigger: Annotated[str | None, Opt("--trigger", "-t", help="A rare made-up word that calls the Element up.")
                       ] = None,
    category: Annotated[str, Opt("--category", "-c", help="style | character | object | concept")] = "character",
    base: Annotated[str | None, Opt("--base", "-b", help="Base model (default ATELIER_DEFAULT_BASE_MODEL).")] = None,
    description: Annotated[str, Opt("--description", "-d")] = "",
    epochs: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    repeats: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    batch_size: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    lr: Annotated[float | None, Opt("--lr", help="UNet/transformer learning rate.", rich_help_panel=ADV)] = None,
    te_lr: Annotated[float | None, Opt("--te-lr", help="Text encoder learning rate.", rich_help_panel=ADV)] = None,
    rank: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    alpha: Annotated[float | None, Opt(rich_help_panel=ADV)] = None,
    dora: Annotated[bool | None, Opt("--dora/--no-dora", rich_help_panel=ADV)] = None,
    train_text_encoder: Annotated[bool | None, Opt("--train-text-encoder/--no-train-text-encoder",
                                                   rich_help_panel=ADV)] = None,
    optimizer: Annotated[str | None, Opt(help="adamw | adamw8bit | prodigy", rich_help_panel=ADV)] = None,
    scheduler: Annotated[str | None, Opt(help="constant | cosine | cosine_with_restarts",
                                         rich_help_panel=ADV)] = None,
    warmup_steps: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    min_snr_gamma: Annotated[float | None, Opt(rich_help_panel=ADV)] = None,
    noise_offset: Annotated[float | None, Opt(rich_help_panel=ADV)] = None,
    resolution: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    bucketing: Annotated[bool | None, Opt("--bucketing/--no-bucketing", rich_help_panel=ADV)] = None,
    shuffle_captions: Annotated[bool | None, Opt("--shuffle-captions/--no-shuffle-captions",
                                                 rich_help_panel=ADV)] = None,
    keep_tokens: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    caption_dropout: Annotated[float | None, Opt(rich_help_panel=ADV)] = None,
    seed: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    precision: Annotated[str | None, Opt(help="no | bf16 | fp16", rich_help_panel=ADV)] = None,
    gradient_checkpointing: Annotated[bool | None, Opt("--gradient-checkpointing/--no-gradient-checkpointing",
                                                       rich_help_panel=ADV)] = None,
    save_every: Annotated[int | None, Opt(help="Keep weights every N epochs.", rich_help_panel=ADV)] = None,
    sample_every: Annotated[int | None, Opt(help="Sample images every N epochs.", rich_help_panel=ADV)] = None,
    sample_prompt: Annotated[list[str], Opt(help="Sample prompt ({trigger} is replaced); repeatable.",
                                            rich_help_panel=ADV)] = [],  # noqa: B006 — typer needs a list
    sample_steps: Annotated[int | None, Opt(rich_help_panel=ADV)] = None,
    targets: Annotated[str | None, Opt(help="full (kohya parity, default) | attention", rich_help_panel=ADV)] = None,
    memory_mode: Annotated[str | None, Opt(help="auto | bf16 | fp8 | int8 | nf4 (GPU memory of the frozen "
                                                "base; auto = fastest that fits)", rich_help_panel=ADV)] = None,
    set_: Annotated[list[str], Opt("--set", help="Any other training option as KEY=VALUE; repeatable.",
                                   rich_help_panel=ADV)] = [],  # noqa: B006
    queue: Annotated[bool, Opt("--queue", help="Queue it for a worker instead of training here.")] = False,
    wait: Annotated[bool, Opt("--wait", help="With --queue: follow the job until it ends.")] = False,
    plan: Annotated[bool, Opt("--plan", help="Print the plan (steps, time, GPU memory) and stop.")] = False,
    json: JsonOpt = False,
) -> None:
    """Train an Element from one of your datasets and register it."""
    as_json = wants_json(ctx, json)
    overrides = _overrides(dict(
        epochs=epochs, repeats=repeats, batch_size=batch_size, learning_rate=lr, text_encoder_lr=te_lr, rank=rank,
        alpha=alpha, use_dora=dora, train_text_encoder=train_text_encoder, optimizer=optimizer,
        lr_scheduler=scheduler, lr_warmup_steps=warmup_steps, min_snr_gamma=min_snr_gamma,
        noise_offset=noise_offset, resolution=resolution, bucketing=bucketing, shuffle_captions=shuffle_captions,
        keep_tokens=keep_tokens, caption_dropout=caption_dropout, seed=seed, mixed_precision=precision,
        gradient_checkpointing=gradient_checkpointing, save_every_n_epochs=save_every,
        sample_every_n_epochs=sample_every, sample_prompts=sample_prompt, sample_steps=sample_steps,
        targets=targets,
        memory_mode=memory_mode,
    ), set_)
    if plan:
        return show_plan(ctx, as_json, dataset, name=name, trigger=trigger, category=category, base=base,
                         overrides=overrides, description=description)
    if not name or not trigger:
        raise fail("--name and --trigger are required to train (only --plan works without them)", as_json=as_json,
                   code="invalid", hint="For example --name \"Ink cats\" --trigger zqxinkcat")

    async def go(services: Any, actor: Any) -> tuple[Any, Any]:
        info = await services.jobs.request_training(
            actor, dataset=dataset, name=name, category=category,
            base_model=base or services.settings.default_base_model, trigger=trigger, description=description,
            overrides=overrides, origin={"cli": True})
        if not as_json:
            out().print(f"job {info.id}: “{escape(info.element_name or name)}” on {info.payload['base_model']}, "
                        f"{info.payload['image_count']} images, {info.payload['total_steps']} steps")
            for line in group_lines(info.payload["config"]):
                out().print("  " + escape(line))
        if queue:
            await warn_if_no_worker(services, "train")
            if not wait:
                return info, None
            final = await follow_job(services, actor, info.id, quiet=as_json)
        else:
            final = await train_here(services, actor, info, quiet=as_json)
        element = await services.elements.get(actor, f"#{final.element_id}") if final.element_id else None
        return final, element

    final, element = run_jobs(ctx, as_json, go, redis=queue)
    if not final.finished:
        if as_json:
            return print_json({"ok": True, "job": final})
        out().print(f"queued as job {final.id} (position {final.queue_position}); follow it with "
                    f"`atelier jobs show {final.id} --wait`")
        return
    report(final, as_json=as_json, extra={"element": element})
    if not as_json and element is not None and final.status == "succeeded":
        out().print(f"Element “{escape(element.name)}” is ready — trigger word “{escape(element.trigger_word)}”, "
                    f"recommended strength {element.recommended_strength:g}. Try `atelier generate \"…\" "
                    f"--element \"{escape(element.name)}\"` or `atelier element export \"{escape(element.name)}\"`.")


def group_lines(config: dict[str, Any]) -> list[str]:
    """One line per image group of a multi-concept dataset: trigger, images × repeats and its steps."""
    epochs, batch = int(config.get("epochs", 1)), int(config.get("batch_size", 1))
    return [f"group {g['name']} (trigger “{g.get('trigger') or '—'}”): {g['images']} images × {g['repeats']} "
            f"repeats = {epochs * -(-g['images'] * g['repeats'] // batch)} steps"
            for g in config.get("groups") or []]


def show_plan(ctx: typer.Context, as_json: bool, dataset: str, *, name: str | None, trigger: str | None,
              category: str, base: str | None, overrides: dict[str, Any], description: str) -> None:
    """``--plan``: the same checks and figures as the Discord confirmation, nothing queued or charged."""
    async def go(services: Any, actor: Actor) -> TrainingPreview:
        return await preview_training(
            services, actor, dataset=dataset, name=name or "plan preview", category=category,
            base_model=base or services.settings.default_base_model, trigger=trigger or "zqxplanpreview",
            description=description, overrides=overrides)

    preview = run_jobs(ctx, as_json, go, redis=False)
    memory = {k: preview.memory.get(k) for k in ("peak_gb", "budget_gb", "mode", "gradient_checkpointing",
                                                  "phases", "arch", "note")}
    if as_json:
        return print_json({"ok": True, "plan": {
            "dataset": preview.dataset, "base_model": preview.base_model, "image_count": preview.image_count,
            "epochs": preview.epochs, "steps": preview.total_steps,
            "estimate_seconds": round(preview.estimate_seconds), "memory": memory, "warnings": preview.warnings}})
    minutes = max(1, round(preview.estimate_seconds / 60))
    out().print(f"{escape(preview.dataset)} on {preview.base_model}: {preview.image_count} images, "
                f"{preview.epochs} epochs, {preview.total_steps} steps, about {minutes} min")
    out().print(preview.memory_line)
    for warning in preview.warnings:
        out().print(f"[yellow]note[/] {escape(warning)}")


async def train_here(services: Any, actor: Actor, info: JobInfo, *, quiet: bool) -> JobInfo:
    """Run the worker's training job body in this process (one code path); Ctrl-C cancels the job."""
    app = WorkerApp(services, WorkerOptions(queues=("train",)), enqueuer=None)
    loop = asyncio.get_running_loop()
    with new_progress(err_console()) as bar:
        task_id = bar.add_task(describe(info), total=1.0, visible=not quiet)

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "progress":
                p = data
                text = f"job {info.id} · {p.get('phase')} · epoch {p.get('epoch')}/{p.get('total_epochs')}"
                if isinstance(p.get("loss"), float):
                    text += f" · loss {p['loss']:.4f}"
                bar.update(task_id, completed=p.get("fraction", 0.0), description=text)

        run = asyncio.create_task(execute_training(app, info.id, 0, on_event=on_event))
        presses = 0

        def on_sigint() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                err_console().print("[yellow]cancelling… (Ctrl-C again to stop at once)[/]")
                loop.create_task(services.jobs.cancel(actor, info.id))
            else:
                run.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            outcome = await run
        finally:
            loop.remove_signal_handler(signal.SIGINT)
    if outcome == "skipped":  # a running worker's reconciler picked the job up first: follow it there
        return await follow_job(services, actor, info.id, quiet=quiet)
    return await services.jobs.get(actor, info.id)
