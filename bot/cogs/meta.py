"""``/help`` (what the bot can do, generated from the registered commands) and ``/ping`` (health + DM check)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.context import button, component, custom_id, defer, reply, routed_view, send_dm, update
from storage.errors import InvalidInput

if TYPE_CHECKING:
    from bot.app import AtelierBot

ABOUT = ("Atelier trains **Elements** — small LoRA add-ons that teach an image model a style, character or "
         "object — from image datasets you collect here, then generates images with them.")
AnyCommand = app_commands.Command | app_commands.Group


class Meta(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    # -- /help -----------------------------------------------------------------------------------------------

    @app_commands.command(name="help", description="What Atelier can do and how to use each command")
    @app_commands.describe(topic="A command to explain in detail, e.g. dataset")
    async def help(self, interaction: discord.Interaction, topic: str | None = None) -> None:
        if topic:
            await reply(interaction, embed=self._topic_embed(topic))
        else:
            await reply(interaction, embed=self._overview_embed())

    @help.autocomplete("topic")
    async def help_topic(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        needle = current.strip().lstrip("/").lower()
        choices = []
        for cmd in self._walk():
            if needle in cmd.qualified_name:
                label = render.truncate(f"/{cmd.qualified_name} — {cmd.description}", 100)
                choices.append(app_commands.Choice(name=label, value=cmd.qualified_name))
        return choices[:25]

    def _walk(self) -> list[AnyCommand]:
        """Every slash command and group, parents before children, alphabetical."""
        out: list[AnyCommand] = []
        for cmd in sorted(self.bot.tree.get_commands(type=discord.AppCommandType.chat_input), key=lambda c: c.name):
            out.append(cmd)  # type: ignore[arg-type]
            if isinstance(cmd, app_commands.Group):
                out.extend(c for c in cmd.walk_commands())
        return out

    def _overview_embed(self) -> discord.Embed:
        fields: list[tuple[str, str]] = []
        for cmd in sorted(self.bot.tree.get_commands(type=discord.AppCommandType.chat_input), key=lambda c: c.name):
            if isinstance(cmd, app_commands.Group):
                lines = [f"`/{c.qualified_name}` — {c.description}" for c in cmd.walk_commands()
                         if isinstance(c, app_commands.Command)]
                fields.append((f"/{cmd.name}", render.bullets(lines, limit=render.FIELD_VALUE_LIMIT)))
            else:
                fields.append((f"/{cmd.name}", cmd.description))
        menus = [c.name for c in self.bot.tree.get_commands(type=discord.AppCommandType.message)]
        if menus:
            fields.append(("Message menu", render.bullets(f"right-click a message → Apps → **{name}**"
                                                          for name in sorted(menus))))
        fields.append(("Base models", self._base_models()))
        return render.embed("Atelier — what I can do", ABOUT, fields=fields,
                            footer="Tip: /help topic:<command> explains one command in detail.")

    def _base_models(self) -> str:
        settings = self.bot.settings
        lines = []
        for name, spec in settings.base_models.items():
            notes = [spec.family.value]
            if name == settings.default_base_model:
                notes.append("default")
            if not spec.trainable:
                notes.append("generation only")
            lines.append(f"`{name}` ({', '.join(notes)}) — {spec.description or spec.source}")
        return render.bullets(lines, limit=render.FIELD_VALUE_LIMIT)

    def _topic_embed(self, topic: str) -> discord.Embed:
        wanted = " ".join(topic.strip().lstrip("/").lower().split())
        match = next((c for c in self._walk() if c.qualified_name == wanted), None)
        if match is None:
            known = ", ".join(f"/{c.name}" for c in self.bot.tree.get_commands(
                type=discord.AppCommandType.chat_input))
            raise InvalidInput(f"There is no command called /{wanted}.", f"Topics: {known}.")
        commands_ = [c for c in match.walk_commands()] if isinstance(match, app_commands.Group) else [match]
        fields = []
        for cmd in commands_:
            if not isinstance(cmd, app_commands.Command):
                continue
            params = [f"`{p.name}`{'' if p.required else ' (optional)'} — {p.description}" for p in cmd.parameters]
            fields.append((f"/{cmd.qualified_name}",
                           render.truncate(cmd.description + ("\n" + "\n".join(params) if params else ""),
                                           render.FIELD_VALUE_LIMIT)))
        return render.embed(f"/{match.qualified_name}", match.description, fields=fields)

    # -- /ping -----------------------------------------------------------------------------------------------

    @app_commands.command(name="ping", description="Check that Atelier is up, and optionally that it can DM you")
    @app_commands.describe(dm="Also send you a test DM (training results arrive by DM)")
    async def ping(self, interaction: discord.Interaction, dm: bool = False) -> None:
        await defer(interaction, ephemeral=False)  # the DM round trip can take longer than Discord's 3 s
        lines = [self._status()]
        if dm:
            sent = await send_dm(self.bot, interaction.user.id,
                                 "👋 Test DM from Atelier: training and generation results will arrive here.")
            lines.append("📬 I sent you a test DM." if sent else
                         "📭 I couldn't DM you. Allow DMs from server members (server menu → Privacy Settings) "
                         "to get training results by DM.")
        await reply(interaction, "\n".join(lines), ephemeral=False, view=self._refresh_view(interaction.user.id))

    @component("meta", "ping")
    async def refresh_ping(self, interaction: discord.Interaction) -> None:
        await update(interaction, self._status(), view=self._refresh_view(interaction.user.id))

    def _status(self) -> str:
        latency = self.bot.latency
        shown = "unknown" if math.isinf(latency) or math.isnan(latency) else f"{latency * 1000:.0f} ms"
        checked = discord.utils.format_dt(discord.utils.utcnow(), "T")
        return f"🏓 Pong! Gateway latency {shown} (checked {checked})."

    @staticmethod
    def _refresh_view(owner_id: int) -> discord.ui.View:
        return routed_view(button("Check again", custom_id("meta", "ping", owner=owner_id), emoji="🔄"))


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Meta(bot))
