"""Answers shared by the ``/element`` commands and the Element buttons that need the services: a page of
shared Elements, and the export upload. (Pure embeds and views are in bot.element_render.)"""

from __future__ import annotations

import io
from typing import Any

import discord

from bot import element_render as er
from bot.cog_helpers import pack_text
from bot.context import actor, button, custom_id, reply, routed_view, services_of
from bot.render import error_text, human_bytes
from storage.actors import Actor

PER_PAGE = 8


async def browse_message(interaction: discord.Interaction, query: str | None, base: str | None, page: int
                         ) -> dict[str, Any]:
    """One page of the Elements shared with this member, with Previous/Next buttons only they can press."""
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
