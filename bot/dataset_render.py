"""Embeds and text for datasets: add reports, lint findings, counts against each base family's limits, lists,
and training quotas. Pure functions of storage's plain data (no I/O), cut to Discord's limits by bot.render."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import discord

from bot import render
from storage.dataset_views import AddReport, DatasetInfo, FileResult
from storage.disk_quota import StorageUse
from storage.images.lint import Finding
from storage.quotas import QuotaInfo
from storage.settings import Settings

FAMILY_LABELS = {"flux": "Flux", "sdxl": "SDXL", "sd15": "SD 1.5"}
SEVERITY_MARK = {"error": "⛔", "warning": "⚠️", "info": "ℹ️"}
_ADDED_BUDGET = 1500  # characters of the description kept for the "added" list; refusals get the rest


def name(text: str) -> str:
    """A user-chosen name shown in quotes, with markdown and mentions neutralised."""
    return f"“{render.escape(text)}”"


def _added_line(f: FileResult) -> str:
    line = f"#{f.index} {render.escape(f.filename)}"
    if f.warnings:
        line += " — ⚠️ " + render.escape(" ".join(f.warnings))
    return line


def _refused_line(f: FileResult) -> str:
    line = f"**{render.escape(f.filename)}** — {render.escape(f.reason)}"
    if f.hint:
        line += f" 💡 {render.escape(f.hint)}"
    return line


def add_report_embed(report: AddReport, *, title_prefix: str = "📥") -> discord.Embed:
    """What was added (with its index) and what was refused and why, one line per file."""
    added, refused = report.added, report.refused
    if not report.files:
        color = render.WARN
    else:
        color = render.OK if not refused else (render.WARN if added else render.ERROR)
    title = f"{title_prefix} {report.dataset}: {len(added)} added"
    if refused:
        title += f", {len(refused)} refused"
    parts = [f"{name(report.dataset)} now has {render.plural(report.image_count, 'image')}."]
    if added:
        parts.append(f"**Added ({len(added)})**\n" + render.bullets(map(_added_line, added), limit=_ADDED_BUDGET))
    if refused:
        budget = render.DESCRIPTION_LIMIT - sum(len(p) + 2 for p in parts) - 40
        parts.append(f"**Refused ({len(refused)})**\n" + render.bullets(map(_refused_line, refused), limit=budget))
    if not report.files:
        parts.append("There was nothing to add.")
    return render.embed(title, "\n\n".join(parts), color=color,
                        footer="See the whole dataset with /dataset show.")


def finding_lines(findings: Sequence[Finding]) -> list[str]:
    return [f"{SEVERITY_MARK.get(f.severity, '•')} {f.message}" + (f"\n   💡 {f.hint}" if f.hint else "")
            for f in findings]


def count_lines(counts: dict[str, tuple[int, int]], settings: Settings) -> list[str]:
    """One line per base family: the count against its range, and which base models it covers."""
    low = settings.image_limits.min_images
    lines = []
    for family, (count, high) in counts.items():
        if count < low:
            state = f"⛔ {count} — needs at least {low}"
        elif count > high:
            state = f"⛔ {count} — at most {high} (remove {count - high})"
        else:
            state = f"✅ {count} (fits {low}–{high})"
        bases = sorted(n for n, spec in settings.base_models.items() if spec.family.value == family and spec.trainable)
        label = FAMILY_LABELS.get(family, family)
        lines.append(f"**{label}**: {state}" + (f" · {', '.join(bases)}" if bases else ""))
    return lines


def show_embed(info: DatasetInfo, counts: dict[str, tuple[int, int]], findings: Sequence[Finding],
               settings: Settings, *, sheet: str | None) -> discord.Embed:
    desc_parts = []
    if info.description:
        desc_parts.append(render.escape(info.description))
    if findings:
        desc_parts.append("**Checks**\n" + render.bullets(finding_lines(findings), limit=3000, bullet=""))
    else:
        desc_parts.append("**Checks**\nNo problems found.")
    fields = [("Images per base family", "\n".join(count_lines(counts, settings)))]
    if info.groups:
        fields.append(("Image groups", render.truncate("\n".join(
            f"**{render.escape(g.name)}** — {render.plural(g.image_count, 'image')}, trigger "
            f"`{render.escape(g.trigger) or '—'}`, repeats {g.repeats if g.repeats else 'balanced'}"
            for g in info.groups), render.FIELD_VALUE_LIMIT)))
    e = render.embed(f"🗂️ {info.name} — {render.plural(info.image_count, 'image')}", "\n\n".join(desc_parts),
                     fields=fields,
                     footer="The numbers on the sheet are the image indices for /dataset caption and "
                            "/dataset remove.")
    if sheet:
        e.set_image(url=f"attachment://{sheet}")
    return e


def list_embed(datasets: Sequence[DatasetInfo]) -> discord.Embed:
    lines = []
    for ds in datasets:
        line = f"**{render.escape(ds.name)}** — {render.plural(ds.image_count, 'image')}"
        if ds.description:
            line += f" · {render.escape(render.truncate(ds.description.splitlines()[0], 80))}"
        lines.append(line)
    return render.embed(f"🗂️ Your datasets ({len(datasets)})", render.bullets(lines),
                        footer="/dataset show <name> for the contact sheet and checks.")


def timestamp(dt: datetime, style: str = "R") -> str:
    return discord.utils.format_dt(dt, style)  # type: ignore[arg-type]


def quota_text(info: QuotaInfo, storage: StorageUse | None = None) -> str:
    """The caller's slots: used and left, and when the next one frees; then their dataset storage."""
    period = render.plural(info.period_days, "day")
    if info.unlimited:
        text = f"♾️ You have unlimited training slots (Atelier admin); {info.used} used in the last {period}."
    elif info.limit == 0:
        return "🚫 Training is not enabled for your account. Ask a server admin for training slots."
    else:
        text = (f"🎟️ Training slots: **{info.used} of {info.limit}** used in the last {period} — "
                f"**{info.remaining} left**.")
    if info.resets_at is not None and info.used:
        text += f"\nThe next slot frees {timestamp(info.resets_at)} ({timestamp(info.resets_at, 'f')})."
    if storage is not None:
        text += f"\n🗄️ Dataset storage: **{storage.text()}** used."
    return text
