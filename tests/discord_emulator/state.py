"""In-memory Discord world of the emulator: users, one guild, channels, messages, commands, interactions.

Everything here is plain data; HTTP/gateway code mutates it and calls :meth:`Changes.notify` so that test-side
waits (``wait_for_message``, ``handle.response()``…) wake up instead of sleeping.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (https://discord.com/developers/docs/topics/permissions)
ADMINISTRATOR = 1 << 3
MEMBER_PERMISSIONS = (
    (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 31)
)  # add reactions, view channel, send, embed links, attach files, read history, external emojis, app commands
ALL_PERMISSIONS = (1 << 50) - 1

# Message flags
EPHEMERAL = 1 << 6
LOADING = 1 << 7

T = TypeVar("T")


class SnowflakeFactory:
    """Real, strictly increasing snowflakes: discord.py decodes creation time (and token expiry) from ids."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(now, self._last + 1)
        return self._last


def snowflake_time(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat()


class EmulatorTimeout(AssertionError):
    """A condition wait ran out; the message says what was awaited and what the emulator saw instead."""


class Changes:
    """Wakes every waiter whenever the emulator state changes (no polling, no sleeps)."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []
        self.version = 0

    def notify(self) -> None:
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float, describe: Callable[[], str]) -> T:  # noqa: ASYNC109 - timeout is part of the test API
        """Return the first truthy ``predicate()`` result; raise :class:`EmulatorTimeout` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise EmulatorTimeout(f"timed out after {timeout:g}s waiting for {describe()}")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass


@dataclass(eq=False)
class User:
    id: int
    username: str
    bot: bool = False
    dms_open: bool = True  # False → the bot's DM POSTs get 403 / 50007 like a user with closed DMs
    permissions: int = MEMBER_PERMISSIONS
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def __repr__(self) -> str:
        return f"User({self.username!r}, id={self.id})"


@dataclass(eq=False)
class Channel:
    id: int
    type: int  # 0 guild text, 1 DM
    name: str
    guild_id: int | None = None
    position: int = 0
    recipient: User | None = None  # DM channels

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, id={self.id})"


