"""Bot-token REST routes under /api/v10: login, application, command sync, users, DMs, channel messages."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .gateway import Gateway
from .httputil import DiscordError, invalid_form, json_response, no_content, not_found, read_body
from .messaging import delete_and_announce, edit_and_announce, message_from_body, store_and_announce
from .payloads import application_payload, channel_payload, member_payload, message_payload, user_payload
from .state import Channel, Message, State, User
from .validation import check_command

API = "/api/v10"


class RestApi:
    def __init__(self, state: State, gateway: Gateway) -> None:
        self.state, self.gateway = state, gateway

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{API}/users/@me", self.get_me)
        r.add_get(f"{API}/oauth2/applications/@me", self.get_application)
        r.add_get(f"{API}/applications/{{app}}/commands", self.get_commands)
        r.add_put(f"{API}/applications/{{app}}/commands", self.put_commands)
        r.add_get(f"{API}/applications/{{app}}/guilds/{{guild}}/commands", self.get_commands)
        r.add_put(f"{API}/applications/{{app}}/guilds/{{guild}}/commands", self.put_commands)
        r.add_post(f"{API}/users/@me/channels", self.create_dm)
        r.add_get(f"{API}/users/{{user}}", self.get_user)
        r.add_get(f"{API}/guilds/{{guild}}/members/{{user}}", self.get_member)
        r.add_get(f"{API}/channels/{{channel}}", self.get_channel)
        r.add_post(f"{API}/channels/{{channel}}/typing", self.typing)
        r.add_get(f"{API}/channels/{{channel}}/messages", self.list_messages)
        r.add_post(f"{API}/channels/{{channel}}/messages", self.create_message)
        r.add_get(f"{API}/channels/{{channel}}/messages/{{message}}", self.get_message)
        r.add_patch(f"{API}/channels/{{channel}}/messages/{{message}}", self.edit_message)
        r.add_delete(f"{API}/channels/{{channel}}/messages/{{message}}", self.delete_message)
        reaction = f"{API}/channels/{{channel}}/messages/{{message}}/reactions/{{emoji}}/@me"
        r.add_put(reaction, self.add_reaction)
        r.add_delete(reaction, self.remove_reaction)

    # -- lookups ---------------------------------------------------------------------------------------------

    def _app(self, request: web.Request) -> None:
        if request.match_info.get("app") != str(self.state.application_id):
            raise DiscordError(403, 50001, "Missing Access")

    def _guild(self, request: web.Request) -> int | None:
        guild = request.match_info.get("guild")
        if guild is None:
            return None
        if guild != str(self.state.guild_id):
            raise DiscordError(403, 50001, "Missing Access")
        return int(guild)

    def _channel(self, request: web.Request) -> Channel:
        channel = self.state.channels.get(_int(request.match_info["channel"]))
        if channel is None:
            raise not_found(10003, "Unknown Channel")
        return channel

    def _message(self, request: web.Request) -> tuple[Channel, Message]:
        channel = self._channel(request)
        msg = self.state.messages.get(_int(request.match_info["message"]))
        if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
            raise not_found(10008, "Unknown Message")  # ephemeral messages are not reachable by channel routes
        return channel, msg

    def _user(self, user_id: Any) -> User:
        user = self.state.users_by_id.get(_int(user_id))
        if user is None:
            raise not_found(10013, "Unknown User")
        return user

    # -- login / application / commands ----------------------------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response({**user_payload(self.state.bot_user), "verified": True, "mfa_enabled": False,
                              "flags": 0, "locale": "en-US", "bio": ""})

    async def get_application(self, request: web.Request) -> web.Response:
        return json_response(application_payload(self.state))

    async def get_commands(self, request: web.Request) -> web.Response:
        self._app(request)
        return json_response(self.state.commands.get(self._guild(request), []))

    async def put_commands(self, request: web.Request) -> web.Response:
        self._app(request)
        guild_id = self._guild(request)
        commands = await request.json()
        if not isinstance(commands, list) or len(commands) > 200:
            raise invalid_form("expected a list of at most 200 commands")
        previous = {(c["name"], c.get("type", 1)): c for c in self.state.commands.get(guild_id, [])}
        synced: list[dict[str, Any]] = []
        for cmd in commands:
            check_command(cmd)
            key = (cmd["name"], cmd.get("type", 1))
            if key in {(c["name"], c.get("type", 1)) for c in synced}:
                raise invalid_form(f"duplicate command {cmd['name']!r}")
            old = previous.get(key)
            stored = {
                "type": 1, "default_member_permissions": None, "nsfw": False, "options": [],
                "integration_types": [0], "contexts": None, "description": "",
                **cmd,
                "id": old["id"] if old else str(self.state.snowflake()),
                "application_id": str(self.state.application_id), "version": str(self.state.snowflake()),
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            synced.append(stored)
        self.state.commands[guild_id] = synced
        self.state.command_puts.append(guild_id)
        self.state.changes.notify()
        return json_response(synced)

    # -- users / DMs -----------------------------------------------------------------------------------------

    async def get_user(self, request: web.Request) -> web.Response:
        return json_response(user_payload(self._user(request.match_info["user"])))

    async def get_member(self, request: web.Request) -> web.Response:
        self._guild(request)
        user = self.state.users_by_id.get(_int(request.match_info["user"]))
        if user is None:
            raise not_found(10007, "Unknown Member")
        return json_response(member_payload(user))

    async def create_dm(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        user = self._user(body.json.get("recipient_id"))
        if user.bot:
            raise DiscordError(400, 50007, "Cannot send messages to this user")
        return json_response(channel_payload(self.state.dm_channel(user)))

    # -- channels / messages ---------------------------------------------------------------------------------

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(channel_payload(self._channel(request)))

    async def typing(self, request: web.Request) -> web.Response:
        self._channel(request)
        return no_content()

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        limit = min(int(request.query.get("limit", 50)), 100)
        before = _int(request.query.get("before", 1 << 63))
        after = _int(request.query.get("after", 0))
        msgs = [m for m in self.state.channel_messages(channel.id) if not m.ephemeral and after < m.id < before]
        msgs.sort(key=lambda m: m.id, reverse="after" not in request.query)
        return json_response([message_payload(self.state, m) for m in msgs[:limit]])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel.is_dm and channel.recipient is not None and not channel.recipient.dms_open:
            raise DiscordError(403, 50007, "Cannot send messages to this user")
        body = await read_body(request)
        msg = message_from_body(self.state, channel, self.state.bot_user, body, flags_mask=(1 << 2) | (1 << 12))
        await store_and_announce(self.state, self.gateway, msg)
        return json_response(message_payload(self.state, msg))

    async def get_message(self, request: web.Request) -> web.Response:
        _, msg = self._message(request)
        return json_response(message_payload(self.state, msg))

    async def edit_message(self, request: web.Request) -> web.Response:
        _, msg = self._message(request)
        if msg.author is not self.state.bot_user:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        await edit_and_announce(self.state, self.gateway, msg, await read_body(request))
        return json_response(message_payload(self.state, msg))

    async def delete_message(self, request: web.Request) -> web.Response:
        _, msg = self._message(request)
        await delete_and_announce(self.state, self.gateway, msg)
        return no_content()

    async def add_reaction(self, request: web.Request) -> web.Response:
        _, msg = self._message(request)
        emoji = request.match_info["emoji"]
        if emoji not in msg.reactions:
            msg.reactions.append(emoji)
            self.state.changes.notify()
        return no_content()

    async def remove_reaction(self, request: web.Request) -> web.Response:
        _, msg = self._message(request)
        if request.match_info["emoji"] in msg.reactions:
            msg.reactions.remove(request.match_info["emoji"])
            self.state.changes.notify()
        return no_content()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_form(f"{value!r} is not a snowflake") from None
