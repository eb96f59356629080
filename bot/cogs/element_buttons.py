"""Buttons and menus of Elements: browse pages, delete confirmation, and the finished-training DM's
Generate now / Share / Export (``atelier:el:…``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot import element_render as er
from bot.cog_helpers import origin_of, pack_text, read_actor, services_of, unpack_text
from bot.cogs.generate import cancel_view, queued_text
from bot.context import (
    RoutedSelect,
    actor,
    button,
    component,
    custom_id,
    defer,
    modal_values,
    reply,
    routed_view,
    selected_values,
    update,
)
from bot.render import error_text, escape, human_bytes
from storage.actors import Actor

if TYPE_CHECKING:
    from bot.app import AtelierBot

PER_PAGE = 8


async def browse_message(interaction: discord.Interaction, query: str | None, base: str | None, page: int
                         ) -> dict[str, Any]:
    services = services_of(interaction)
    me = await actor(interaction)
    result = await services.elements.browse(me, query=query, base_model=base, page=page, per_page=PER_PAGE)
    owner = interaction.user.id
    args = (pack_text(query), base or "-")
    view = routed_view(
        button("Previous", custom_id("el", "browse", max(0, page - 1), *args, owner=owner), emoji="◀️",
               disabled=page <= 0),
        button(f"Page {result.page + 1}/{result.pages}", custom_id("el", "browse", page, *args, owner=owner),
               disabled=True),
        button("Next", custom_id("el", "browse", page + 1, *args, owner=owner), emoji="▶️",
               disabled=not result.has_next))
    return {"embed": er.browse_embed(result, query=query, base=base), "view": view}


def delete_confirm(info: Any, owner_id: int) -> dict[str, Any]:
    view = routed_view(
        button("Delete", custom_id("el", "del", info.id, owner=owner_id), style=discord.ButtonStyle.danger,
               emoji="🗑️"),
        button("Keep", custom_id("el", "keep", owner=owner_id)))
    used = f" It was used {info.usage_count} times by others." if info.usage_count else ""
    return {"content": f"Delete the Element “{escape(info.name)}” and its files for good?{used}", "view": view}


async def send_export(interaction: discord.Interaction, me: Actor, ref: str) -> None:
    """Reply with the kohya-format file + element.json, or say why it cannot be uploaded here."""
    bundle = await services_of(interaction).elements.export(me, ref)
    size = len(bundle.kohya) + len(bundle.element_json)
    limit = int(getattr(interaction, "filesize_limit", 0) or 10 * 1024 * 1024)
    if size > limit:
        await reply(interaction, error_text(
            f"The export of this Element is {human_bytes(size)}, more than the {human_bytes(limit)} I may "
            "upload here.",
            f"Export it on the machine running Atelier: `atelier element export {ref}` writes the same files."))
        return
    files = [discord.File(io.BytesIO(bundle.kohya), bundle.filename),
             discord.File(io.BytesIO(bundle.element_json), bundle.json_filename)]
    await reply(interaction, f"📦 `{bundle.filename}` — loads in A1111, ComfyUI and kohya tools (and diffusers' "
                             "`load_lora_weights`); `element.json` holds its trigger word and settings.",
                files=files)


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
        from bot.cogs.element import share_text

        visibility = (selected_values(interaction) or ["private"])[0]
        await update(interaction, "Saving…", view=None)
        guild = await self._share_guild(interaction, element_id)
        info = await services_of(interaction).elements.share(
            await actor(interaction), f"#{element_id}", visibility, guild_id=guild)
        await update(interaction, share_text(info))

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
