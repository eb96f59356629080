"""One error path for commands, buttons and modals: domain errors become a friendly ephemeral reply, bugs get a
logged reference the user can quote."""

from __future__ import annotations

import logging
import secrets

import discord
from discord import app_commands

from bot.render import error_text
from storage.errors import AtelierError
from storage.settings import SettingsError

log = logging.getLogger("atelier.bot")

DM_CLOSED = 50007  # Discord: "Cannot send messages to this user"


class BotStartupError(SettingsError):
    """The bot cannot start; the one-line message says which setting to fix."""


class NotYours(app_commands.CheckFailure):
    """Someone pressed a button that belongs to another user's command."""

    def __init__(self) -> None:
        super().__init__("That button belongs to someone else's command.")


def unwrap(error: BaseException) -> BaseException:
    """The exception a cog actually raised (discord.py wraps it in CommandInvokeError/TransformerError)."""
    while isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.TransformerError) and isinstance(error.__cause__, AtelierError):
        return error.__cause__
    return error


def friendly(error: BaseException) -> str | None:
    """The reply for an expected failure, or None when ``error`` is a bug."""
    if isinstance(error, AtelierError):
        return error_text(error.message, error.hint)
    if isinstance(error, NotYours):
        return error_text(str(error), "Run the command yourself to get your own buttons.")
    if isinstance(error, app_commands.CommandOnCooldown):
        return error_text("You're doing that too fast.", f"Try again in {error.retry_after:.0f}s.")
    if isinstance(error, app_commands.NoPrivateMessage):
        return error_text("This command only works in a server.", "Run it in a channel of a server I'm in.")
    if isinstance(error, app_commands.BotMissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return error_text(f"I'm missing the permission(s) {perms} here.", "Ask a server admin to grant them to me.")
    if isinstance(error, app_commands.MissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return error_text(f"You need the permission(s) {perms} for this.")
    if isinstance(error, app_commands.CheckFailure):
        return error_text(str(error) or "You can't use this command here.")
    if isinstance(error, app_commands.TransformerError):
        return error_text(f"{error.value!r} isn't a valid value for that option.",
                          "Pick one of the suggestions Discord shows while you type.")
    if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
        return error_text("Discord showed you an outdated version of this command.",
                          "Wait a minute (or restart your Discord app) and try again.")
    if isinstance(error, discord.Forbidden) and error.code == DM_CLOSED:
        return error_text("I can't send you direct messages.",
                          "Allow DMs from server members (server menu → Privacy Settings) so results reach you.")
    return None


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer ``interaction`` with what went wrong; log bugs with a short reference."""
    original = unwrap(error)
    text = friendly(original)
    if text is None:
        ref = secrets.token_hex(3).upper()
        command = interaction.command.qualified_name if interaction.command else interaction.data
        log.error("unhandled error (ref %s) in %s by user %s", ref, command, interaction.user.id,
                  exc_info=original)
        text = error_text(f"Something went wrong (ref {ref}).",
                          "It has been logged for the bot admins; try again in a moment.")
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
        else:
            await interaction.response.send_message(text, ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())
    except discord.HTTPException as exc:
        # expired (15 min) or unknown interaction: nobody to tell any more; keep the trace for admins
        log.warning("could not report an error to user %s: %s", interaction.user.id, exc)
