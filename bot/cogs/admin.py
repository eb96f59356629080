"""``/quota`` for everyone, and ``/admin …`` for the people who run Atelier or a server.

Who may do what (checked here in code, and again by the storage use cases — Discord's command visibility is
never relied on; ``/admin`` is visible to all members so Atelier admins without Manage Server can use it):

* ``/admin quota`` — **Atelier admins only** (``ATELIER_ADMIN_USER_IDS``, or users marked admin in the database).
  Training slots are GPU time on the operator's machine, shared by every server, so a server role must not
  grant them.
* ``/admin channels …`` and ``/admin banned-words …`` — Atelier admins, or members with **Manage Server** (or
  Administrator) in that server, as Discord reports them on the interaction (``interaction.permissions``):
  these settings only affect that server.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.context import actor, defer, reply, services_of
from bot.dataset_render import quota_text
from storage.actors import Actor
from storage.errors import Forbidden, InvalidInput
from storage.guilds import GuildConfig
from storage.quotas import MAX_SLOTS

if TYPE_CHECKING:
    from bot.app import AtelierBot

NOT_ATELIER_ADMIN = Forbidden("Only Atelier admins can change training quotas.",
                              "Atelier admins are listed in ATELIER_ADMIN_USER_IDS on the bot's host.")
NOT_SERVER_ADMIN = Forbidden("Only server admins (Manage Server) and Atelier admins can change this.",
                             "Ask someone with the Manage Server permission.")


def is_server_admin(interaction: discord.Interaction) -> bool:
    """Manage Server or Administrator in this server, from the permissions Discord sent with the interaction."""
    if interaction.guild_id is None:
        return False
    perms = interaction.permissions
    return bool(perms.administrator or perms.manage_guild)


def _channels_text(config: GuildConfig) -> str:
    if not config.generation_channels:
        return "Generation is allowed in **every channel** of this server (no list set)."
    where = ", ".join(f"<#{c}>" for c in config.generation_channels)
    return render.truncate(f"Generation is allowed only in: {where}.", render.CONTENT_LIMIT)


def _words(text: str) -> list[str]:
    """``"foo, bar baz"`` → ``["foo", "bar baz"]`` (commas separate entries; an entry may be a phrase)."""
    words = [w.strip() for w in re.split(r"[,\n]", text) if w.strip()]
    if not words:
        raise InvalidInput("No words given.", "Separate several words or phrases with commas.")
    return words


def _words_text(config: GuildConfig) -> str:
    if not config.banned_words:
        return "No banned words on this server."
    shown = ", ".join(f"`{w.replace('`', 'ˋ')}`" for w in config.banned_words)
    return render.truncate(f"🚫 Banned words ({len(config.banned_words)}): {shown}", render.CONTENT_LIMIT)


@app_commands.guild_only()
class Admin(commands.GroupCog, group_name="admin", group_description="Atelier and server settings (admins only)"):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        super().__init__()

    channels = app_commands.Group(name="channels", description="Channels where /generate is allowed")
    banned_words = app_commands.Group(name="banned-words", description="Words prompts and names may not contain")

    async def _server_admin(self, interaction: discord.Interaction) -> tuple[Actor, bool]:
        await defer(interaction)  # acknowledge before the database
        me = await actor(interaction)
        guild_admin = is_server_admin(interaction)
        if not (me.is_admin or guild_admin):
            raise NOT_SERVER_ADMIN
        return me, guild_admin

    # -- quota -------------------------------------------------------------------------------------------------

    @app_commands.command(name="quota", description="Set someone's training slots per period (Atelier admins)")
    @app_commands.describe(user="Whose slots", slots="Slots per period; leave empty to go back to the default")
    async def quota(self, interaction: discord.Interaction, user: discord.User,
                    slots: app_commands.Range[int, 0, MAX_SLOTS] | None = None) -> None:
        await defer(interaction)
        me = await actor(interaction)
        if not me.is_admin:
            raise NOT_ATELIER_ADMIN
        if user.bot:
            raise InvalidInput(f"{render.escape(user.display_name)} is a bot.", "Pick a person.")
        services = services_of(interaction)
        info = await services.quotas.set_limit(me, f"discord:{user.id}", slots)
        who = render.escape(user.display_name)
        period = render.plural(services.settings.quota_period_days, "day")
        if info.unlimited:
            text = f"{who} is an Atelier admin, so their slots stay unlimited."
        elif slots is None:
            text = f"{who} is back to the default of {info.limit} training slots per {period}"
        else:
            text = f"{who} now has {render.plural(info.limit or 0, 'training slot')} per {period}"
        if not info.unlimited:
            text += f" ({info.used} used, {info.remaining} left)."
        await reply(interaction, "🎟️ " + text)

    # -- channels ----------------------------------------------------------------------------------------------

    @channels.command(name="add", description="Allow /generate in a channel (then only in the listed ones)")
    @app_commands.describe(channel="The channel")
    async def channels_add(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        me, guild_admin = await self._server_admin(interaction)
        config = await services_of(interaction).guilds.add_generation_channels(
            me, str(interaction.guild_id), [channel.id], is_guild_admin=guild_admin)
        await reply(interaction, f"✅ Added {channel.mention}. " + _channels_text(config))

    @channels.command(name="remove", description="Stop allowing /generate in a channel")
    @app_commands.describe(channel="The channel")
    async def channels_remove(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        me, guild_admin = await self._server_admin(interaction)
        before = await services_of(interaction).guilds.get(str(interaction.guild_id))
        if str(channel.id) not in before.generation_channels:
            raise InvalidInput(f"{channel.mention} is not on the list.", _channels_text(before))
        config = await services_of(interaction).guilds.remove_generation_channels(
            me, str(interaction.guild_id), [channel.id], is_guild_admin=guild_admin)
        await reply(interaction, f"✅ Removed {channel.mention}. " + _channels_text(config))

    @channels.command(name="list", description="Where /generate is allowed on this server")
    async def channels_list(self, interaction: discord.Interaction) -> None:
        await self._server_admin(interaction)
        config = await services_of(interaction).guilds.get(str(interaction.guild_id))
        await reply(interaction, _channels_text(config))

    # -- banned words ------------------------------------------------------------------------------------------

    @banned_words.command(name="add", description="Ban words or phrases in prompts and names (comma-separated)")
    @app_commands.describe(words="One or more words or phrases, separated by commas")
    async def words_add(self, interaction: discord.Interaction, words: app_commands.Range[str, 1, 1000]) -> None:
        me, guild_admin = await self._server_admin(interaction)
        config = await services_of(interaction).guilds.add_banned_words(
            me, str(interaction.guild_id), _words(words), is_guild_admin=guild_admin)
        await reply(interaction, "✅ Saved. " + _words_text(config))

    @banned_words.command(name="remove", description="Allow banned words again (comma-separated)")
    @app_commands.describe(words="One or more banned words or phrases, separated by commas")
    async def words_remove(self, interaction: discord.Interaction,
                           words: app_commands.Range[str, 1, 1000]) -> None:
        me, guild_admin = await self._server_admin(interaction)
        guilds = services_of(interaction).guilds
        wanted = _words(words)
        before = await guilds.get(str(interaction.guild_id))
        config = await guilds.remove_banned_words(me, str(interaction.guild_id), wanted, is_guild_admin=guild_admin)
        if len(config.banned_words) == len(before.banned_words):
            raise InvalidInput("None of those words were banned.", _words_text(config))
        await reply(interaction, "✅ Removed. " + _words_text(config))

    @banned_words.command(name="list", description="The words banned on this server")
    async def words_list(self, interaction: discord.Interaction) -> None:
        await self._server_admin(interaction)
        config = await services_of(interaction).guilds.get(str(interaction.guild_id))
        await reply(interaction, _words_text(config))


class Quota(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description="Your training slots and dataset storage: used, left, when the next slot frees")
    async def quota(self, interaction: discord.Interaction) -> None:
        await defer(interaction)
        me = await actor(interaction)
        services = services_of(interaction)
        info = await services.quotas.remaining(me)
        await reply(interaction, quota_text(info, await services.datasets.storage_use(me)))


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Admin(bot))
    await bot.add_cog(Quota(bot))
