"""DM upload sessions: ``/dataset upload name`` opens one (the bot DMs "send images here"), images the user then
sends the bot in DMs go into that dataset (one reply per message), until ``/dataset done``, "done" typed in the
DM, or the session's timeout. The session itself lives in storage (survives restarts, one per user).

Reading DMs needs no privileged intent: Discord always delivers DM content and attachments to the bot.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.cogs.dataset.common import DatasetCogBase, dataset_names
from bot.context import NO_MENTIONS, actor, defer, reply, send_dm
from bot.dataset_render import add_report_embed, timestamp
from bot.dataset_render import name as quoted
from storage.actors import Actor
from storage.datasets import MAX_UPLOAD_MINUTES
from storage.db.models import utcnow
from storage.errors import AtelierError, InvalidInput
from storage.images.sniff import accepted_formats

log = logging.getLogger("atelier.bot")

DONE_WORDS = {"done", "stop", "finish", "finished", "/done"}
NO_SESSION = InvalidInput("You have no upload session open.",
                          "Start one with /dataset upload <name> in a server where I am, then send images here.")


class DatasetUploadMixin(DatasetCogBase):
    @app_commands.command(name="upload", description="Send me images in DMs and they go into this dataset")
    @app_commands.describe(name="The dataset", minutes="How long the session stays open (default 15 minutes)")
    @app_commands.autocomplete(name=dataset_names)
    async def upload(self, interaction: discord.Interaction, name: str,
                     minutes: app_commands.Range[int, 1, MAX_UPLOAD_MINUTES] = 15) -> None:
        await defer(interaction)
        me = await actor(interaction)
        info = await self.services.datasets.start_upload_session(me, name, minutes=minutes)
        until = utcnow() + timedelta(minutes=minutes)
        dm = await send_dm(
            self.bot, interaction.user.id,
            f"📥 Upload session for {quoted(info.name)} ({render.plural(info.image_count, 'image')} so far) is open "
            f"until {timestamp(until, 't')}. Send me images here ({accepted_formats()}, up to 10 per message) or a "
            ".zip with .txt captions; I'll answer each message with what I added. Type **done** (or use "
            "`/dataset done`) when you're finished.")
        if dm is None:
            await self.services.datasets.end_upload_session(me)
            raise InvalidInput("I can't send you direct messages, so there is nowhere to upload to.",
                               "Allow DMs from server members (server menu → Privacy Settings), or add images "
                               "with /dataset add.")
        await reply(interaction, f"📬 Check your DMs: images you send me there go into {quoted(info.name)} until "
                                 f"{timestamp(until, 't')} ({timestamp(until)}).")

    @app_commands.command(name="done", description="Close your DM upload session")
    async def done(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        me = await actor(interaction)
        await reply(interaction, await self._close_session(me))

    async def _close_session(self, me: Actor) -> str:
        info = await self.services.datasets.upload_session(me)
        if not await self.services.datasets.end_upload_session(me):
            raise NO_SESSION
        if info is None:
            return "Your upload session had already timed out; it is closed now."
        return (f"✅ Upload session closed. {quoted(info.name)} has "
                f"{render.plural(info.image_count, 'image')}; see it with `/dataset show`.")

    # -- DMs -----------------------------------------------------------------------------------------------------

    @commands.Cog.listener("on_message")
    async def upload_from_dm(self, message: discord.Message) -> None:
        if message.guild is not None or message.author.bot or self.bot.services is None:
            return
        wants_done = message.content.strip().casefold() in DONE_WORDS
        if not message.attachments and not wants_done:
            return  # ordinary chat in the DM: not ours to answer
        try:
            me = await self.services.users.ensure(f"discord:{message.author.id}", message.author.display_name)
            if wants_done and not message.attachments:
                await self._answer(message, await self._close_session(me))
                return
            info = await self.services.datasets.upload_session(me)
            if info is None:
                raise NO_SESSION
            async with message.channel.typing():
                report = await self.add_attachments(me, info.name, message.attachments, self.caps())
            await self._answer(message, embed=add_report_embed(report))
            if wants_done:
                await self._answer(message, await self._close_session(me))
        except AtelierError as exc:
            await self._answer(message, render.error_text(exc.message, exc.hint))
        except Exception:
            ref = secrets.token_hex(3).upper()
            log.exception("unhandled error (ref %s) in a DM upload from user %s", ref, message.author.id)
            await self._answer(message, render.error_text(f"Something went wrong (ref {ref}).",
                                                          "It has been logged; try again in a moment."))

    @staticmethod
    async def _answer(message: discord.Message, content: str | None = None, *,
                      embed: discord.Embed | None = None) -> None:
        try:
            await message.reply(content, embed=embed, allowed_mentions=NO_MENTIONS, mention_author=False)
        except discord.HTTPException as exc:  # the user closed the DM or deleted the message meanwhile
            log.info("could not answer DM upload of user %s: %s", message.author.id, exc)
