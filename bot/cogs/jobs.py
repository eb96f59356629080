"""``/jobs`` — your queued and running jobs with progress and Cancel buttons; plus the Cancel and Retry buttons
other messages carry (``atelier:job:cancel:<id>``, ``atelier:job:retry:<id>``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.context import actor, button, component, custom_id, defer, reply, routed_view, services_of, update
from bot.element_render import PHASES, progress_bar
from bot.render import escape, human_duration

if TYPE_CHECKING:
    from bot.app import AtelierBot

MAX_CANCEL_BUTTONS = 20  # 4 rows of 5; the 5th row holds Refresh


def job_line(job: Any) -> str:
    if job.kind == "train":
        what = f"training “{escape(job.element_name or '?')}”"
    else:
        prompt = str(job.payload.get("prompt") or "")
        what = f"generation “{escape(render.truncate(prompt, 60))}”"
    if job.status == "queued":
        state = f"⏳ queued, position {job.queue_position}" if job.queue_position else "⏳ queued"
        if job.attempt:
            state += f" (retry {job.attempt + 1}/{job.max_attempts})"
    else:
        pr = job.progress
        state = f"🔥 {PHASES.get(str(pr.get('phase')), 'running')} {progress_bar(job.fraction, 10)}"
        if pr.get("epoch") is not None and pr.get("total_epochs"):
            state += f" · epoch {pr['epoch']}/{pr['total_epochs']}"
        if isinstance(pr.get("eta_seconds"), int | float):
            state += f" · ETA {human_duration(pr['eta_seconds'])}"
    if job.cancel_requested:
        state += " · cancelling…"
    return f"**#{job.id}** {what} — {state}"


def jobs_message(jobs: Sequence[Any], owner_id: int) -> dict[str, Any]:
    if not jobs:
        body = "You have no queued or running jobs.\nStart one with `/generate` or `/element train`."
    else:
        body = render.bullets(job_line(j) for j in jobs)
    items: list[discord.ui.Item] = [
        button(f"Cancel #{j.id}", custom_id("job", "cancel", j.id, "l", owner=owner_id), emoji="✖️",
               row=i // 5, disabled=j.cancel_requested)
        for i, j in enumerate(jobs[:MAX_CANCEL_BUTTONS])]
    items.append(button("Refresh", custom_id("job", "refresh", owner=owner_id), emoji="🔄", row=4))
    embed = render.embed(f"Your jobs ({len(jobs)} active)", body,
                         footer="Finished results arrive by DM (training) or in the channel (images).")
    return {"embed": embed, "view": routed_view(*items)}


class Jobs(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    async def _message(self, interaction: discord.Interaction) -> dict[str, Any]:
        me = await actor(interaction)
        jobs = await services_of(interaction).jobs.list(me, active_only=True, limit=50)
        return jobs_message(list(reversed(jobs)), interaction.user.id)  # oldest (next to run) first

    @app_commands.command(name="jobs", description="Your queued and running jobs, with progress and Cancel buttons")
    async def jobs(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        await reply(interaction, **await self._message(interaction))

    @component("job", "refresh")
    async def refresh(self, interaction: discord.Interaction) -> None:
        await defer(interaction, thinking=False)
        await update(interaction, **await self._message(interaction))

    @component("job", "cancel")
    async def cancel(self, interaction: discord.Interaction, job_id: str, where: str = "") -> None:
        in_list = where == "l"
        await defer(interaction, thinking=not in_list)
        job = await services_of(interaction).jobs.cancel(await actor(interaction), int(job_id))
        if in_list:  # pressed in the /jobs list: show the list again
            await update(interaction, **await self._message(interaction))
            return
        what = "Cancelled" if job.status == "cancelled" else "Cancelling (the worker stops within seconds)"
        await reply(interaction, f"✖️ {what}: job {job.id}.")

    @component("job", "retry")
    async def retry(self, interaction: discord.Interaction, job_id: str) -> None:
        await defer(interaction)
        job = await services_of(interaction).jobs.retry(await actor(interaction), int(job_id))
        where = "I'll DM you progress" if job.kind == "train" else "I'll post the images where you asked"
        position = f", position {job.queue_position} in the queue" if job.queue_position else ""
        await reply(interaction, f"🔁 Started again as job {job.id}{position}. {where}.")


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Jobs(bot))
