"""What every cog needs around an interaction: the services, answering within Discord's 3 s (defer, then follow
up), replies, DMs, and buttons whose custom_id carries the resource id (and owner) so they still work after a restart.

Persistent components: build them with :func:`button` / :func:`custom_id` and handle them with a cog method
decorated by :func:`component`; the bot's :class:`ComponentRouter` turns each such method into a discord.py
:class:`~discord.ui.DynamicItem`, so discord.py dispatches the press::

    view = routed_view(button("Re-roll", custom_id("gen", "reroll", generation_id, owner=user.id)))

    @component("gen", "reroll")
    async def reroll(self, interaction: discord.Interaction, generation_id: str) -> None: ...

The router itself only handles what DynamicItem cannot: modal submits (discord.py knows a modal only through the
live object that opened it, gone after a restart), ``atelier:`` ids no handler knows (an "outdated" reply instead
of "This interaction failed"), and ids that are not on the message the interaction names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord.utils import MISSING

from bot.errors import DM_CLOSED, NotYours, report_error
from storage.actors import Actor

if TYPE_CHECKING:
    from storage.services import Services

log = logging.getLogger("atelier.bot")

NO_MENTIONS = discord.AllowedMentions.none()
PREFIX = "atelier"
OWNER_MARK = "@"
MAX_CUSTOM_ID = 100
ComponentHandler = Callable[..., Awaitable[None]]


# -- who is acting ---------------------------------------------------------------------------------------------

def services_of(source: discord.Interaction | discord.Client) -> Services:
    """The storage use cases the bot was started with — the one way cogs reach them (from an interaction, or from
    the bot where there is none, e.g. a message listener)."""
    client = source.client if isinstance(source, discord.Interaction) else source
    services = getattr(client, "services", None)
    if services is None:
        raise RuntimeError("the bot was started without services; pass build_services(...) to AtelierBot")
    return services


async def actor(interaction: discord.Interaction) -> Actor:
    """The storage :class:`Actor` for whoever triggered ``interaction`` (created on first sight), scoped to the
    server it came from (None in DMs)."""
    services = services_of(interaction)
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
    """A button sent to be handled through its custom_id (a :class:`ComponentRouter` route), not a live View."""

    def is_dispatchable(self) -> bool:
        return False  # keeps discord.py from storing a per-message view that would shadow nothing but cost memory


class RoutedSelect(discord.ui.Select):
    """A string select handled like :class:`RoutedButton`; the chosen values are in ``interaction.data``."""

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
    """Connects ``atelier:<noun>:<action>:…`` custom_ids to the cog methods marked with :func:`component`.

    Buttons and selects go through discord.py: each route becomes a :class:`discord.ui.DynamicItem` class
    (template ``atelier:<noun>:<action>[:…]``) registered with ``client.add_dynamic_items``, whose
    ``interaction_check`` is the owner check. What DynamicItem cannot do stays in :meth:`dispatch`:

    * **modal submits** — discord.py finds a submitted modal only through the live object that opened it, which a
      restart (or another bot process) does not have;
    * **our custom_ids that no handler knows** (posted by an older version, or a removed cog) — discord.py ignores
      them and the member would see "This interaction failed"; here they get the "outdated" reply;
    * **a custom_id that is not on the message the interaction names** — discord.py builds a DynamicItem from
      that message's component and drops the interaction when there is none; the handler still runs here.
    """

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._routes: dict[tuple[str, str], ComponentHandler] = {}
        self._items: dict[tuple[str, str], type[discord.ui.DynamicItem[Any]]] = {}

    def add(self, noun: str, action: str, handler: ComponentHandler) -> None:
        key = (noun, action)
        if key in self._routes:
            raise ValueError(f"two handlers for atelier:{noun}:{action}")
        self._routes[key] = handler
        self._items[key] = _dynamic_item(noun, action, handler)
        self._client.add_dynamic_items(self._items[key])

    def register(self, obj: object) -> None:
        """Add every @component method of ``obj`` (a cog)."""
        for name, key in _marked_methods(type(obj)):
            self.add(*key, getattr(obj, name))

    def unregister(self, obj: object) -> None:
        for _, key in _marked_methods(type(obj)):
            self._routes.pop(key, None)
            item = self._items.pop(key, None)
            if item is not None:
                self._client.remove_dynamic_items(item)

    @property
    def routes(self) -> list[str]:
        return sorted(f"{PREFIX}:{n}:{a}" for n, a in self._routes)

    async def dispatch(self, interaction: discord.Interaction) -> bool:
        """Handle what discord.py will not (see the class docstring); True when this call handled it."""
        if interaction.type not in (discord.InteractionType.component, discord.InteractionType.modal_submit):
            return False
        parsed = parse_custom_id(str((interaction.data or {}).get("custom_id", "")))
        if parsed is None:
            return False
        handler = self._routes.get((parsed.noun, parsed.action))
        if handler is not None and _dynamic_item_runs(interaction):
            return False
        if handler is None:
            await report_error(interaction, discord.app_commands.CommandNotFound(f"{parsed.noun}:{parsed.action}", []))
        elif await _owner_ok(interaction, parsed):
            await _run(handler, interaction, parsed)
        return True


def _dynamic_item_runs(interaction: discord.Interaction) -> bool:
    """Whether discord.py will build and run the route's DynamicItem: the pressed component is on the
    interaction's message (what ``ViewStore.schedule_dynamic_item_call`` looks up)."""
    message = interaction.message
    if interaction.type is not discord.InteractionType.component or message is None:
        return False
    data: Any = interaction.data or {}
    wanted = (data.get("component_type"), data.get("custom_id"))
    return wanted in _component_keys(message.components)


