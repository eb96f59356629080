"""``/element`` — train, list, info, share, browse, export, delete.

Parse → call a use case (storage.elements / storage.jobs) → render (bot.element_render). Buttons and menus of
these commands are handled in bot/cogs/element_buttons.py (answers both use: bot/element_replies.py); the
training confirmation in bot/cogs/train.py.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import element_render as er
from bot.cog_helpers import choices, read_actor, safe_choices
from bot.cogs.train import overrides_from, train_command
from bot.context import actor, defer, reply, services_of
from bot.element_replies import browse_message, send_export
from storage.db.models import Category
from storage.errors import Forbidden
from storage.names import MAX_ELEMENT_DESCRIPTION, MAX_NAME, TRIGGER_MAX, TRIGGER_MIN
from trainer.config import RESOLUTION_STEP, field_bounds

if TYPE_CHECKING:
    from bot.app import AtelierBot

VISIBILITY_CHOICES = [app_commands.Choice(name="private (only you)", value="private"),
                      app_commands.Choice(name="this server", value="server"),
                      app_commands.Choice(name="public (everyone)", value="public")]
CATEGORY_CHOICES = [app_commands.Choice(name=c.value, value=c.value) for c in Category]
# The advanced options' ranges are TrainingConfig's own (an exclusive bound, the learning rate's 0, is left to
# training's own message).
EPOCHS, LEARNING_RATE, RANK, RESOLUTION = (field_bounds(f)
                                          for f in ("epochs", "learning_rate", "rank", "resolution"))
Epochs = app_commands.Range[int, int(EPOCHS[0]), int(EPOCHS[1])]
LearningRate = app_commands.Range[float, LEARNING_RATE[0], LEARNING_RATE[1]]
Rank = app_commands.Range[int, int(RANK[0]), int(RANK[1])]
Resolution = app_commands.Range[int, int(RESOLUTION[0]), int(RESOLUTION[1])]


class Elements(commands.Cog):
    element = app_commands.Group(name="element", description="Your Elements (trained LoRAs) and shared ones")

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    # -- train ---------------------------------------------------------------------------------------------------

    @element.command(name="train", description="Train a new Element from one of your datasets")
    @app_commands.describe(
        dataset="One of your datasets (10+ images)", name="A name for the Element",
        category="What it learns: a style, a character, an object or a concept",
        base="Base model to train on", trigger="A rare made-up word that switches it on, e.g. ohwxstyle",
        description="What it is (shown when shared)", epochs="Advanced: passes over the dataset",
        learning_rate="Advanced: learning rate (e.g. 0.0001)",
        rank=f"Advanced: LoRA rank (capacity), {RANK[0]:g}–{RANK[1]:g}",
        dora="Advanced: train a DoRA instead of a plain LoRA (SD1.5/SDXL)",
        train_text_encoder="Advanced: also train the text encoder (SD1.5/SDXL)",
        resolution=f"Advanced: training resolution in px (a multiple of {RESOLUTION_STEP})")
    @app_commands.choices(category=CATEGORY_CHOICES)
    async def train(self, interaction: discord.Interaction, dataset: str, name: app_commands.Range[str, 1, MAX_NAME],
                    category: str, base: str, trigger: app_commands.Range[str, TRIGGER_MIN, TRIGGER_MAX],
                    description: app_commands.Range[str, 0, MAX_ELEMENT_DESCRIPTION] | None = None,
                    epochs: Epochs | None = None,
                    learning_rate: LearningRate | None = None,
                    rank: Rank | None = None, dora: bool | None = None,
                    train_text_encoder: bool | None = None,
                    resolution: Resolution | None = None) -> None:
        overrides = overrides_from(epochs=epochs, learning_rate=learning_rate, rank=rank, dora=dora,
                                   train_text_encoder=train_text_encoder, resolution=resolution)
        await train_command(interaction, dataset=dataset, name=name, category=category, base=base,
                            trigger=trigger, description=description, overrides=overrides)

    @train.autocomplete("dataset")
    async def dataset_choices(self, interaction: discord.Interaction, current: str
                              ) -> list[app_commands.Choice[str]]:
        async def make() -> list[app_commands.Choice[str]]:
            me = await read_actor(interaction)
            needle = current.strip().casefold()
            found = await services_of(interaction).datasets.list(me)
            return choices([(f"{d.name} ({d.image_count} images)", d.name) for d in found
                            if needle in d.name.casefold()])
        return await safe_choices(make)

    @train.autocomplete("base")
    async def trainable_bases(self, interaction: discord.Interaction, current: str
                              ) -> list[app_commands.Choice[str]]:
        needle = current.strip().lower()
        settings = self.bot.settings
        return choices([(f"{n} ({s.family.value})" + (" — default" if n == settings.default_base_model else ""), n)
                        for n, s in sorted(settings.base_models.items()) if s.trainable and needle in n.lower()])

    # -- looking -------------------------------------------------------------------------------------------------

    @element.command(name="list", description="Your Elements: status, base model, visibility, usage")
    async def list_(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        items = await services_of(interaction).elements.list_own(await actor(interaction))
        await reply(interaction, embed=er.list_embed(items))

    @element.command(name="info", description="An Element's samples, trigger word, base, strength and creator")
    @app_commands.describe(element="One of yours, or a shared one (#id)")
    async def info(self, interaction: discord.Interaction, element: str) -> None:
        await defer(interaction)
        services = services_of(interaction)
        info = await services.elements.get(await actor(interaction), element)
        picture = info.artifacts.get("grid") or next(iter(info.artifacts.get("samples_final") or []), None)
        files = []
        data = await services.blobs.get_bytes(picture) if picture else b""
        if data and len(data) <= int(getattr(interaction, "filesize_limit", 0) or 10 * 1024 * 1024):
            files = [discord.File(io.BytesIO(data), "element-preview.png")]
        await reply(interaction, embed=er.info_embed(info, image="element-preview.png" if files else None),
                    files=files or None)

    @element.command(name="browse", description="Find Elements others shared (public and this server's)")
    @app_commands.describe(query="Words in the name, description or trigger", base="Only for this base model")
    async def browse(self, interaction: discord.Interaction, query: app_commands.Range[str, 0, 30] | None = None,
                     base: str | None = None) -> None:
        await defer(interaction)
        await reply(interaction, **await browse_message(interaction, query or None, base or None, 0))

    @browse.autocomplete("base")
    async def browse_bases(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        needle = current.strip().lower()
        return choices([(f"{n} ({s.family.value})", n) for n, s in sorted(self.bot.settings.base_models.items())
                        if needle in n.lower()])

    # -- changing ------------------------------------------------------------------------------------------------

    @element.command(name="share", description="Make one of your Elements private, shared with this server, or public")
    @app_commands.describe(element="One of your Elements", visibility="Who may find and use it")
    @app_commands.choices(visibility=VISIBILITY_CHOICES)
    async def share(self, interaction: discord.Interaction, element: str, visibility: str) -> None:
        await defer(interaction)
        me = await actor(interaction)
        info = await services_of(interaction).elements.share(
            me, element, visibility, guild_id=str(interaction.guild_id) if interaction.guild_id else None)
        await reply(interaction, er.share_text(info))

    @element.command(name="export", description="Download an Element as a kohya/A1111/ComfyUI .safetensors file")
    @app_commands.describe(element="One of yours, or a shared one (#id)")
    async def export(self, interaction: discord.Interaction, element: str) -> None:
        await defer(interaction)
        await send_export(interaction, await actor(interaction), element)

    @element.command(name="delete", description="Delete one of your Elements (asks first)")
    @app_commands.describe(element="One of your Elements")
    async def delete(self, interaction: discord.Interaction, element: str) -> None:
        await defer(interaction)
        me = await actor(interaction)
        info = await services_of(interaction).elements.get(me, element)
        if not info.is_own and not me.is_admin:
            raise Forbidden(f"“{info.name}” belongs to {info.owner_name}.",
                            "You can use shared Elements, but only their owner can change or delete them.")
        await reply(interaction, **er.delete_confirm(info, interaction.user.id))

    # -- autocomplete for element options -----------------------------------------------------------------------

    @info.autocomplete("element")
    @export.autocomplete("element")
    async def visible_elements(self, interaction: discord.Interaction, current: str
                               ) -> list[app_commands.Choice[str]]:
        async def make() -> list[app_commands.Choice[str]]:
            me = await read_actor(interaction)
            return choices(await services_of(interaction).elements.autocomplete(me, current, ready_only=False))
        return await safe_choices(make)

    @share.autocomplete("element")
    @delete.autocomplete("element")
    async def own_elements(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        async def make() -> list[app_commands.Choice[str]]:
            me = await read_actor(interaction)
            needle = current.strip().casefold()
            own = await services_of(interaction).elements.list_own(me)
            return choices([(f"{e.name} · {e.base_model} · {e.status}", e.name) for e in own
                            if needle in e.name.casefold()])
        return await safe_choices(make)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Elements(bot))
