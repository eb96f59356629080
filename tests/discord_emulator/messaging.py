"""Create/edit/delete stored messages from request bodies and tell the gateway, as Discord would."""

from __future__ import annotations

from typing import Any

from .cdn import attachments_from_body
from .gateway import DIRECT_MESSAGES, GUILD_MESSAGES, MESSAGE_CONTENT, Gateway
from .httputil import Body
from .payloads import message_payload
from .state import EPHEMERAL, LOADING, Channel, Message, State, User
from .validation import check_message

KEPT_FLAGS = EPHEMERAL | (1 << 2) | (1 << 12) | (1 << 15)


def message_from_body(state: State, channel: Channel, author: User, body: Body, *, flags_mask: int = KEPT_FLAGS,
                      **extra: Any) -> Message:
    data = body.json
    check_message(data, has_files=bool(body.files), creating=True)
    attachments = attachments_from_body(state, data, body.files) or []
    return Message(
        id=state.snowflake(), channel_id=channel.id, guild_id=channel.guild_id, author=author,
        content=str(data.get("content") or ""), embeds=list(data.get("embeds") or []),
        components=list(data.get("components") or []), attachments=attachments,
        flags=int(data.get("flags") or 0) & flags_mask, message_reference=data.get("message_reference"),
        allowed_mentions=data.get("allowed_mentions"), **extra,
    )


def edit_fields(state: State, msg: Message, body: Body) -> dict[str, Any]:
    """The attribute changes a PATCH body asks for (only keys present in the body change)."""
    data = body.json
    check_message(data, has_files=bool(body.files), creating=False)
    fields: dict[str, Any] = {}
    if "content" in data:
        fields["content"] = str(data["content"] or "")
    if "embeds" in data:
        fields["embeds"] = list(data["embeds"] or [])
    if "components" in data:
        fields["components"] = list(data["components"] or [])
    if "allowed_mentions" in data:
        fields["allowed_mentions"] = data["allowed_mentions"]
    attachments = attachments_from_body(state, data, body.files, msg.attachments)
    if attachments is not None:
        fields["attachments"] = attachments
    flags = msg.flags & ~LOADING  # editing a deferred response fills it in
    if "flags" in data and data["flags"] is not None:
        flags = (flags & EPHEMERAL) | (int(data["flags"]) & KEPT_FLAGS & ~EPHEMERAL)
    fields["flags"] = flags
    return fields


async def announce(state: State, gateway: Gateway, event: str, msg: Message) -> None:
    """MESSAGE_CREATE/UPDATE/DELETE for non-ephemeral messages, filtered by the bot's intents."""
    if msg.ephemeral or gateway.current is None:
        return
    intent = GUILD_MESSAGES if msg.guild_id is not None else DIRECT_MESSAGES
    if not gateway.wants(intent):
        return
    if event == "MESSAGE_DELETE":
        data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
    else:
        # Without the privileged message-content intent, guild messages arrive without content unless they
        # are the bot's own or mention it; DMs always carry content.
        hide = (msg.guild_id is not None and not gateway.wants(MESSAGE_CONTENT)
                and msg.author is not state.bot_user and state.bot_user.mention not in msg.content)
        data = message_payload(state, msg, hide_content=hide)
    await gateway.dispatch(event, data)


async def store_and_announce(state: State, gateway: Gateway, msg: Message) -> Message:
    state.add_message(msg)
    await announce(state, gateway, "MESSAGE_CREATE", msg)
    return msg


async def edit_and_announce(state: State, gateway: Gateway, msg: Message, body: Body) -> Message:
    state.edit_message(msg, edit_fields(state, msg, body))
    await announce(state, gateway, "MESSAGE_UPDATE", msg)
    return msg


async def delete_and_announce(state: State, gateway: Gateway, msg: Message) -> None:
    msg.deleted = True
    state.changes.notify()
    await announce(state, gateway, "MESSAGE_DELETE", msg)
