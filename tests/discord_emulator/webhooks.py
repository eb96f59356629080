"""Interaction callbacks and the interaction webhook (follow-ups, @original edits). No Authorization header here."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .gateway import Gateway
from .httputil import Body, DiscordError, invalid_form, json_response, no_content, not_found, read_body
from .messaging import delete_and_announce, edit_and_announce, message_from_body, store_and_announce
from .payloads import message_payload, user_payload
from .state import EPHEMERAL, LOADING, CallbackResponse, Interaction, Message, State

API = "/api/v10"
TOKEN_LIFETIME_S = 15 * 60
COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
ALLOWED_CALLBACKS = {  # interaction type → callback types Discord accepts for it
    COMMAND: {4, 5, 9}, COMPONENT: {4, 5, 6, 7, 9}, AUTOCOMPLETE: {8}, MODAL_SUBMIT: {4, 5, 6, 7},
}


class WebhookApi:
    def __init__(self, state: State, gateway: Gateway, *, callback_deadline_s: float = 3.0) -> None:
        self.state, self.gateway = state, gateway
        self.callback_deadline_s = callback_deadline_s

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post(f"{API}/interactions/{{id}}/{{token}}/callback", self.callback)
        r.add_post(f"{API}/webhooks/{{app}}/{{token}}", self.followup)
        msg = f"{API}/webhooks/{{app}}/{{token}}/messages/{{message}}"
        r.add_get(msg, self.get_message)
        r.add_patch(msg, self.edit_message)
        r.add_delete(msg, self.delete_message)

    # -- initial response ------------------------------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        inter = self.state.interactions.get(_int(request.match_info["id"]))
        if inter is None or inter.token != request.match_info["token"]:
            raise not_found(10062, "Unknown interaction")
        if inter.response is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        elapsed = time.monotonic() - inter.created
        if elapsed > self.callback_deadline_s:
            raise DiscordError(404, 10062, f"Unknown interaction (answered after {elapsed:.2f}s; Discord allows "
                                           f"{self.callback_deadline_s:g}s — defer first)")
        body = await read_body(request)
        ctype = int(body.json.get("type", 0))
        data: dict[str, Any] = body.json.get("data") or {}
        if ctype not in ALLOWED_CALLBACKS.get(inter.type, set()):
            raise DiscordError(400, 40043 if ctype == 9 else 50035,
                               f"callback type {ctype} is not valid for interaction type {inter.type}")
        message = await self._apply_callback(inter, ctype, data, body)
        inter.response = CallbackResponse(type=ctype, data=data, message=message, after_s=elapsed)
        self.state.changes.notify()
        if ctype == 8:
            return no_content()
        result: dict[str, Any] = {"interaction": {
            "id": str(inter.id), "type": inter.type,
            "response_message_id": str(message.id) if message else None,
            "response_message_loading": bool(message and message.loading),
            "response_message_ephemeral": bool(message and message.ephemeral),
        }}
        if message is not None and ctype in (4, 5, 7):
            result["resource"] = {"type": ctype, "message": message_payload(self.state, message)}
        return json_response(result)

    async def _apply_callback(self, inter: Interaction, ctype: int, data: dict[str, Any], body: Body
                              ) -> Message | None:
        if ctype == 8:
            choices = data.get("choices", [])
            if len(choices) > 25:
                raise invalid_form("autocomplete returns at most 25 choices")
            return None
        if ctype == 9:
            if not data.get("custom_id") or not data.get("title") or not data.get("components"):
                raise invalid_form("a modal needs custom_id, title and components")
            return None
        if ctype in (6, 7):
            if inter.message is None:
                raise DiscordError(400, 50035, "no message to update: this interaction did not come from a component")
            inter.original_id = inter.message.id
            if ctype == 7:
                await edit_and_announce(self.state, self.gateway, inter.message, Body(json=data, files=body.files))
                inter.first_visible_id = inter.message.id
            return inter.message
        # 4: a new message; 5: a "thinking…" placeholder the first follow-up or an @original edit fills in
        if ctype == 5:
            msg = self._interaction_message(inter, None, flags=(int(data.get("flags") or 0) & EPHEMERAL) | LOADING)
        else:
            msg = self._interaction_message(inter, Body(json=data, files=body.files))
            inter.first_visible_id = msg.id
        inter.original_id = msg.id
        await store_and_announce(self.state, self.gateway, msg)
        return msg

    def _interaction_message(self, inter: Interaction, body: Body | None, *, flags: int | None = None) -> Message:
        metadata = {"id": str(inter.id), "type": inter.type, "user": user_payload(inter.user),
                    "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {})}
        if body is None:  # a deferred placeholder: no content is fine
            msg = Message(id=self.state.snowflake(), channel_id=inter.channel.id, guild_id=inter.channel.guild_id,
                          author=self.state.bot_user, flags=flags or 0)
        else:
            msg = message_from_body(self.state, inter.channel, self.state.bot_user, body)
        msg.type = 20 if inter.type == COMMAND else 0
        msg.webhook_id = msg.application_id = self.state.application_id
        msg.interaction_id = inter.id
        msg.interaction_metadata = metadata
        return msg

    # -- webhook: follow-ups and @original -------------------------------------------------------------------

    def _interaction(self, request: web.Request) -> Interaction:
        if request.match_info["app"] != str(self.state.application_id):
            raise not_found(10015, "Unknown Webhook")
        inter = self.state.interaction_by_token(request.match_info["token"])
        if inter is None:
            raise not_found(10015, "Unknown Webhook")
        if inter.expired or time.monotonic() - inter.created > TOKEN_LIFETIME_S:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        if inter.response is None:
            raise not_found(10015, "Unknown Webhook")  # follow-ups need an initial response first
        return inter

    def _target(self, inter: Interaction, ref: str) -> Message:
        msg_id = inter.original_id if ref == "@original" else _int(ref)
        if msg_id is None or (msg_id != inter.original_id and msg_id not in inter.followup_ids):
            raise not_found(10008, "Unknown Message")
        msg = self.state.messages.get(msg_id)
        if msg is None or msg.deleted:
            raise not_found(10008, "Unknown Message")
        return msg

    async def followup(self, request: web.Request) -> web.Response:
        inter = self._interaction(request)
        body = await read_body(request)
        original = self.state.messages.get(inter.original_id or 0)
        if original is not None and original.loading and not original.deleted:
            # Discord: the first follow-up after a deferred response replaces the "thinking…" message;
            # its ephemerality was decided by the defer.
            await edit_and_announce(self.state, self.gateway, original, body)
            msg = original
        else:
            msg = self._interaction_message(inter, body)
            await store_and_announce(self.state, self.gateway, msg)
        inter.followup_ids.append(msg.id)
        if inter.first_visible_id is None:
            inter.first_visible_id = msg.id
        self.state.changes.notify()
        if request.query.get("wait") in ("1", "true", "True"):
            return json_response(message_payload(self.state, msg))
        return no_content()

    async def get_message(self, request: web.Request) -> web.Response:
        msg = self._target(self._interaction(request), request.match_info["message"])
        return json_response(message_payload(self.state, msg))

    async def edit_message(self, request: web.Request) -> web.Response:
        inter = self._interaction(request)
        msg = self._target(inter, request.match_info["message"])
        await edit_and_announce(self.state, self.gateway, msg, await read_body(request))
        if inter.first_visible_id is None:
            inter.first_visible_id = msg.id
            self.state.changes.notify()
        return json_response(message_payload(self.state, msg))

    async def delete_message(self, request: web.Request) -> web.Response:
        msg = self._target(self._interaction(request), request.match_info["message"])
        await delete_and_announce(self.state, self.gateway, msg)
        return no_content()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise not_found(10008, "Unknown Message") from None
