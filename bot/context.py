"""What every cog needs around an interaction: answer within Discord's 3 s (defer, then follow up), reply,
DM a user, and buttons whose custom_id carries the resource id (and owner) so they still work after a restart.

Persistent components: build them with :func:`button` / :func:`custom_id` and handle them with a cog method
decorated by :func:`component`; :class:`ComponentRouter` (owned by the bot) dispatches by custom_id::

    view = routed_view(button("Re-roll", custom_id("gen", "reroll", generation_id, owner=user.id)))

    @component("gen", "reroll")
    async def reroll(self, interaction: discord.Interaction, generation_id: str) -> None: ...
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord
from discord.utils import MISSING

from bot.errors import DM_CLOSED, NotYours, report_error
from storage.actors import Actor

log = logging.getLogger("atelier.bot")

NO_MENTIONS = discord.AllowedMentions.none()
PREFIX = "atelier"
OWNER_MARK = "@"
MAX_CUSTOM_ID = 100
ComponentHandler = Callable[..., Awaitable[None]]


# -- who is acting ---------------------------------------------------------------------------------------------

async def actor(interaction: discord.Interaction) -> Actor:
    """The storage :class:`Actor` for whoever triggered ``interaction`` (created on first sight), scoped to the
    server it came from (None in DMs). Needs ``bot.services.users`` (storage.users.UserService)."""
    services = getattr(interaction.client, "services", None)
    if services is None:
        raise RuntimeError("the bot was started without services; pass build_services(...) to AtelierBot")
    guild = str(interaction.guild_id) if interaction.guild_id else None
    return await services.users.ensure(f"discord:{interaction.user.id}", interaction.user.display_name,
                                       guild_id=guild)


# -- answering interactions ------------------------------------------------------------------------------------

async def defer(interaction: discord.Interaction, *, ephemeral: bool = True, thinking: bool = True) -> None:
    """Acknowledge now (Discord drops interactions not answered within 3 s); no-op if already answered.

    For buttons, ``thinking=False`` acknowledges without a "thinking…" message (the button's message will be
    edited instead)."""
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=ephemeral, thinking=thinking)


async def reply(interaction: discord.Interaction, content: str | None = None, *, ephemeral: bool = True,
                embed: discord.Embed | None = None, embeds: list[discord.Embed] | None = None,
                file: discord.File | None = None, files: list[discord.File] | None = None,
                view: discord.ui.View | None = None) -> discord.Message | None:
    """Send the answer: the initial response if none was sent yet, else a follow-up (which fills in a
    deferred "thinking…" message; its visibility was fixed by :func:`defer`). Never pings anyone."""
    kwargs: dict[str, Any] = {"ephemeral": ephemeral, "allowed_mentions": NO_MENTIONS}
    for key, value in (("embed", embed), ("embeds", embeds), ("file", file), ("files", files), ("view", view)):
        if value is not None:
            kwargs[key] = value
    if not interaction.response.is_done():
        callback = await interaction.response.send_message(content, **kwargs)
        resource = callback.resource
        return resource if isinstance(resource, discord.Message) else None
    return await interaction.followup.send(content, wait=True, **kwargs)


async def update(interaction: discord.Interaction, content: str | None = MISSING, *,
                 embed: discord.Embed | None = MISSING, view: discord.ui.View | None = MISSING) -> None:
    """Edit the message a button/select sits on (as the response, or after a ``defer(thinking=False)``).
    Only what is passed changes; ``None`` removes it (e.g. ``view=None`` drops the buttons)."""
    kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
    for key, value in (("content", content), ("embed", embed), ("view", view)):
        if value is not MISSING:
            kwargs[key] = value
    if interaction.response.is_done():
        await interaction.edit_original_response(**kwargs)
    else:
        await interaction.response.edit_message(**kwargs)


async def send_dm(client: discord.Client, user_id: int, content: str | None = None,
                  **kwargs: Any) -> discord.Message | None:
    """DM a user with the bot token; None when they do not accept DMs (Discord error 50007)."""
    user = client.get_user(user_id) or await client.fetch_user(user_id)
    try:
        return await user.send(content, allowed_mentions=NO_MENTIONS, **kwargs)
    except discord.Forbidden as exc:
        if exc.code == DM_CLOSED:
            log.info("user %s does not accept DMs", user_id)
            return None
        raise


def modal_values(interaction: discord.Interaction) -> dict[str, str]:
    """custom_id → submitted text of a modal submit (rows of text inputs, or labels around them)."""
    values: dict[str, str] = {}
    stack = list((interaction.data or {}).get("components", []))
    while stack:
        comp: Any = stack.pop()
        if comp.get("type") == 4:
            values[comp["custom_id"]] = comp.get("value", "")
        stack.extend(comp.get("components", []))
        if isinstance(comp.get("component"), dict):
            stack.append(comp["component"])
    return values


# -- ownership -------------------------------------------------------------------------------------------------

def ensure_owner(interaction: discord.Interaction, owner_id: int | str) -> None:
    """Raise :class:`NotYours` (→ a friendly ephemeral reply) unless the presser owns the resource."""
    if interaction.user.id != int(owner_id):
        raise NotYours()


# -- persistent components -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedId:
    noun: str
    action: str
    args: tuple[str, ...]
    owner: int | None


def custom_id(noun: str, action: str, *args: object, owner: int | None = None) -> str:
    """``atelier:<noun>:<action>[:<arg>…][:@<owner id>]`` (≤ 100 characters, Discord's limit)."""
    parts = [PREFIX, noun, action, *(str(a) for a in args)]
    if any(not p or ":" in p for p in parts):
        raise ValueError(f"custom_id parts must be non-empty and contain no ':': {parts}")
    if owner is not None:
        parts.append(f"{OWNER_MARK}{int(owner)}")
    result = ":".join(parts)
    if len(result) > MAX_CUSTOM_ID:
        raise ValueError(f"custom_id is {len(result)} characters; Discord allows {MAX_CUSTOM_ID}: {result}")
    return result


def parse_custom_id(value: str) -> ParsedId | None:
    parts = value.split(":")
    if len(parts) < 3 or parts[0] != PREFIX:
        return None
    owner = None
    if parts[-1].startswith(OWNER_MARK) and parts[-1][1:].isdigit():
        owner = int(parts.pop()[1:])
    return ParsedId(parts[1], parts[2], tuple(parts[3:]), owner)


def component(noun: str, action: str) -> Callable[[ComponentHandler], ComponentHandler]:
    """Mark a cog method as the handler of ``atelier:<noun>:<action>:…`` buttons/selects/modals.

    It is called as ``handler(interaction, *args)`` with the custom_id's args as strings. When the custom_id
    carries an owner, everyone else gets a "not yours" reply and the handler is not called.
    """
    def mark(func: ComponentHandler) -> ComponentHandler:
        func.__atelier_component__ = (noun, action)  # type: ignore[attr-defined]
        return func
    return mark


class RoutedButton(discord.ui.Button):
    """A button handled by :class:`ComponentRouter` through its custom_id, not by a live View object."""

    def is_dispatchable(self) -> bool:
        return False  # keeps discord.py from storing a per-message view that would shadow nothing but cost memory


class RoutedSelect(discord.ui.Select):
    """A string select handled by :class:`ComponentRouter`; the chosen values are in ``interaction.data``."""

    def is_dispatchable(self) -> bool:
        return False


def button(label: str, custom_id_: str, *, style: discord.ButtonStyle = discord.ButtonStyle.secondary,
           emoji: str | None = None, disabled: bool = False, row: int | None = None) -> RoutedButton:
    return RoutedButton(label=label, custom_id=custom_id_, style=style, emoji=emoji, disabled=disabled, row=row)


def routed_view(*items: discord.ui.Item) -> discord.ui.View:
    """A View only used to serialise routed components (no timeout, nothing kept in memory)."""
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def selected_values(interaction: discord.Interaction) -> list[str]:
    return list((interaction.data or {}).get("values", []))


class ComponentRouter:
    """Dispatches ``atelier:…`` component and modal interactions to the cog methods marked with @component."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], ComponentHandler] = {}

    def add(self, noun: str, action: str, handler: ComponentHandler) -> None:
        if (noun, action) in self._routes:
            raise ValueError(f"two handlers for atelier:{noun}:{action}")
        self._routes[(noun, action)] = handler

    def register(self, obj: object) -> None:
        """Add every @component method of ``obj`` (a cog)."""
        for name, key in _marked_methods(type(obj)):
            self.add(*key, getattr(obj, name))

    def unregister(self, obj: object) -> None:
        for _, key in _marked_methods(type(obj)):
            self._routes.pop(key, None)

    @property
    def routes(self) -> list[str]:
        return sorted(f"{PREFIX}:{n}:{a}" for n, a in self._routes)

    async def dispatch(self, interaction: discord.Interaction) -> bool:
        """Handle ``interaction`` if its custom_id is routed; True when it was ours."""
        if interaction.type not in (discord.InteractionType.component, discord.InteractionType.modal_submit):
            return False
        parsed = parse_custom_id(str((interaction.data or {}).get("custom_id", "")))
        if parsed is None:
            return False
        handler = self._routes.get((parsed.noun, parsed.action))
        try:
            if handler is None:
                raise discord.app_commands.CommandNotFound(f"{parsed.noun}:{parsed.action}", [])
            if parsed.owner is not None:
                ensure_owner(interaction, parsed.owner)
            await handler(interaction, *parsed.args)
        except Exception as exc:
            await report_error(interaction, exc)
        return True


def _marked_methods(cls: type) -> list[tuple[str, tuple[str, str]]]:
    found: dict[str, tuple[str, str]] = {}
    for base in reversed(cls.__mro__):
        for name, attr in vars(base).items():
            key = getattr(attr, "__atelier_component__", None)
            if key is not None:
                found[name] = key
    return list(found.items())
