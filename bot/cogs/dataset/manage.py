"""``/dataset create|list|show|caption|remove|group|rename|delete|export``: parse → dataset use case → render."""

from __future__ import annotations

import io
import re

import discord
from discord import app_commands

from bot import render
from bot.cogs.dataset.common import DatasetCogBase, dataset_names, parse_indices
from bot.context import actor, button, component, custom_id, defer, reply, routed_view, update
from bot.dataset_render import list_embed, show_embed
from bot.dataset_render import name as _q
from storage.errors import InvalidInput
from storage.names import MAX_CAPTION_CHARS, MAX_DATASET_DESCRIPTION, MAX_NAME
from trainer.config import MAX_GROUP_NAME, MAX_GROUP_TRIGGER, MAX_REPEATS
from trainer.vocabulary import CategoryName

SHEET_FILE = "contact-sheet.png"
Category = CategoryName


def _zip_filename(dataset: str) -> str:
    """An ASCII file name for Discord (the dataset name may be anything)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-.") or "dataset"
    return f"{slug[:60]}.zip"


async def base_model_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    settings = interaction.client.settings  # type: ignore[attr-defined]
    needle = current.strip().casefold()
    return [app_commands.Choice(name=render.truncate(f"{n} ({spec.family.value})", 100), value=n)
            for n, spec in settings.base_models.items() if needle in n.casefold()][:25]


class DatasetManageMixin(DatasetCogBase):
    @app_commands.command(name="create", description="Create an image dataset to train an Element on")
    @app_commands.describe(name="A name you'll recognise, e.g. my-cat", description="What the images show (optional)")
    async def create(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, MAX_NAME],
                     description: app_commands.Range[str, 0, MAX_DATASET_DESCRIPTION] = "") -> None:
        await defer(interaction)  # acknowledge before the database
        me = await actor(interaction)
        info = await self.services.datasets.create(me, name, description)
        await reply(interaction, f"✅ Created dataset {_q(info.name)}. Add images with `/dataset add`, by "
                                 "right-clicking a message → Apps → **Add to dataset**, with `/dataset upload` "
                                 "(send them to me in DMs) or as a .zip with .txt captions.")

    @app_commands.command(name="list", description="Your datasets and how many images each has")
    async def list_(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        me = await actor(interaction)
        datasets = await self.services.datasets.list(me)
        if not datasets:
            await reply(interaction, "You have no datasets yet. Create one with `/dataset create`.")
            return
        await reply(interaction, embed=list_embed(datasets))

    @app_commands.command(name="show", description="Contact sheet, image counts per base model and checks")
    @app_commands.describe(name="The dataset", category="What you'll train (tunes the checks)",
                           base="Base model you'll train on (tunes the checks)")
    @app_commands.autocomplete(name=dataset_names, base=base_model_names)
    async def show(self, interaction: discord.Interaction, name: str, category: Category | None = None,
                   base: str | None = None) -> None:
        await defer(interaction)  # decoding thumbnails takes a moment
        me = await actor(interaction)
        datasets = self.services.datasets
        findings = await datasets.lint(me, name, category=category, base_model=base)
        info = await datasets.get(me, name)
        counts = datasets.counts_vs_limits(info)
        files = []
        if info.image_count:
            sheet = await datasets.contact_sheet(me, name)
            files.append(discord.File(io.BytesIO(sheet), SHEET_FILE))
        embed = show_embed(info, counts, findings, self.bot.settings, sheet=SHEET_FILE if files else None)
        await reply(interaction, embed=embed, files=files)

    @app_commands.command(name="caption", description="Set the caption of one image")
    @app_commands.describe(name="The dataset", index="Image number (see /dataset show)",
                           text="The caption (empty it with a single -)")
    @app_commands.autocomplete(name=dataset_names)
    async def caption(self, interaction: discord.Interaction, name: str, index: app_commands.Range[int, 1, 10_000],
                      text: app_commands.Range[str, 1, MAX_CAPTION_CHARS]) -> None:
        await defer(interaction)
        me = await actor(interaction)
        caption = "" if text.strip() == "-" else text
        image = await self.services.datasets.set_caption(me, name, index, caption)
        shown = f"“{render.escape(render.truncate(image.caption, 1500))}”" if image.caption else "(none)"
        await reply(interaction, f"✏️ Caption of #{image.index} in {_q(name)}: {shown}")

    @app_commands.command(name="remove", description="Remove images by number, e.g. 3, 5-7")
    @app_commands.describe(name="The dataset", indices="Image numbers from /dataset show, e.g. 3, 5-7")
    @app_commands.autocomplete(name=dataset_names)
    async def remove(self, interaction: discord.Interaction, name: str,
                     indices: app_commands.Range[str, 1, 200]) -> None:
        wanted = parse_indices(indices)
        await defer(interaction)
        me = await actor(interaction)
        removed = await self.services.datasets.remove_images(me, name, wanted)
        info = await self.services.datasets.get(me, name)
        labels = ", ".join(f"#{i.index}" for i in removed)
        await reply(interaction, render.truncate(
            f"🗑️ Removed {render.plural(len(removed), 'image')} ({labels}) from {_q(info.name)}; the others are "
            f"renumbered 1–{info.image_count}, now {render.plural(info.image_count, 'image')}.", render.CONTENT_LIMIT))

    @app_commands.command(name="group", description="Put images into a named group with its own trigger word")
    @app_commands.describe(name="The dataset", group="Group name, e.g. outfit2",
                           indices="Images to put in it, e.g. 3, 5-7 (optional)",
                           trigger="The group's trigger or class word (optional)",
                           repeats="Fixed repeats (leave out to balance the groups automatically)",
                           remove="Delete the group (its images stay in the dataset)")
    @app_commands.autocomplete(name=dataset_names)
    async def group(self, interaction: discord.Interaction, name: str,
                    group: app_commands.Range[str, 1, MAX_GROUP_NAME],
                    indices: app_commands.Range[str, 1, 200] | None = None,
                    trigger: app_commands.Range[str, 1, MAX_GROUP_TRIGGER] | None = None,
                    repeats: app_commands.Range[int, 1, MAX_REPEATS] | None = None, remove: bool = False) -> None:
        await defer(interaction)  # acknowledge before the database
        me = await actor(interaction)
        datasets = self.services.datasets
        if remove:
            gone = await datasets.remove_group(me, name, group)
            await reply(interaction, f"🗑️ Removed group **{render.escape(gone.name)}** from {_q(name)}; its "
                                     f"{render.plural(gone.image_count, 'image')} are in no group now.")
            return
        wanted = parse_indices(indices) if indices else []
        info = await datasets.set_group(me, name, group, wanted, trigger=trigger, repeats=repeats)
        await reply(interaction, f"🏷️ Group **{render.escape(info.name)}** in {_q(name)}: "
                                 f"{render.plural(info.image_count, 'image')}, trigger "
                                 f"`{render.escape(info.trigger) or '—'}`, repeats "
                                 f"{info.repeats if info.repeats else 'balanced'}. Generate with it as "
                                 f"`element1:<Element>@{render.escape(info.name)}`.")

    @app_commands.command(name="rename", description="Rename a dataset")
    @app_commands.describe(name="The dataset", new_name="Its new name")
    @app_commands.autocomplete(name=dataset_names)
    async def rename(self, interaction: discord.Interaction, name: str,
                     new_name: app_commands.Range[str, 1, MAX_NAME]) -> None:
        await defer(interaction)
        me = await actor(interaction)
        info = await self.services.datasets.rename(me, name, new_name)
        await reply(interaction, f"✅ Renamed {_q(name)} to {_q(info.name)}.")

    @app_commands.command(name="delete", description="Delete a dataset (asks first)")
    @app_commands.describe(name="The dataset")
    @app_commands.autocomplete(name=dataset_names)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        await defer(interaction)
        me = await actor(interaction)
        info = await self.services.datasets.get(me, name)
        owner = interaction.user.id
        view = routed_view(
            button("Delete", custom_id("dataset", "delete", info.id, owner=owner),
                   style=discord.ButtonStyle.danger, emoji="🗑️"),
            button("Keep it", custom_id("dataset", "keep", owner=owner)),
        )
        await reply(interaction, f"Delete {_q(info.name)} and its {render.plural(info.image_count, 'image')}? "
                                 "This can't be undone. Elements already trained on it keep working: they keep "
                                 "their own weights and a record of the images they learned from.", view=view)

    @component("dataset", "delete")
    async def confirm_delete(self, interaction: discord.Interaction, dataset_id: str) -> None:
        await defer(interaction, thinking=False)
        me = await actor(interaction)
        match = next((d for d in await self.services.datasets.list(me) if str(d.id) == dataset_id), None)
        if match is None:
            await update(interaction, "That dataset is already gone.", view=None)
            return
        info = await self.services.datasets.delete(me, match.name)
        await update(interaction, f"🗑️ Deleted {_q(info.name)} ({render.plural(info.image_count, 'image')}). "
                                  "Elements trained on it keep working.", view=None)

    @component("dataset", "keep")
    async def cancel_delete(self, interaction: discord.Interaction) -> None:
        await update(interaction, "👍 Kept it; nothing was deleted.", view=None)

    @app_commands.command(name="export", description="Download a dataset as a .zip (images + .txt captions)")
    @app_commands.describe(name="The dataset")
    @app_commands.autocomplete(name=dataset_names)
    async def export(self, interaction: discord.Interaction, name: str) -> None:
        await defer(interaction)
        me = await actor(interaction)
        info = await self.services.datasets.get(me, name)
        if not info.image_count:
            raise InvalidInput(f"{_q(info.name)} has no images to export.", "Add some with /dataset add first.")
        # Refused from the image sizes before anything is fetched when over Discord's limit here; built in a
        # temporary file and uploaded from it (never held in memory whole).
        async with self.services.datasets.export_zip(me, name, max_bytes=interaction.filesize_limit) as path:
            await reply(interaction, f"📦 {_q(info.name)}: {render.plural(info.image_count, 'image')} with "
                                     "captions (the format `.zip` imports read).",
                        file=discord.File(path, _zip_filename(info.name)))