@dataclass(eq=False)
class Attachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    width: int | None = None
    height: int | None = None
    description: str | None = None
    url: str = ""  # served by the emulator's CDN route

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(eq=False)
class Message:
    id: int
    channel_id: int
    author: User
    guild_id: int | None = None
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None  # set for messages created by an interaction (response or follow-up)
    interaction_metadata: dict[str, Any] | None = None
    message_reference: dict[str, Any] | None = None
    edited_at: datetime | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # snapshots *before* each edit, oldest first
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)  # emoji the bot added
    allowed_mentions: dict[str, Any] | None = None  # as last sent by the bot

    @property
    def timestamp(self) -> datetime:
        return snowflake_time(self.id)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred ("thinking…") response that has not been filled in yet."""
        return bool(self.flags & LOADING)

    @property
    def files(self) -> dict[str, bytes]:
        return {a.filename: a.data for a in self.attachments}

    def snapshot(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": [dict(e) for e in self.embeds],
            "components": list(self.components),
            "attachments": [a.filename for a in self.attachments],
            "flags": self.flags,
        }

    def walk_components(self) -> Iterator[dict[str, Any]]:
        """Every component, depth first (action rows, containers, sections, accessories…)."""
        stack = list(reversed(self.components))
        while stack:
            comp = stack.pop()
            yield comp
            children = list(comp.get("components", []))
            for key in ("accessory", "component"):
                if isinstance(comp.get(key), dict):
                    children.append(comp[key])
            stack.extend(reversed(children))

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.walk_components() if c.get("custom_id") == custom_id), None)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.walk_components() if "custom_id" in c]

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in self.walk_components() if c.get("type") == 2]

    def text(self) -> str:
        """Content plus every human-readable embed string, for loose assertions."""
        parts = [self.content]
        for e in self.embeds:
            parts += [e.get("title", ""), e.get("description", "")]
            parts += [f"{f.get('name', '')}\n{f.get('value', '')}" for f in e.get("fields", [])]
            parts += [(e.get("footer") or {}).get("text", ""), (e.get("author") or {}).get("name", "")]
        return "\n".join(p for p in parts if p)

    def __repr__(self) -> str:
        flags = "".join(f for f, on in ((" ephemeral", self.ephemeral), (" loading", self.loading)) if on)
        return f"Message(id={self.id}, by={self.author.username}{flags}, text={self.text()[:80]!r})"


@dataclass(eq=False)
class CallbackResponse:
    """The initial interaction response the bot chose (type 4 message, 5 defer, 6, 7 update, 8, 9 modal)."""

    type: int
    data: dict[str, Any]
    message: Message | None
    after_s: float  # seconds between dispatch and the callback

    @property
    def choices(self) -> list[dict[str, Any]]:
        return list(self.data.get("choices", []))

    @property
    def modal(self) -> dict[str, Any]:
        if self.type != 9:
            raise AssertionError(f"the bot answered with callback type {self.type}, not a modal (9)")
        return self.data

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.data.get("flags", 0) or 0) & EPHEMERAL)


@dataclass(eq=False)
class Interaction:
    id: int
    token: str
    type: int  # 2 command, 3 component, 4 autocomplete, 5 modal submit
    user: User
    channel: Channel
    payload: dict[str, Any]
    message: Message | None = None  # the message a component sat on
    created: float = field(default_factory=time.monotonic)
    response: CallbackResponse | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    first_visible_id: int | None = None  # first message the user actually saw as the result
    expired: bool = False  # simulate the 15-minute token lifetime


class State:
    """Everything the emulator knows; one guild with text channels, members and the bot."""

    def __init__(self, *, token: str, users: Iterable[str], channels: Iterable[str]) -> None:
        self.snowflake = SnowflakeFactory()
        self.token = token
        self.base_url = ""  # http://127.0.0.1:<port>, set once the server listens
        self.application_id = self.snowflake()
        self.bot_user = User(id=self.application_id, username="Atelier", bot=True, permissions=ALL_PERMISSIONS)
        self.guild_id = self.snowflake()
        self.guild_name = "Atelier Test Server"
        self.users: dict[str, User] = {}
        self.users_by_id: dict[int, User] = {self.bot_user.id: self.bot_user}
        for name in users:
            self.add_user(name)
        self.owner = next(iter(self.users.values()), self.bot_user)
        self.channels: dict[int, Channel] = {}
        for position, name in enumerate(channels):
            cid = self.snowflake()
            self.channels[cid] = Channel(id=cid, type=0, name=name, guild_id=self.guild_id, position=position)
        self.dm_channels: dict[int, Channel] = {}  # user id → DM channel
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None = global) → synced commands
        self.command_puts: list[int | None] = []  # the scope of every bulk command sync (PUT), in order
        self.interactions: dict[int, Interaction] = {}
        self.changes = Changes()
        self.rejections: list[str] = []  # every 4xx the emulator answered, for failure messages
        self.internal_errors: list[str] = []  # emulator bugs; the test harness asserts this stays empty
        self.diagnostics: list[str] = []  # lines the harness adds (e.g. bot-side errors) for failure messages

    def add_user(self, name: str, **kwargs: Any) -> User:
        user = User(id=self.snowflake(), username=name, **kwargs)
        self.users[name] = user
        self.users_by_id[user.id] = user
        return user

    def new_token(self) -> str:
        return secrets.token_urlsafe(48)

    def dm_channel(self, user: User) -> Channel:
        channel = self.dm_channels.get(user.id)
        if channel is None:
            cid = self.snowflake()
            channel = Channel(id=cid, type=1, name=f"dm-{user.username}", recipient=user)
            self.dm_channels[user.id] = channel
            self.channels[cid] = channel
        return channel

    def text_channel(self, name: str) -> Channel:
        for channel in self.channels.values():
            if channel.name == name and not channel.is_dm:
                return channel
        raise KeyError(f"no text channel named {name!r}; have {[c.name for c in self.channels.values()]}")

    def channel_messages(self, channel_id: int, *, include_deleted: bool = False) -> list[Message]:
        return [m for m in self.messages.values()
                if m.channel_id == channel_id and (include_deleted or not m.deleted)]

    def add_message(self, message: Message) -> Message:
        self.messages[message.id] = message
        self.changes.notify()
        return message

    def edit_message(self, message: Message, fields: dict[str, Any]) -> None:
        message.history.append(message.snapshot())
        for key, value in fields.items():
            setattr(message, key, value)
        message.edited_at = datetime.now(UTC)
        self.changes.notify()

    def reject(self, line: str) -> None:
        self.rejections.append(line)
        self.changes.notify()

    def interaction_by_token(self, token: str) -> Interaction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    def find_command(self, name: str, type_: int, guild_id: int | None) -> dict[str, Any] | None:
        for cmd in self.commands.get(guild_id, []):
            if cmd["name"] == name and cmd.get("type", 1) == type_:
                return cmd
        return None

    def recent_problems(self, limit: int = 8) -> str:
        lines = [*self.rejections[-limit:], *self.internal_errors[-limit:], *self.diagnostics[-limit:]]
        return ("; recent problems: " + " | ".join(lines)) if lines else ""
