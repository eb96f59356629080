"""Adding images: ``/dataset add`` with up to 10 attachments, and the message menu **Add to dataset**.

The message menu answers with a select of the user's datasets. Discord puts a message's attachments in the
context-menu interaction (even without the message-content intent, which the bot does not ask for), but a later
REST fetch of a server message returns it without attachments; so the attachment references are stored in the
database (``bot_state``, kind ``attachment_pick``) until the pick or ``PICK_TTL_S``, keyed by who asked and which
message: a pick made after a bot restart still works. When nothing is stored (expired), the select falls back
to fetching the message, which still works in DMs and for the bot's own messages (e.g. generated images).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot import render
from bot.attachments import looks_like_image
from bot.cogs.dataset.common import DatasetCogBase, dataset_names
from bot.context import (
    RoutedSelect,
    actor,
    component,
    custom_id,
    defer,
    reply,
    routed_view,
    selected_values,
    services_of,
    update,
)
from bot.dataset_render import add_report_embed
from storage.errors import InvalidInput
from storage.images.sniff import accepted_formats

PICK_TTL_S = 15 * 60  # Discord's interaction tokens last 15 minutes; the select is useless after that
IMAGE_HELP = f"A {accepted_formats()} image, or a .zip of images with same-named .txt captions"
NO_IMAGES = InvalidInput("There are no images in that message.",
                         f"Right-click a message with image attachments ({accepted_formats()}) or a .zip, then "
                         "Apps → Add to dataset.")


@dataclass(frozen=True)
class AttachmentRef:
    """Enough of a message attachment to download it later (satisfies bot.attachments.AttachmentLike)."""

    filename: str
    size: int
    url: str
    content_type: str | None

    @classmethod
    def of(cls, att: discord.Attachment) -> AttachmentRef:
        return cls(att.filename, att.size, att.url, att.content_type)


class PendingPicks:
    """Attachments of messages someone right-clicked, waiting for them to pick a dataset (stored, with a TTL)."""

    KIND = "attachment_pick"

    def __init__(self, bot: Any, ttl_s: float = PICK_TTL_S) -> None:
        self.bot = bot
        self.ttl_s = ttl_s

    @property
    def store(self) -> Any:
        return services_of(self.bot).bot_state

    async def put(self, owner: int, message_id: int, refs: list[AttachmentRef]) -> None:
        await self.store.put(self.KIND, f"{owner}:{message_id}", {"refs": [dataclasses.asdict(r) for r in refs]},
                             ttl_s=self.ttl_s, owner=f"discord:{owner}")

    async def get(self, owner: int, message_id: int) -> list[AttachmentRef] | None:
        held = await self.store.get(self.KIND, f"{owner}:{message_id}")
        if held is None or held.expired:
            return None
        return [AttachmentRef(**r) for r in held.payload.get("refs", [])]

    async def drop(self, owner: int, message_id: int) -> None:
        await self.store.drop(self.KIND, f"{owner}:{message_id}")


def image_refs(message: discord.Message) -> list[AttachmentRef]:
    return [AttachmentRef.of(a) for a in message.attachments if looks_like_image(a)]


class DatasetAddMixin(DatasetCogBase):
    pending: PendingPicks

    @app_commands.command(name="add", description="Add images (or a .zip with .txt captions) to a dataset")
    @app_commands.describe(name="The dataset", image1=IMAGE_HELP, image2=IMAGE_HELP, image3=IMAGE_HELP,
                           image4=IMAGE_HELP, image5=IMAGE_HELP, image6=IMAGE_HELP, image7=IMAGE_HELP,
                           image8=IMAGE_HELP, image9=IMAGE_HELP, image10=IMAGE_HELP)
    @app_commands.autocomplete(name=dataset_names)
    async def add(self, interaction: discord.Interaction, name: str, image1: discord.Attachment,
                  image2: discord.Attachment | None = None, image3: discord.Attachment | None = None,
                  image4: discord.Attachment | None = None, image5: discord.Attachment | None = None,
                  image6: discord.Attachment | None = None, image7: discord.Attachment | None = None,
                  image8: discord.Attachment | None = None, image9: discord.Attachment | None = None,
                  image10: discord.Attachment | None = None) -> None:
        await defer(interaction)  # downloading and decoding take longer than Discord's 3 s
        files = [a for a in (image1, image2, image3, image4, image5, image6, image7, image8, image9, image10)
                 if a is not None]
        me = await actor(interaction)
        report = await self.add_attachments(me, name, files, self.caps(interaction))
        await reply(interaction, embed=add_report_embed(report))

    # -- message menu ------------------------------------------------------------------------------------------

    async def add_from_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Message menu "Add to dataset": ask which dataset, remembering the message's attachments."""
        refs = image_refs(message)
        if not refs:
            raise NO_IMAGES
        await defer(interaction)
        me = await actor(interaction)
        datasets = await self.services.datasets.list(me)
        if not datasets:
            raise InvalidInput("You have no datasets yet.", "Create one with /dataset create, then try again.")
        datasets.sort(key=lambda d: d.updated_at, reverse=True)
        owner = interaction.user.id
        await self.pending.put(owner, message.id, refs)
        select = RoutedSelect(
            custom_id=custom_id("dataset", "pick", message.channel.id, message.id, owner=owner),
            placeholder="Choose a dataset",
            options=[discord.SelectOption(label=render.truncate(d.name, 100), value=d.name,
                                          description=render.plural(d.image_count, "image"))
                     for d in datasets[:25]],
        )
        more = f" (the 25 of your {len(datasets)} datasets changed last)" if len(datasets) > 25 else ""
        await reply(interaction, f"Add {render.plural(len(refs), 'file')} from that message to which "
                                 f"dataset?{more}", view=routed_view(select))

    @component("dataset", "pick")
    async def pick_dataset(self, interaction: discord.Interaction, channel_id: str, message_id: str) -> None:
        """The user chose the dataset: download the message's images and add them."""
        values = selected_values(interaction)
        if not values:
            raise InvalidInput("No dataset was chosen.", "Pick one from the list.")
        await defer(interaction, thinking=False)  # the select's message is edited with the report
        owner = interaction.user.id
        refs = await self._refs_for(owner, int(channel_id), int(message_id))
        me = await actor(interaction)
        report = await self.add_attachments(me, values[0], refs, self.caps(interaction))
        await self.pending.drop(owner, int(message_id))
        await update(interaction, content=None, embed=add_report_embed(report), view=None)

    async def _refs_for(self, owner: int, channel_id: int, message_id: int) -> list[AttachmentRef]:
        refs = await self.pending.get(owner, message_id)
        if refs is not None:
            return refs
        # nothing stored (older than the TTL): ask Discord for the message again
        try:
            channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
            message = await channel.fetch_message(message_id)  # type: ignore[union-attr]
        except (discord.NotFound, discord.Forbidden, AttributeError):
            message = None
        refs = image_refs(message) if message is not None else []
        if not refs:
            raise InvalidInput("This menu has expired.", "Right-click the message → Apps → Add to dataset again.")
        return refs
