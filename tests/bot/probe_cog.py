"""A test-only extension that exercises every interaction path the real cogs will use: domain errors, bugs,
routed buttons/selects/modals, a message context menu, files, follow-ups (edited/deleted by id)."""

from __future__ import annotations

import io

import discord
from discord import app_commands
from discord.ext import commands

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
from storage.errors import QuotaExceeded


class RenameModal(discord.ui.Modal, title="Rename"):
    def __init__(self, item_id: str) -> None:
        super().__init__(custom_id=custom_id("probe", "renamed", item_id))
        self.add_item(discord.ui.TextInput(label="New name", custom_id="name", max_length=32))


class Probe(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.count_menu = app_commands.ContextMenu(name="Count attachments", callback=self.count_attachments)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.count_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.count_menu.name, type=self.count_menu.type)

    probe = app_commands.Group(name="probe", description="Test-only nested commands")
    deep = app_commands.Group(name="deep", description="A subcommand group", parent=probe)

    @probe.command(name="file", description="Echo an attachment back as a file")
    async def echo_file(self, interaction: discord.Interaction, attachment: discord.Attachment) -> None:
        data = await attachment.read()
        await interaction.response.send_message(f"{attachment.filename}: {len(data)} bytes", ephemeral=True,
                                                file=discord.File(io.BytesIO(data), "echo-" + attachment.filename))

    @deep.command(name="echo", description="Echo text from a nested subcommand")
    @app_commands.describe(text="What to echo", times="How many times")
    async def echo_text(self, interaction: discord.Interaction, text: str,
                        times: app_commands.Range[int, 1, 3] = 1) -> None:
        await reply(interaction, " ".join([text] * times))

    @probe.command(name="whoami", description="Who the storage layer thinks you are")
    async def whoami(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        me = await actor(interaction)
        role = " (admin)" if me.is_admin else ""
        await reply(interaction, f"{me.external_id} #{me.user_id} in {me.guild_id} as {me.label}{role}")

    @app_commands.command(name="boom", description="Raise an unexpected error (test only)")
    async def boom(self, interaction: discord.Interaction) -> None:
        raise RuntimeError("kaboom")

    @app_commands.command(name="quota", description="Raise a domain error after deferring (test only)")
    async def quota(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        raise QuotaExceeded("You have used all 5 training slots this month.", "Slots free up on the 1st.")

    @app_commands.command(name="buttons", description="Post routed components (test only)")
    async def buttons(self, interaction: discord.Interaction) -> None:
        select = RoutedSelect(custom_id=custom_id("probe", "pick", owner=interaction.user.id), min_values=1,
                              max_values=2, options=[discord.SelectOption(label=x, value=x) for x in "abc"])
        view = routed_view(
            button("Fail", custom_id("probe", "fail", 42)),
            button("Echo", custom_id("probe", "echo", 7, "x")),
            button("Gone", custom_id("probe", "missing")),
            button("Rename", custom_id("probe", "rename", 99)),
            select,
        )
        await reply(interaction, "buttons", ephemeral=False, view=view)

    @app_commands.command(name="steps", description="Defer, follow up, edit and delete by id (test only)")
    async def steps(self, interaction: discord.Interaction) -> None:
        await defer(interaction, ephemeral=False)
        await reply(interaction, "step 1", ephemeral=False)  # fills the deferred "thinking…" original
        second = await reply(interaction, "step 2", file=discord.File(io.BytesIO(b"hi"), "hello.txt"))
        assert second is not None
        await interaction.followup.edit_message(
            second.id, content="step 2 done",
            attachments=[*second.attachments, discord.File(io.BytesIO(b"more"), "more.txt")])
        third = await reply(interaction, "step 3", ephemeral=False)
        assert third is not None
        await third.delete()
        await interaction.edit_original_response(content="step 1 (edited)")

    @component("probe", "fail")
    async def fail(self, interaction: discord.Interaction, number: str) -> None:
        raise QuotaExceeded(f"No slot for {number}.")

    @component("probe", "echo")
    async def echo(self, interaction: discord.Interaction, number: str, letter: str) -> None:
        await reply(interaction, f"echo {number} {letter} for {interaction.user.name}")

    @component("probe", "pick")
    async def pick(self, interaction: discord.Interaction) -> None:
        await update(interaction, "picked " + ",".join(selected_values(interaction)))

    @component("probe", "rename")
    async def rename(self, interaction: discord.Interaction, item_id: str) -> None:
        await interaction.response.send_modal(RenameModal(item_id))

    @component("probe", "renamed")
    async def renamed(self, interaction: discord.Interaction, item_id: str) -> None:
        await update(interaction, f"item {item_id} is now {modal_values(interaction)['name']}")

    async def count_attachments(self, interaction: discord.Interaction, message: discord.Message) -> None:
        names = ", ".join(a.filename for a in message.attachments)
        await reply(interaction, f"{len(message.attachments)} attachment(s): {names}")


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Probe(bot))
