"""Buttons and menus of Elements: browse pages, delete confirmation, and the finished-training DM's
Generate now / Share / Export (``atelier:el:…``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import element_render as er
from bot.cog_helpers import origin_of, read_actor, unpack_text
from bot.context import (
    RoutedSelect,
    actor,
    component,
    custom_id,
    defer,
    modal_values,
    reply,
    routed_view,
    selected_values,
    services_of,
    update,
)
from bot.element_replies import browse_message, send_export
from bot.generation_render import cancel_view, queued_text
from bot.render import escape

if TYPE_CHECKING:
    from bot.app import AtelierBot


class GenerateNow(discord.ui.Modal, title="Generate with your Element"):
    def __init__(self, element_id: int, trigger: str) -> None:
        super().__init__(custom_id=custom_id("el", "genprompt", element_id))
        self.add_item(discord.ui.TextInput(label="Prompt", custom_id="prompt", max_length=1000,
                                           default=f"{trigger}, " if trigger else None,
                                           style=discord.TextStyle.paragraph))


class ElementButtons(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @component("el", "browse")
    async def browse_page(self, interaction: discord.Interaction, page: str, query: str, base: str) -> None:
        await defer(interaction, thinking=False)
        msg = await browse_message(interaction, unpack_text(query), None if base == "-" else base, int(page))
        await update(interaction, embed=msg["embed"], view=msg["view"])

    @component("el", "del")
    async def delete(self, interaction: discord.Interaction, element_id: str) -> None:
        await update(interaction, "🗑️ Deleting…", view=None)
        info = await services_of(interaction).elements.delete(await actor(interaction), f"#{element_id}")
        await update(interaction, f"🗑️ “{escape(info.name)}” was deleted.")

    @component("el", "keep")
    async def keep(self, interaction: discord.Interaction) -> None:
        await update(interaction, "Kept.", view=None)

    @component("el", "gen")
    async def generate_now(self, interaction: discord.Interaction, element_id: str) -> None:
        # A modal must be the first response (no defer first): look the trigger word up, but never for long.
        trigger = ""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                me = await read_actor(interaction)
                trigger = (await services_of(interaction).elements.get(me, f"#{element_id}")).trigger_word
        await interaction.response.send_modal(GenerateNow(int(element_id), trigger))

    @component("el", "genprompt")
    async def generate_now_submit(self, interaction: discord.Interaction, element_id: str) -> None:
        await defer(interaction)
        services = services_of(interaction)
        prompt = modal_values(interaction).get("prompt", "")
        job = await services.jobs.request_generation(await actor(interaction), prompt=prompt,
                                                     elements=[(f"#{element_id}", None)],
                                                     origin=origin_of(interaction))
        await reply(interaction, queued_text(job), view=cancel_view(job.id, interaction.user.id))

    @component("el", "share")
    async def share(self, interaction: discord.Interaction, element_id: str, guild: str) -> None:
        # The server comes from the interaction (a button in a server), or from where the training was requested
        # (a button in a DM) — never from the custom_id, which anyone can craft.
        guild = await self._share_guild(interaction, element_id)
        options = [discord.SelectOption(label="Private (only you)", value="private", emoji="🔒"),
                   discord.SelectOption(label="Public (everyone can find and use it)", value="public", emoji="🌍")]
        if guild is not None:
            options.insert(1, discord.SelectOption(label="The server where you trained it", value="server",
                                                   emoji="🏠"))
        pick = RoutedSelect(custom_id=custom_id("el", "sharepick", element_id, owner=interaction.user.id),
                            placeholder="Who may use it?", options=options)
        await reply(interaction, "Who may find and use this Element? (They can never change or delete it; "
                                 "you are credited when they use it.)", view=routed_view(pick))

    @component("el", "sharepick")
    async def share_pick(self, interaction: discord.Interaction, element_id: str, *_old: str) -> None:
        # ``_old``: selects posted by earlier versions also carry a server id; it is ignored.
        visibility = (selected_values(interaction) or ["private"])[0]
        await update(interaction, "Saving…", view=None)
        guild = await self._share_guild(interaction, element_id)
        info = await services_of(interaction).elements.share(
            await actor(interaction), f"#{element_id}", visibility, guild_id=guild)
        await update(interaction, er.share_text(info))

    @staticmethod
    async def _share_guild(interaction: discord.Interaction, element_id: str) -> str | None:
        if interaction.guild_id:
            return str(interaction.guild_id)
        return await services_of(interaction).elements.trained_in_guild(await actor(interaction), int(element_id))

    @component("el", "export")
    async def export(self, interaction: discord.Interaction, element_id: str) -> None:
        await defer(interaction)
        await send_export(interaction, await actor(interaction), f"#{element_id}")


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(ElementButtons(bot))
