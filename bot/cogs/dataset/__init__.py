"""``/dataset …`` and the message menu **Add to dataset**: one cog (one ``/dataset`` command group) assembled
from mixins, one per concern: manage (create/list/show/caption/remove/rename/delete/export),
add (attachments and the message menu), upload (DM upload sessions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from bot.attachments import AttachmentDownloader
from bot.cogs.dataset.add import DatasetAddMixin, PendingPicks
from bot.cogs.dataset.manage import DatasetManageMixin
from bot.cogs.dataset.upload import DatasetUploadMixin

if TYPE_CHECKING:
    from bot.app import AtelierBot

ADD_MENU = "Add to dataset"


class Dataset(DatasetManageMixin, DatasetAddMixin, DatasetUploadMixin, commands.GroupCog,
              group_name="dataset", group_description="Collect the images an Element is trained on"):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.downloader = AttachmentDownloader()
        self.pending = PendingPicks(bot)
        self.add_menu = app_commands.ContextMenu(name=ADD_MENU, callback=self.add_from_message)
        super().__init__()

    async def cog_load(self) -> None:
        await self.downloader.start()
        self.bot.tree.add_command(self.add_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.add_menu.name, type=self.add_menu.type)
        await self.downloader.aclose()


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Dataset(bot))
