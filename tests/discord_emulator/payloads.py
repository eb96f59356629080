"""JSON shapes of Discord objects, as discord.py 2.7 parses them."""

from __future__ import annotations

from typing import Any

from .state import Attachment, Channel, Interaction, Message, State, User, iso

EVERYONE_ROLE_PERMISSIONS = 0


def user_payload(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id), "username": user.username, "discriminator": "0", "global_name": user.username,
        "avatar": None, "bot": user.bot, "public_flags": 0,
    }


def member_payload(user: User, *, with_user: bool = True, with_permissions: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": [], "joined_at": iso(user.joined_at), "deaf": False, "mute": False, "flags": 0, "nick": None,
        "avatar": None, "premium_since": None, "pending": False, "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user_payload(user)
    if with_permissions:
        data["permissions"] = str(user.permissions)
    return data


def channel_payload(channel: Channel) -> dict[str, Any]:
    if channel.is_dm:
        assert channel.recipient is not None
        return {"id": str(channel.id), "type": 1, "last_message_id": None,
                "recipients": [user_payload(channel.recipient)], "flags": 0}
    return {
        "id": str(channel.id), "type": 0, "guild_id": str(channel.guild_id), "name": channel.name,
        "position": channel.position, "permission_overwrites": [], "topic": None, "nsfw": False,
        "parent_id": None, "rate_limit_per_user": 0, "last_message_id": None, "flags": 0,
    }


def attachment_payload(att: Attachment) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(att.id), "filename": att.filename, "size": att.size, "url": att.url,
                            "proxy_url": att.url, "flags": 0}
    if att.content_type:
        data["content_type"] = att.content_type
    if att.width is not None:
        data["width"], data["height"] = att.width, att.height
    if att.description is not None:
        data["description"] = att.description
    return data


def message_payload(state: State, msg: Message, *, hide_content: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(msg.id), "type": msg.type, "channel_id": str(msg.channel_id), "author": user_payload(msg.author),
        "content": "" if hide_content else msg.content, "timestamp": iso(msg.timestamp),
        "edited_timestamp": iso(msg.edited_at) if msg.edited_at else None, "tts": False,
        "mention_everyone": False, "mentions": [], "mention_roles": [], "mention_channels": [],
        "attachments": [] if hide_content else [attachment_payload(a) for a in msg.attachments],
        "embeds": [] if hide_content else msg.embeds,
        "components": [] if hide_content else msg.components,
        "pinned": False, "flags": msg.flags,
    }
    if msg.guild_id is not None:
        data["guild_id"] = str(msg.guild_id)
        data["member"] = member_payload(msg.author, with_user=False)
    if msg.webhook_id is not None:
        data["webhook_id"] = str(msg.webhook_id)
    if msg.application_id is not None:
        data["application_id"] = str(msg.application_id)
    if msg.interaction_metadata is not None:
        data["interaction_metadata"] = msg.interaction_metadata
    if msg.message_reference is not None:
        data["message_reference"] = msg.message_reference
    if msg.reactions:
        data["reactions"] = [{"count": 1, "me": True, "emoji": {"id": None, "name": e},
                              "count_details": {"burst": 0, "normal": 1}, "me_burst": False, "burst_colors": []}
                             for e in msg.reactions]
    return data


def application_payload(state: State) -> dict[str, Any]:
    return {
        "id": str(state.application_id), "name": state.bot_user.username, "icon": None,
        "description": "Atelier test application", "bot_public": True, "bot_require_code_grant": False,
        "owner": user_payload(state.owner), "verify_key": "0" * 64, "flags": 0, "team": None,
        "summary": "", "rpc_origins": [], "tags": [], "approximate_guild_count": 1,
    }


def guild_create_payload(state: State, *, with_members: bool) -> dict[str, Any]:
    """Without the GUILD_MEMBERS intent Discord lists only the bot itself (member_count stays the real one)."""
    everyone = [state.bot_user, *state.users.values()]
    members = everyone if with_members else [state.bot_user]
    return {
        "id": str(state.guild_id), "name": state.guild_name, "icon": None, "splash": None, "discovery_splash": None,
        "owner_id": str(state.owner.id), "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
        "premium_tier": 0, "preferred_locale": "en-US", "features": [], "system_channel_id": None,
        "system_channel_flags": 0, "rules_channel_id": None, "public_updates_channel_id": None,
        "application_id": None, "vanity_url_code": None, "description": None, "banner": None,
        "roles": [{"id": str(state.guild_id), "name": "@everyone", "permissions": str(EVERYONE_ROLE_PERMISSIONS),
                   "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
        "emojis": [], "stickers": [], "large": False, "unavailable": False, "joined_at": iso(state.bot_user.joined_at),
        "member_count": len(everyone), "members": [member_payload(u) for u in members],
        "channels": [channel_payload(c) for c in state.channels.values() if not c.is_dm],
        "threads": [], "presences": [], "voice_states": [], "stage_instances": [],
        "guild_scheduled_events": [], "soundboard_sounds": [],
    }


def interaction_payload(state: State, inter: Interaction, data: dict[str, Any]) -> dict[str, Any]:
    """INTERACTION_CREATE body for ``inter`` with the type-specific ``data``."""
    channel, user = inter.channel, inter.user
    payload: dict[str, Any] = {
        "id": str(inter.id), "application_id": str(state.application_id), "type": inter.type,
        "token": inter.token, "version": 1, "data": data, "locale": "en-US", "entitlements": [],
        "attachment_size_limit": 25 * 1024 * 1024, "channel_id": str(channel.id),
        "channel": channel_payload(channel),
    }
    if channel.is_dm:
        payload.update(user=user_payload(user), context=1, app_permissions=str(state.bot_user.permissions),
                       authorizing_integration_owners={"1": str(user.id)})
    else:
        payload.update(
            guild_id=str(state.guild_id), guild={"id": str(state.guild_id), "locale": "en-US", "features": []},
            member=member_payload(user, with_permissions=True), guild_locale="en-US", context=0,
            app_permissions=str(state.bot_user.permissions),
            authorizing_integration_owners={"0": str(state.guild_id)},
        )
    if inter.message is not None:
        payload["message"] = message_payload(state, inter.message)
    return payload