def _component_keys(components: Any) -> set[tuple[int, str]]:
    """(type, custom_id) of every component of a message, rows, containers and section accessories included."""
    keys: set[tuple[int, str]] = set()
    stack = list(components)
    while stack:
        comp = stack.pop()
        if getattr(comp, "custom_id", None):
            keys.add((comp.type.value, comp.custom_id))
        stack.extend(getattr(comp, "children", ()) or ())
        if getattr(comp, "accessory", None) is not None:
            stack.append(comp.accessory)
    return keys


async def _owner_ok(interaction: discord.Interaction, parsed: ParsedId) -> bool:
    """When the custom_id names an owner, everyone else gets a "not yours" reply."""
    if parsed.owner is None or interaction.user.id == parsed.owner:
        return True
    await report_error(interaction, NotYours())
    return False


async def _run(handler: ComponentHandler, interaction: discord.Interaction, parsed: ParsedId) -> None:
    try:
        await handler(interaction, *parsed.args)
    except Exception as exc:  # the bot's one error reply (a hint, or a reference for a bug)
        await report_error(interaction, exc)


def _dynamic_item(noun: str, action: str, handler: ComponentHandler) -> type[discord.ui.DynamicItem[Any]]:
    """A DynamicItem class for one route: discord.py builds it from the pressed component and calls it."""
    template = re.compile(rf"{PREFIX}:{re.escape(noun)}:{re.escape(action)}(?::[^:]+)*")

    class Routed(discord.ui.DynamicItem[discord.ui.Item[Any]], template=template):
        @classmethod
        async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                                 match: re.Match[str], /) -> Routed:
            return cls(item)

        @property
        def parsed(self) -> ParsedId:
            parsed = parse_custom_id(self.custom_id)
            assert parsed is not None  # the template only matches our custom_ids
            return parsed

        async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
            return await _owner_ok(interaction, self.parsed)

        async def callback(self, interaction: discord.Interaction) -> None:
            await _run(handler, interaction, self.parsed)

    Routed.__name__ = Routed.__qualname__ = f"Routed[{noun}:{action}]"
    return Routed


def _marked_methods(cls: type) -> list[tuple[str, tuple[str, str]]]:
    found: dict[str, tuple[str, str]] = {}
    for base in reversed(cls.__mro__):
        for name, attr in vars(base).items():
            key = getattr(attr, "__atelier_component__", None)
            if key is not None:
                found[name] = key
    return list(found.items())
