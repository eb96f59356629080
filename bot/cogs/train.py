"""The ``/element train`` flow: check the request and show what it would do (image count, steps, estimated time,
slots left, lint warnings), then queue it when its owner presses Start.

The command itself lives in the ``/element`` group (bot/cogs/element.py) and calls :func:`train_command`; the
Start/Cancel buttons are routed components (``atelier:train:start|cancel:<token>:@<owner>``) whose pending
request is stored in the database (``bot_state``, kind ``train_confirm``) for ``CONFIRM_SECONDS``: Start pressed
after a bot restart still queues it; once expired, a press says so clearly. While the bot runs, a timer also edits
the confirmation to say it expired. Progress and results arrive by DM through the outbox deliverer
(bot/deliverer.py), never through this interaction (its token expires after 15 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot import render
from bot.cog_helpers import origin_of
from bot.context import actor, button, component, custom_id, defer, reply, routed_view, services_of, update
from bot.element_render import preview_embed
from bot.render import error_text, escape
from storage.errors import AtelierError, InvalidInput
from storage.training_preview import TrainingPreview, preview_training

if TYPE_CHECKING:
    from bot.app import AtelierBot

KIND = "train_confirm"
CONFIRM_SECONDS = 600  # the confirmation expires well before the interaction token (15 min)
EXPIRED = InvalidInput("This confirmation has expired.", "Run /element train again.")
GONE = InvalidInput("This confirmation is no longer pending (it was used, cancelled or expired long ago).",
                    "Run /element train again.")


def overrides_from(*, epochs: int | None, learning_rate: float | None, rank: int | None, dora: bool | None,
                   train_text_encoder: bool | None, resolution: int | None) -> dict[str, Any]:
    """Advanced slash-command options → TrainingConfig overrides (only those given)."""
    values = {"epochs": epochs, "learning_rate": learning_rate, "rank": rank, "use_dora": dora,
              "train_text_encoder": train_text_encoder, "resolution": resolution}
    out = {k: v for k, v in values.items() if v is not None}
    if rank is not None:
        out["alpha"] = float(rank)  # alpha = rank keeps the effective strength when people change the rank
    return out


@dataclasses.dataclass(frozen=True)
class Pending:
    preview: TrainingPreview
    origin: dict[str, Any]


class Training(commands.Cog):
    """Stores the confirmations waiting for Start/Cancel and handles those buttons."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self._timers: dict[str, asyncio.Task[None]] = {}  # token → edits the message when it expires

    async def cog_unload(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def hold(self, interaction: discord.Interaction, preview: TrainingPreview) -> str:
        token = secrets.token_hex(6)
        payload = {"preview": dataclasses.asdict(preview), "origin": origin_of(interaction)}
        await services_of(interaction).bot_state.put(KIND, token, payload, ttl_s=CONFIRM_SECONDS,
                                                     owner=f"discord:{interaction.user.id}")
        self._timers[token] = asyncio.get_running_loop().create_task(self._expire(token, interaction))
        return token

    async def take(self, interaction: discord.Interaction, token: str) -> Pending:
        """The pending request (once: a double click finds nothing the second time)."""
        timer = self._timers.pop(token, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        held = await services_of(interaction).bot_state.take(KIND, token)
        if held is None:
            raise GONE
        if held.expired:
            raise EXPIRED
        return Pending(TrainingPreview(**held.payload["preview"]), dict(held.payload.get("origin") or {}))

    async def _expire(self, token: str, source: discord.Interaction) -> None:
        await asyncio.sleep(CONFIRM_SECONDS)
        self._timers.pop(token, None)
        with contextlib.suppress(discord.HTTPException):
            await source.edit_original_response(
                content="⌛ This confirmation expired; run /element train again to start.", view=None)

    @component("train", "start")
    async def start(self, interaction: discord.Interaction, token: str) -> None:
        await defer(interaction, thinking=False)  # acknowledge before the database
        held = await self.take(interaction, token)
        p = held.preview
        await update(interaction, f"🚀 Queuing “{escape(p.name)}”…", view=None)
        try:
            job = await services_of(interaction).jobs.request_training(
                await actor(interaction), dataset=p.dataset, name=p.name, category=p.category,
                base_model=p.base_model, trigger=p.trigger, description=p.description, overrides=p.overrides,
                origin=held.origin)
        except AtelierError as exc:
            await update(interaction, error_text(exc.message, exc.hint), embed=None)
            return
        embed = preview_embed(p)
        embed.title = f"Training “{render.truncate(p.name, 200)}”"
        embed.colour = discord.Colour(render.OK)
        embed.set_footer(text=f"Job {job.id} · follow it with /jobs")
        cancel = routed_view(button("Cancel training", custom_id("job", "cancel", job.id, owner=interaction.user.id),
                                    emoji="✖️"))
        await update(interaction, f"✅ Queued “{escape(p.name)}” — job {job.id}, position {job.queue_position} in "
                                  "the training queue. I'll DM you progress and the result (or mention you here "
                                  "if your DMs are closed).", embed=embed, view=cancel)

    @component("train", "cancel")
    async def cancel(self, interaction: discord.Interaction, token: str) -> None:
        await defer(interaction, thinking=False)
        with contextlib.suppress(AtelierError):  # cancelling what expired or was used already is still "nothing"
            await self.take(interaction, token)
        await update(interaction, "Cancelled — nothing was queued.", embed=None, view=None)


async def train_command(interaction: discord.Interaction, *, dataset: str, name: str, category: str, base: str,
                        trigger: str, description: str | None, overrides: dict[str, Any]) -> None:
    """``/element train``: check, then show the confirmation with Start/Cancel."""
    await defer(interaction)
    services = services_of(interaction)
    me = await actor(interaction)
    guild = str(interaction.guild_id) if interaction.guild_id else None
    await services.guilds.check_text(guild, f"{name}\n{trigger}\n{description or ''}")
    operator = dict(getattr(interaction.client, "training_overrides", {}) or {})
    preview = await preview_training(services, me, dataset=dataset, name=name, category=category,
                                     base_model=base, trigger=trigger, description=description or "",
                                     overrides={**operator, **overrides})
    flow = interaction.client.get_cog("Training")  # type: ignore[attr-defined]
    if flow is None:
        raise RuntimeError("the bot.cogs.train extension is not loaded")
    token = await flow.hold(interaction, preview)
    owner = interaction.user.id
    view = routed_view(
        button("Start", custom_id("train", "start", token, owner=owner), style=discord.ButtonStyle.success,
               emoji="🚀"),
        button("Cancel", custom_id("train", "cancel", token, owner=owner)))
    await reply(interaction, embed=preview_embed(preview), view=view)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Training(bot))
