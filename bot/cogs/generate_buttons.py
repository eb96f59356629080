"""The buttons under a posted generation: Reroll, Variations, Strength grid, Hi-res ×2, Add to dataset, Info,
Delete. Only the person who generated the images may press them (the custom_id carries their id)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import generation_render as gr
from bot import render
from bot.cog_helpers import origin_of
from bot.context import (
    RoutedSelect,
    actor,
    button,
    component,
    custom_id,
    defer,
    reply,
    routed_view,
    selected_values,
    services_of,
    update,
)
from bot.delivery_state import DeliveryLog
from bot.render import escape, plural
from storage.errors import InvalidInput
from storage.generation_actions import GRID_STRENGTHS

if TYPE_CHECKING:
    from bot.app import AtelierBot


def _images_arg(values: list[str]) -> str:
    return ".".join(sorted(values, key=int)) or "all"


class GenerateButtons(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    async def _queued(self, interaction: discord.Interaction, job: object, what: str) -> None:
        position = getattr(job, "queue_position", None)
        await reply(interaction, f"{what} — job {getattr(job, 'id', '?')}"
                                 f"{f', position {position} in the queue' if position else ''}. "
                                 "I'll post the result in this channel.")

    @component("gen", "reroll")
    async def reroll(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction)
        gens = services_of(interaction).generations
        job = await gens.reroll(await actor(interaction), gen_id, origin=origin_of(interaction))
        await self._queued(interaction, job, "🎲 Rerolling with a new seed")

    @component("gen", "vary")
    async def variations(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction)
        gens = services_of(interaction).generations
        job = await gens.variations(await actor(interaction), gen_id, origin=origin_of(interaction))
        await self._queued(interaction, job, "🔀 Four variations with new seeds")

    @component("gen", "grid")
    async def strength_grid(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction)
        gens = services_of(interaction).generations
        jobs = await gens.strength_grid(await actor(interaction), gen_id, origin=origin_of(interaction))
        await reply(interaction, f"🎚️ Strength grid: {plural(len(jobs), 'image')} at strengths "
                                 f"{', '.join(f'{s:g}' for s in GRID_STRENGTHS)} with the same seed are queued "
                                 f"(jobs {jobs[0].id}–{jobs[-1].id}). I'll post the grid here when all are done.")

    @component("gen", "hires")
    async def hires(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction)
        gens = services_of(interaction).generations
        me = await actor(interaction)
        gen = await gens.get(me, gen_id)
        if gen.count <= 1:
            job = await gens.hires(me, gen.id, 1, origin=origin_of(interaction))
            await self._queued(interaction, job, "🔍 Hi-res ×2 of your image")
            return
        pick = RoutedSelect(custom_id=custom_id("gen", "hirespick", gen.id, owner=interaction.user.id),
                            placeholder="Which image?", options=[
                                discord.SelectOption(label=f"Image {i} (seed {gen.seed_of(i)})", value=str(i))
                                for i in range(1, gen.count + 1)])
        await reply(interaction, "Which image should get the hi-res ×2 pass?", view=routed_view(pick))

    @component("gen", "hirespick")
    async def hires_pick(self, interaction: discord.Interaction, gen_id: str) -> None:
        image = int((selected_values(interaction) or ["1"])[0])
        await update(interaction, f"🔍 Hi-res ×2 of image {image}…", view=None)
        gens = services_of(interaction).generations
        job = await gens.hires(await actor(interaction), gen_id, image, origin=origin_of(interaction))
        await update(interaction, f"🔍 Hi-res ×2 of image {image} — job {job.id}"
                                  f"{f', position {job.queue_position} in the queue' if job.queue_position else ''}.")

    # -- add to dataset (the bootstrap loop) -------------------------------------------------------------------

    @component("gen", "add")
    async def add(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction)
        services = services_of(interaction)
        me = await actor(interaction)
        gen = await services.generations.get(me, gen_id)
        await reply(interaction, **await self._add_menu(interaction, me, gen, "all"))

    async def _add_menu(self, interaction: discord.Interaction, me: object, gen: object, images: str) -> dict:
        datasets = await services_of(interaction).datasets.list(me)
        if not datasets:
            raise InvalidInput("You have no dataset to add to.", "Create one with /dataset create, then press again.")
        owner = interaction.user.id
        count = getattr(gen, "count", 1)
        items: list[discord.ui.Item] = []
        if count > 1:
            chosen = set(images.split(".")) if images != "all" else {str(i) for i in range(1, count + 1)}
            items.append(RoutedSelect(
                custom_id=custom_id("gen", "addimgs", gen.id, owner=owner), placeholder="Which images?",
                min_values=1, max_values=count, options=[
                    discord.SelectOption(label=f"Image {i}", value=str(i), default=str(i) in chosen)
                    for i in range(1, count + 1)]))
        items.append(RoutedSelect(
            custom_id=custom_id("gen", "addto", gen.id, images, owner=owner), placeholder="Add to which dataset?",
            options=[discord.SelectOption(label=render.truncate(d.name, 100), value=d.name[:100],
                                          description=plural(d.image_count, "image")) for d in datasets[:25]]))
        which = "all images" if images == "all" else "image " + ", ".join(images.split("."))
        return {"content": f"➕ Add {which} of generation {gen.id} to one of your datasets "
                           "(captioned with the prompt):", "view": routed_view(*items)}

    @component("gen", "addimgs")
    async def add_images_pick(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction, thinking=False)
        me = await actor(interaction)
        gen = await services_of(interaction).generations.get(me, gen_id)
        menu = await self._add_menu(interaction, me, gen, _images_arg(selected_values(interaction)))
        await update(interaction, menu["content"], view=menu["view"])

    @component("gen", "addto")
    async def add_to(self, interaction: discord.Interaction, gen_id: str, images: str) -> None:
        dataset = (selected_values(interaction) or [""])[0]
        await update(interaction, f"➕ Adding to “{escape(dataset)}”…", view=None)
        wanted = None if images == "all" else [int(i) for i in images.split(".")]
        gens = services_of(interaction).generations
        report = await gens.add_to_dataset(await actor(interaction), gen_id, dataset, wanted)
        lines = [f"➕ Added {plural(len(report.added), 'image')} to “{escape(report.dataset)}” "
                 f"(it now has {plural(report.image_count, 'image')})."]
        lines += [f"• {escape(f.filename)}: {escape(f.reason)}" for f in report.refused]
        lines += [f"• {escape(f.filename)}: ⚠️ {escape(w)}" for f in report.added for w in f.warnings]
        await update(interaction, render.truncate("\n".join(lines), render.CONTENT_LIMIT))

    # -- info / delete -------------------------------------------------------------------------------------------

    @component("gen", "info")
    async def info(self, interaction: discord.Interaction, gen_id: str) -> None:
        await defer(interaction)
        gen = await services_of(interaction).generations.get(await actor(interaction), gen_id)
        await reply(interaction, embed=gr.info_embed(gen))

    @component("gen", "delete")
    async def delete(self, interaction: discord.Interaction, gen_id: str) -> None:
        view = routed_view(
            button("Delete", custom_id("gen", "delyes", gen_id, owner=interaction.user.id),
                   style=discord.ButtonStyle.danger),
            button("Keep", custom_id("gen", "delno", owner=interaction.user.id)))
        await reply(interaction, f"Delete generation {gen_id} and its images for good?", view=view)

    @component("gen", "delyes")
    async def delete_yes(self, interaction: discord.Interaction, gen_id: str, *_old: str) -> None:
        # ``_old``: buttons posted by earlier versions also carry "channel.message"; it is ignored.
        await update(interaction, "🗑️ Deleting…", view=None)
        services = services_of(interaction)
        gen = await services.generations.delete(await actor(interaction), gen_id)
        # The messages to remove are the ones the bot itself posted for this generation (its delivery record),
        # never ids carried in a custom_id, which a crafted interaction could point at any message.
        for channel_id, message_id in (await DeliveryLog(services.db).get(gen.job_id)).sent.values():
            try:
                await self.bot.get_partial_messageable(channel_id).get_partial_message(message_id).delete()
            except (discord.NotFound, discord.Forbidden):
                pass  # already gone, or a DM the bot can no longer reach
        await update(interaction, f"🗑️ Generation {gen.id} and its {plural(gen.count, 'image')} were deleted.")

    @component("gen", "delno")
    async def delete_no(self, interaction: discord.Interaction) -> None:
        await update(interaction, "Kept.", view=None)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(GenerateButtons(bot))
