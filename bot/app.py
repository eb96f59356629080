"""The Discord bot: dependencies passed in, cogs loaded in ``setup_hook``, commands synced, one error handler.

``run_bot(settings, services)`` is what ``atelier bot`` / ``atelier run`` call.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.cogs import COGS
from bot.command_sync import sync_if_changed
from bot.context import NO_MENTIONS, ComponentRouter
from bot.delivery_loop import DeliveryRunner, wants_delivery
from bot.errors import BotStartupError, report_error
from bot.housekeeping import Housekeeping, wants_housekeeping
from storage.settings import Settings

if TYPE_CHECKING:
    from storage.queue.outbox import Deliverer
    from storage.services import Services

log = logging.getLogger("atelier.bot")

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg/"


def apply_discord_endpoints(settings: Settings) -> None:
    """Point discord.py at ``ATELIER_DISCORD_API_BASE`` / ``ATELIER_DISCORD_GATEWAY_URL`` (an emulator or a
    proxy), or back at Discord when unset. Idempotent; called before every login because discord.py keeps
    both as class attributes (one endpoint pair per process)."""
    base = (settings.discord_api_base or DISCORD_API_BASE).rstrip("/")
    if not re.search(r"/api/v\d+$", base):
        base += "/api/v10"
    Route.BASE = base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url or DISCORD_GATEWAY)


def bot_intents() -> discord.Intents:
    """No privileged intents: slash commands and DMs need neither message content, members nor presences."""
    intents = discord.Intents.default()
    intents.message_content = False
    intents.members = False
    intents.presences = False
    return intents


def discord_token(settings: Settings) -> str:
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    token = token.removeprefix("Bot ").strip()  # discord.py adds the "Bot " prefix itself
    if not token:
        raise BotStartupError("set ATELIER_DISCORD_TOKEN to your bot token "
                              "(Discord Developer Portal → your application → Bot → Reset Token)")
    return token


class AtelierTree(app_commands.CommandTree):
    """The command tree whose ``on_error`` is the bot's single app-command error handler."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


class AtelierBot(commands.Bot):
    """The Atelier Discord front end. ``services`` are the storage use cases (built by the caller)."""

    def __init__(self, *, services: Services | None, settings: Settings, cogs: Sequence[str] = COGS,
                 **options: Any) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=bot_intents(), help_command=None,
                         allowed_mentions=NO_MENTIONS, tree_cls=AtelierTree, **options)
        self.services = services
        self.settings = settings
        self.cog_modules = tuple(cogs)
        self.router = ComponentRouter(self)  # persistent buttons/selects/modals (bot.context)
        self.synced_commands: list[app_commands.AppCommand] = []
        self.force_sync = False  # `atelier bot --sync`: PUT the commands even when their hash is unchanged
        self.commands_synced = False  # whether this start PUT the commands (False: unchanged, read back)
        # Upload-session timeouts and expired bot state (bot/housekeeping.py).
        self.housekeeping: Housekeeping | None = None
        # Job notifications (bot.delivery_loop): started in setup_hook when services include the job side.
        self.notification_fallback: Deliverer | None = None  # for non-Discord users' notifications (console)
        self.delivery: DeliveryRunner | None = None
        # Operator-level training overrides applied under each request's own options (e.g. a small resolution
        # on a CPU-only box, or fast settings in tests); empty = the category presets.
        self.training_overrides: dict[str, Any] = {}

    async def login(self, token: str) -> None:
        apply_discord_endpoints(self.settings)
        await super().login(token)

    async def setup_hook(self) -> None:
        for module in self.cog_modules:
            await self.load_extension(module)
        self.synced_commands = await self.sync_commands()
        if wants_housekeeping(self):
            self.housekeeping = Housekeeping(self)
            self.housekeeping.start()
        if wants_delivery(self):
            self.delivery = DeliveryRunner(self, fallback=self.notification_fallback)
            self.delivery.start()
        # A full (generation 2) garbage collection walks every live object: with discord.py, SQLAlchemy, PIL …
        # loaded, that stops the event loop for hundreds of ms on a busy machine (bench/bench_discord_load.py
        # measured 317 ms), and no interaction is acknowledged meanwhile. What is alive after start-up lives for
        # the whole run, so take it out of the collector's sight once.
        gc.collect()
        gc.freeze()

    async def close(self) -> None:
        if self.housekeeping is not None:
            await self.housekeeping.stop()
            self.housekeeping = None
        if self.delivery is not None:
            await self.delivery.stop()
            self.delivery = None
        await super().close()
        gc.unfreeze()  # what setup_hook froze may be collected again (a process that starts another bot, tests)

    async def sync_commands(self) -> list[app_commands.AppCommand]:
        """Register the commands when their definitions changed (or ``force_sync``): instantly in ``dev_guild``
        when set, else globally (Discord may take a while to show global changes). See bot/command_sync.py."""
        store = getattr(self.services, "bot_state", None)
        result = await sync_if_changed(self.tree, store, guild_id=self.settings.dev_guild, force=self.force_sync)
        self.commands_synced = result.synced
        where = f"guild {self.settings.dev_guild}" if self.settings.dev_guild else "globally"
        log.info("%s %d commands %s", "synced" if result.synced else "kept", len(result.commands), where)
        return result.commands

    async def add_cog(self, cog: commands.Cog, /, **kwargs: Any) -> None:
        await super().add_cog(cog, **kwargs)
        self.router.register(cog)

    async def remove_cog(self, name: str, /, **kwargs: Any) -> commands.Cog | None:
        cog = await super().remove_cog(name, **kwargs)
        if cog is not None:
            self.router.unregister(cog)
        return cog

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await self.router.dispatch(interaction)

    async def on_ready(self) -> None:
        log.info("connected as %s (%s) to %d guild(s)", self.user, getattr(self.user, "id", "?"), len(self.guilds))


async def run_bot(settings: Settings, services: Services, *, cogs: Sequence[str] = COGS,
                  notification_fallback: Deliverer | None = None, force_sync: bool = False) -> None:
    """Run the bot until it is closed; startup problems raise :class:`BotStartupError` (one line).

    ``notification_fallback``: a :class:`storage.queue.outbox.Deliverer` for notifications of non-Discord users.
    ``force_sync``: register the commands with Discord even when they did not change."""
    token = discord_token(settings)
    apply_discord_endpoints(settings)
    bot = AtelierBot(services=services, settings=settings, cogs=cogs)
    bot.notification_fallback = notification_fallback
    bot.force_sync = force_sync
    async with bot:
        try:
            await bot.start(token)
        except discord.LoginFailure:
            raise BotStartupError("Discord rejected the token in ATELIER_DISCORD_TOKEN — copy it again from the "
                                  "Developer Portal (your application → Bot → Reset Token)") from None
        except discord.PrivilegedIntentsRequired:
            raise BotStartupError("Discord refused the gateway intents the bot asked for; Atelier needs no "
                                  "privileged intents, so check ATELIER_DISCORD_GATEWAY_URL") from None
