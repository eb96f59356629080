"""Embeds and buttons for Elements and training: confirmation, live progress, finished/failed DMs, info, lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord

from bot import render
from bot.context import button, custom_id, routed_view
from bot.render import escape, human_duration, plural
from storage.export_privacy import SHARED_DOWNLOAD_NOTE

VISIBILITY_LABEL = {"private": "🔒 private", "server": "🏠 this server", "public": "🌍 public"}
STATUS_LABEL = {"training": "⏳ training", "ready": "✅ ready", "failed": "❌ failed"}
PHASES = {"starting": "Starting", "loading": "Loading the base model", "caching": "Preparing the images",
          "training": "Training", "sampling": "Drawing samples", "exporting": "Saving the Element",
          "done": "Done", "retrying": "Waiting to retry", "requeued": "Waiting for a worker"}


def progress_bar(fraction: float, width: int = 14) -> str:
    fraction = min(1.0, max(0.0, float(fraction or 0.0)))
    full = round(fraction * width)
    return "▰" * full + "▱" * (width - full) + f" {fraction * 100:.0f}%"


def _num(value: Any, fmt: str) -> str | None:
    return format(value, fmt) if isinstance(value, int | float) else None


# -- confirmation ----------------------------------------------------------------------------------------------

def preview_embed(p: Any) -> discord.Embed:
    """The /element train confirmation (a :class:`storage.training_preview.TrainingPreview`)."""
    slots = "unlimited" if p.slots_left is None else f"{p.slots_left} of {p.slots_limit} left (this uses one)"
    fields: list[tuple[str, str, bool]] = [
        ("Dataset", f"{escape(p.dataset)} — {plural(p.image_count, 'image')}", True),
        ("Base model", f"{p.base_model} ({p.family})", True),
        ("Category", p.category, True),
        ("Trigger word", f"`{p.trigger}`", True),
        ("Schedule", f"{plural(p.epochs, 'epoch')} × {plural(p.repeats, 'repeat')} = "
                     f"{plural(p.total_steps, 'step')}", True),
        ("Estimated time", f"about {human_duration(p.estimate_seconds)} on a GPU", True),
        ("Training slots", slots, True),
    ]
    if getattr(p, "groups", None):
        fields.append(("Image groups", render.bullets(
            (f"**{escape(g.name)}** (`{escape(g.trigger) or '—'}`): {plural(g.images, 'image')} × {g.repeats} "
             f"repeat{'s' * (g.repeats != 1)} = {plural(g.steps, 'step')}" for g in p.groups),
            limit=render.FIELD_VALUE_LIMIT), False))
    if getattr(p, "memory_line", ""):
        fields.append(("GPU memory", p.memory_line.removeprefix("memory: "), True))
    if p.overrides:
        fields.append(("Advanced options", ", ".join(f"{k}={v}" for k, v in sorted(p.overrides.items())), False))
    if p.warnings:
        fields.append(("⚠️ Before you start", render.bullets((escape(w) for w in p.warnings),
                                                            limit=render.FIELD_VALUE_LIMIT), False))
    desc = escape(p.description) if p.description else None
    return render.embed(f"Train “{p.name}”?", desc, color=render.WARN if p.warnings else render.INFO,
                        fields=fields, footer="Press Start to queue it, or Cancel. Results arrive by DM.")


# -- training progress and results (DMs) -----------------------------------------------------------------------

def training_title(payload: dict[str, Any]) -> str:
    return f"Training “{payload.get('element_name') or 'Element'}”"


def progress_embed(payload: dict[str, Any], *, status: str, progress: dict[str, Any] | None = None,
                   position: int | None = None, note: str | None = None, sample: bool = False,
                   job_id: int | None = None) -> discord.Embed:
    """The DM that is edited in place while a training job runs. ``sample``: show the attached latest sample."""
    pr = progress or {}
    attempt, tries = payload.get("attempt") or 0, payload.get("max_attempts") or 0
    if status == "queued":
        head = f"⏳ Queued{f' — position {position}' if position else ''}. I'll update this message as it runs."
        color = render.INFO
    elif status == "running":
        head = f"🔥 {PHASES.get(str(pr.get('phase')), 'Training')}…\n{progress_bar(pr.get('fraction', 0.0))}"
        color = render.INFO
    elif status == "succeeded":
        head, color = f"✅ Finished\n{progress_bar(1.0)}", render.OK
    elif status == "cancelled":
        head = ("⏹️ Cancelled — your training slot was refunded." if payload.get("slot_refunded", True) else
                "⏹️ Cancelled — the run had started, so it used a training slot.")
        color = render.WARN
    else:
        head, color = "❌ Failed", render.ERROR
    if note:
        head += "\n" + note
    fields: list[tuple[str, str, bool]] = []
    if pr.get("epoch") is not None and pr.get("total_epochs"):
        fields.append(("Epoch", f"{pr['epoch']}/{pr['total_epochs']}", True))
    if pr.get("step") is not None and pr.get("total_steps"):
        fields.append(("Step", f"{pr['step']}/{pr['total_steps']}", True))
    if (loss := _num(pr.get("loss"), ".4f")) is not None:
        fields.append(("Loss", loss, True))
    if status == "running" and isinstance(pr.get("eta_seconds"), int | float):
        fields.append(("ETA", human_duration(pr["eta_seconds"]), True))
    if attempt > 1:
        fields.append(("Attempt", f"{attempt}/{tries}", True))
    footer = f"Job {job_id if job_id is not None else payload.get('job_id')} · base {payload.get('base_model')}"
    e = render.embed(training_title(payload), head, color=color, fields=fields, footer=footer)
    if sample:
        e.set_image(url="attachment://latest-sample.png")
    return e


def finished_embeds(p: dict[str, Any], *, has_grid: bool, has_loss: bool) -> list[discord.Embed]:
    fields: list[tuple[str, str, bool]] = [
        ("Trigger word", f"`{p.get('trigger')}`", True),
        ("Base model", str(p.get("base_model")), True),
        ("Recommended strength", f"{float(p.get('recommended_strength') or 1.0):g}"
         + (f" (works {p['strength_range'][0]:g}–{p['strength_range'][1]:g})" if p.get("strength_range") else ""),
         True),
        ("Training", f"{plural(int(p.get('epochs') or 0), 'epoch')}, {plural(int(p.get('steps') or 0), 'step')}"
         + (f", final loss {p['final_loss']:.4f}" if isinstance(p.get("final_loss"), float) else ""), False),
    ]
    if p.get("resumed_from_epoch"):
        fields.append(("Resumed", f"continued from epoch {p['resumed_from_epoch']} after an interruption", False))
    main = render.embed(f"✅ “{p.get('element_name')}” is ready", (
        "Your Element finished training. The grid shows each saved epoch (rows) at several strengths "
        "(columns); the samples are from the last epoch."), color=render.OK, fields=fields,
        footer=f"Job {p.get('job_id')} · use it with /generate element1:{p.get('element_name')}")
    if has_grid:
        main.set_image(url="attachment://grid.png")
    out = [main]
    if has_loss:
        loss = render.embed("Loss curve", None, color=render.OK)
        loss.set_image(url="attachment://loss-curve.png")
        out.append(loss)
    return out


def finished_view(element_id: int, owner_discord_id: int, guild_id: str | None) -> discord.ui.View:
    guild = guild_id or "0"
    return routed_view(
        button("Generate now", custom_id("el", "gen", element_id, owner=owner_discord_id),
               style=discord.ButtonStyle.primary, emoji="🎨"),
        button("Share", custom_id("el", "share", element_id, guild, owner=owner_discord_id), emoji="🤝"),
        button("Export", custom_id("el", "export", element_id, owner=owner_discord_id), emoji="📦"),
    )


def failed_embed(p: dict[str, Any]) -> discord.Embed:
    reason = str(p.get("reason") or "unknown reason")
    fields = [("What went wrong", escape(reason[:1].upper() + reason[1:]), False)]
    if p.get("hint"):
        fields.append(("What to do", escape(str(p["hint"])), False))
    fields.append(("Your slot", "Refunded — a failed training does not count against your quota.", False))
    return render.embed(f"❌ Training “{p.get('element_name')}” failed", None, color=render.ERROR,
                        fields=fields, footer=f"Job {p.get('job_id')} · attempt {p.get('attempt')}")


def retry_view(job_id: int, owner_discord_id: int) -> discord.ui.View:
    return routed_view(button("Retry", custom_id("job", "retry", job_id, owner=owner_discord_id),
                              style=discord.ButtonStyle.primary, emoji="🔁"))


# -- Elements ---------------------------------------------------------------------------------------------------

def element_line(e: Any) -> str:
    by = "" if e.is_own else f" by {escape(e.owner_name)}"
    return (f"**{escape(e.name)}**{by} · `{e.trigger_word}` · {e.base_model} · "
            f"{STATUS_LABEL.get(e.status, e.status)} · {VISIBILITY_LABEL.get(e.visibility, e.visibility)}"
            f" · used {plural(e.usage_count, 'time')}")


def list_embed(items: Sequence[Any]) -> discord.Embed:
    if not items:
        return render.embed("Your Elements", "You have no Elements yet.\nTrain one with `/element train` "
                            "from a dataset of 10+ images (`/dataset create`, then `/dataset add`).")
    return render.embed(f"Your Elements ({len(items)})", render.bullets(element_line(e) for e in items),
                        footer="Details: /element info · share: /element share · use: /generate")


def strength_text(e: Any) -> str:
    """``0.7 (works 0.4–1.0)`` when the post-training sweep found a range, else just the default strength."""
    r = getattr(e, "strength_range", None)
    return f"{e.recommended_strength:g} (works {r[0]:g}–{r[1]:g})" if r else f"{e.recommended_strength:g}"


def info_embed(e: Any, *, image: str | None = None) -> discord.Embed:
    fields: list[tuple[str, str, bool]] = [
        ("Trigger word", f"`{e.trigger_word}`", True),
        ("Base model", f"{e.base_model} ({e.base_family})", True),
        ("Category", e.category, True),
        ("Recommended strength", strength_text(e), True),
        ("Visibility", VISIBILITY_LABEL.get(e.visibility, e.visibility), True),
        ("Used", plural(e.usage_count, "time"), True),
        ("Creator", "you" if e.is_own else escape(e.owner_name), True),
        ("Status", STATUS_LABEL.get(e.status, e.status), True),
        ("Trained on", plural(e.image_count, "image"), True),
    ]
    if getattr(e, "groups", None):
        fields.append(("Image groups", ", ".join(
            f"`@{escape(str(g['name']))}` ({escape(str(g.get('trigger') or '—'))})" for g in e.groups), False))
    ref = e.name if e.is_own else e.ref
    e_ = render.embed(f"Element “{e.name}”", escape(e.description) if e.description else None,
                      color=render.OK if e.ready else render.INFO, fields=fields,
                      footer=f"Element {e.ref} · /generate element1:{ref}")
    if image:
        e_.set_image(url=f"attachment://{image}")
    return e_


def browse_embed(page: Any, *, query: str | None, base: str | None) -> discord.Embed:
    filters = [f"matching “{escape(query)}”" if query else "", f"for {base}" if base else ""]
    title = "Community Elements " + " ".join(f for f in filters if f)
    if not page.items:
        return render.embed(title.strip(), "Nothing shared matches yet. Share yours with `/element share`.")
    lines = [f"`{e.ref}` " + element_line(e) for e in page.items]
    return render.embed(title.strip(), render.bullets(lines, bullet="").strip(),
                        footer=f"Page {page.page + 1}/{page.pages} · {plural(page.total, 'Element')} · "
                               "use one with /generate element1:#id")


def delete_confirm(info: Any, owner_id: int) -> dict[str, Any]:
    view = routed_view(
        button("Delete", custom_id("el", "del", info.id, owner=owner_id), style=discord.ButtonStyle.danger,
               emoji="🗑️"),
        button("Keep", custom_id("el", "keep", owner=owner_id)))
    used = f" It was used {info.usage_count} times by others." if info.usage_count else ""
    return {"content": f"Delete the Element “{escape(info.name)}” and its files for good?{used}", "view": view}


def share_text(info: object) -> str:
    name = escape(getattr(info, "name", ""))
    vis = getattr(info, "visibility", "")
    if vis == "public":
        return (f"🌍 “{name}” is now public: anyone can find it with /element browse and use it (credited to you). "
                f"{SHARED_DOWNLOAD_NOTE}")
    if vis == "server":
        return (f"🏠 “{name}” is now shared with this server: members can find it with /element browse. "
                f"{SHARED_DOWNLOAD_NOTE}")
    return f"🔒 “{name}” is private again: only you can see and use it."
