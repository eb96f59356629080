"""Test-side driver: user actions (slash, click, select, modal, DM…) and waits on what the bot sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .cdn import make_attachment
from .gateway import DIRECT_MESSAGES, Gateway
from .handle import InteractionHandle
from .messaging import announce
from .options import UsageError, build_command_options
from .payloads import interaction_payload, member_payload, message_payload, user_payload
from .state import ADMINISTRATOR, Attachment, Channel, Interaction, Message, State, User

COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
Where = Channel | User | str  # a channel, a user's DM channel, or a text channel's name


class Driver:
    """Mixed into :class:`DiscordEmulator`; needs ``state``, ``gateway`` and ``default_timeout``."""

    state: State
    gateway: Gateway
    default_timeout: float

    # -- world ---------------------------------------------------------------------------------------------

    def user(self, name: str) -> User:
        return self.state.users[name]

    def add_user(self, name: str, *, admin: bool = False, dms_open: bool = True) -> User:
        """A new guild member (add users before the bot connects so GUILD_CREATE lists them)."""
        user = self.state.add_user(name, dms_open=dms_open)
        if admin:
            user.permissions |= ADMINISTRATOR
        return user

    def channel(self, name: str) -> Channel:
        return self.state.text_channel(name)

    def dm(self, user: User) -> Channel:
        return self.state.dm_channel(user)

    def resolve(self, where: Where) -> Channel:
        if isinstance(where, Channel):
            return where
        if isinstance(where, User):
            return self.dm(where)
        return self.channel(where)

    def set_dms_open(self, user: User, open_: bool) -> None:
        user.dms_open = open_

    def upload(self, filename: str, data: bytes, content_type: str | None = None) -> Attachment:
        """Put bytes on the emulator CDN; use the result as an attachment option or in ``send_dm``."""
        return make_attachment(self.state, filename, data, content_type)

    def command(self, name: str, *, type: int = 1, guild: bool | None = None) -> dict[str, Any]:
        """A synced command (guild copy first unless ``guild=False``), with its ``id`` and ``options``."""
        scopes = [self.state.guild_id, None] if guild is None else [self.state.guild_id if guild else None]
        for scope in scopes:
            cmd = self.state.find_command(name, type, scope)
            if cmd is not None:
                return cmd
        synced = {scope: [c["name"] for c in cmds] for scope, cmds in self.state.commands.items()}
        raise UsageError(f"command {name!r} (type {type}) was not synced; synced: {synced}")

    # -- application commands --------------------------------------------------------------------------------

    async def slash(self, user: User, name: str, *path: str, at: Where | None = None,
                    options: dict[str, Any] | None = None, **values: Any) -> InteractionHandle:
        """``/name *path`` with option values (``options={...}`` for names that clash with ``at``)."""
        channel = self.resolve(at) if at is not None else self._default_channel()
        cmd = self._usable_command(user, name, 1, channel)
        opts, resolved = build_command_options(self.state, cmd, path, {**(options or {}), **values}, channel=channel)
        return await self._interact(COMMAND, user, channel, self._command_data(cmd, opts, resolved))

    async def autocomplete(self, user: User, name: str, *path: str, focused: str, value: str,
                           at: Where | None = None, options: dict[str, Any] | None = None, **values: Any
                           ) -> list[dict[str, Any]]:
        """Type ``value`` into option ``focused``; returns the choices the bot offered."""
        channel = self.resolve(at) if at is not None else self._default_channel()
        cmd = self._usable_command(user, name, 1, channel)
        all_values = {**(options or {}), **values, focused: value}
        opts, resolved = build_command_options(self.state, cmd, path, all_values, channel=channel, focused=focused)
        handle = await self._interact(AUTOCOMPLETE, user, channel, self._command_data(cmd, opts, resolved))
        return await handle.choices()

    async def context_menu(self, user: User, name: str, target: Message | User, *, at: Where | None = None
                           ) -> InteractionHandle:
        """Right-click → Apps → ``name`` on a message (type 3 command) or a user (type 2 command)."""
        if isinstance(target, Message):
            channel = self.state.channels[target.channel_id]
            cmd = self._usable_command(user, name, 3, channel)
            resolved = {"messages": {str(target.id): message_payload(self.state, target)}}
        else:
            channel = self.resolve(at) if at is not None else self._default_channel()
            cmd = self._usable_command(user, name, 2, channel)
            resolved = {"users": {str(target.id): user_payload(target)}}
            if not channel.is_dm:
                resolved["members"] = {str(target.id): member_payload(target, with_user=False, with_permissions=True)}
        data = {**self._command_data(cmd, [], resolved), "target_id": str(target.id)}
        return await self._interact(COMMAND, user, channel, data)

    # -- components and modals -------------------------------------------------------------------------------

    async def click(self, user: User, message: Message, custom_id: str) -> InteractionHandle:
        component = self._component(user, message, custom_id, (2,))
        if component.get("style") == 5:
            raise UsageError(f"{custom_id!r} is a link button; clicking it opens a URL, not an interaction")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(COMPONENT, user, self.state.channels[message.channel_id], data, message=message)

    async def select(self, user: User, message: Message, custom_id: str, values: Iterable[str]
                     ) -> InteractionHandle:
        component = self._component(user, message, custom_id, (3, 5, 6, 7, 8))
        chosen = [str(v) for v in values]
        lo, hi = component.get("min_values", 1), component.get("max_values", 1)
        if not lo <= len(chosen) <= hi:
            raise UsageError(f"select {custom_id!r} takes {lo}-{hi} values, got {len(chosen)}")
        if component["type"] == 3:
            allowed = [o["value"] for o in component.get("options", [])]
            if bad := [v for v in chosen if v not in allowed]:
                raise UsageError(f"select {custom_id!r} has no option(s) {bad}; options are {allowed}")
        data = {"custom_id": custom_id, "component_type": component["type"], "values": chosen}
        return await self._interact(COMPONENT, user, self.state.channels[message.channel_id], data, message=message)

    async def modal_submit(self, user: User, source: InteractionHandle, values: dict[str, str]) -> InteractionHandle:
        """Fill in and submit the modal the bot opened in answer to ``source``."""
        modal = (await source.response()).modal
        components, seen = [], set()
        for row in modal["components"]:
            inner = row.get("components") or ([row["component"]] if "component" in row else [])
            submitted = []
            for field in inner:
                if field.get("type") != 4:
                    continue
                cid, value = field["custom_id"], values.get(field["custom_id"], field.get("value") or "")
                seen.add(cid)
                if field.get("required", True) and not value:
                    raise UsageError(f"modal field {cid!r} is required")
                if value and not field.get("min_length", 0) <= len(value) <= field.get("max_length", 4000):
                    raise UsageError(f"modal field {cid!r} must be {field.get('min_length', 0)}-"
                                     f"{field.get('max_length', 4000)} characters")
                submitted.append({"type": 4, "custom_id": cid, "value": value})
            if row.get("type") == 18 and submitted:
                components.append({"type": 18, "component": submitted[0]})
            elif submitted:
                components.append({"type": 1, "components": submitted})
        if unknown := set(values) - seen:
            raise UsageError(f"modal {modal['custom_id']!r} has no text field(s) {sorted(unknown)}")
        data = {"custom_id": modal["custom_id"], "components": components}
        src = source.interaction
        return await self._interact(MODAL_SUBMIT, user, src.channel, data, message=src.message)

    # -- plain messages from users ---------------------------------------------------------------------------

    async def send_dm(self, user: User, content: str = "", attachments: Iterable[Attachment] = ()) -> Message:
        """``user`` writes to the bot in DMs (MESSAGE_CREATE; content is always delivered in DMs)."""
        if not self.gateway.wants(DIRECT_MESSAGES):
            raise UsageError("the bot did not ask for the DIRECT_MESSAGES intent, so it would never see this DM")
        return await self._user_message(user, self.dm(user), content, attachments)

    async def send_message(self, user: User, where: Where, content: str = "",
                           attachments: Iterable[Attachment] = ()) -> Message:
        """``user`` posts in a guild channel (content hidden from the bot without the message-content intent)."""
        return await self._user_message(user, self.resolve(where), content, attachments)

    async def _user_message(self, user: User, channel: Channel, content: str, attachments: Iterable[Attachment]
                            ) -> Message:
        msg = Message(id=self.state.snowflake(), channel_id=channel.id, guild_id=channel.guild_id, author=user,
                      content=content, attachments=list(attachments))
        self.state.add_message(msg)
        await announce(self.state, self.gateway, "MESSAGE_CREATE", msg)
        return msg

    # -- inspecting what the bot sent ------------------------------------------------------------------------

    def messages(self, where: Where, *, by_bot: bool = True, include_deleted: bool = False) -> list[Message]:
        channel = self.resolve(where)
        return [m for m in self.state.channel_messages(channel.id, include_deleted=include_deleted)
                if not by_bot or m.author is self.state.bot_user]

    async def wait_for_message(self, where: Where, predicate: Callable[[Message], Any] | None = None, *,
                               timeout: float | None = None, after: Message | int | None = None) -> Message:  # noqa: ASYNC109 - timeout is part of the test API
        """First bot message in ``where`` (already there or still to come) matching ``predicate``.

        ``after`` (a message or snowflake) skips older messages, e.g. ``after=emu.mark()``.
        """
        channel = self.resolve(where)
        floor = after.id if isinstance(after, Message) else (after or 0)

        def find() -> Message | None:
            for msg in self.messages(channel):
                if msg.id > floor and not msg.loading and (predicate is None or predicate(msg)):
                    return msg
            return None

        def describe() -> str:
            seen = [repr(m) for m in self.messages(channel) if m.id > floor][-5:]
            return f"a bot message in {channel!r}; bot messages there: {seen or 'none'}{self.state.recent_problems()}"

        return await self.state.changes.wait_for(find, timeout or self.default_timeout, describe)

    def mark(self) -> int:
        """A snowflake for "from now on" (``wait_for_message(..., after=emu.mark())``)."""
        return self.state.snowflake()

    # -- internals -------------------------------------------------------------------------------------------

    def _default_channel(self) -> Channel:
        return next(c for c in self.state.channels.values() if not c.is_dm)

    def _usable_command(self, user: User, name: str, type_: int, channel: Channel) -> dict[str, Any]:
        if channel.is_dm:
            cmd = self.state.find_command(name, type_, None)
            if cmd is None:
                raise UsageError(f"{name!r} is not a global command, so it does not exist in DMs"
                                 + (" (it is only synced to the guild)" if self.state.find_command(
                                     name, type_, self.state.guild_id) else ""))
            contexts = cmd.get("contexts")
            if (contexts is not None and 1 not in contexts) or cmd.get("dm_permission") is False:
                raise UsageError(f"{name!r} is not available in DMs")
            return cmd
        cmd = self.state.find_command(name, type_, self.state.guild_id) or self.state.find_command(name, type_, None)
        if cmd is None:
            self.command(name, type=type_)  # raises with the list of synced commands
        assert cmd is not None
        needed = cmd.get("default_member_permissions")
        if needed is not None and not user.permissions & ADMINISTRATOR and \
                (user.permissions & int(needed)) != int(needed):
            raise UsageError(f"Discord hides {name!r} from {user.username} (needs permissions {needed})")
        return cmd

    def _command_data(self, cmd: dict[str, Any], options: list[dict[str, Any]], resolved: dict[str, Any]
                      ) -> dict[str, Any]:
        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": cmd.get("type", 1)}
        if options:
            data["options"] = options
        if resolved:
            data["resolved"] = resolved
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        return data

    def _component(self, user: User, message: Message, custom_id: str, types: tuple[int, ...]) -> dict[str, Any]:
        current = self.state.messages.get(message.id)
        if current is None or current.deleted:
            raise UsageError(f"message {message.id} no longer exists")
        if current.ephemeral and (current.interaction_metadata or {}).get("user", {}).get("id") != str(user.id):
            raise UsageError(f"{user.username} cannot see someone else's ephemeral message")
        component = current.component(custom_id)
        if component is None or component.get("type") not in types:
            raise UsageError(f"no such component {custom_id!r} on the message; it has {current.custom_ids}")
        if component.get("disabled"):
            raise UsageError(f"component {custom_id!r} is disabled")
        return component

    async def _interact(self, type_: int, user: User, channel: Channel, data: dict[str, Any], *,
                        message: Message | None = None) -> InteractionHandle:
        if self.gateway.current is None:
            raise UsageError("the bot has not connected to the gateway yet")
        if message is not None:
            message = self.state.messages[message.id]  # always the latest state
        inter = Interaction(id=self.state.snowflake(), token=self.state.new_token(), type=type_, user=user,
                            channel=channel, payload={}, message=message)
        inter.payload = interaction_payload(self.state, inter, data)
        self.state.interactions[inter.id] = inter
        await self.gateway.dispatch("INTERACTION_CREATE", inter.payload)
        return InteractionHandle(self.state, inter, self.default_timeout)
