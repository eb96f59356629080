"""Discord's server-side limits, so a cog that would be rejected in production is rejected here too."""

from __future__ import annotations

import re
from typing import Any

from .httputil import DiscordError, invalid_form

COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
EMBED_LIMITS = {"title": 256, "description": 4096}
ALLOWED_MESSAGE_FLAGS = (1 << 2) | (1 << 6) | (1 << 12) | (1 << 15)  # suppress embeds, ephemeral, silent, v2


def _embed_chars(embed: dict[str, Any]) -> int:
    total = len(embed.get("title", "") or "") + len(embed.get("description", "") or "")
    total += len((embed.get("footer") or {}).get("text", "") or "") + len((embed.get("author") or {}).get("name", "") or "")
    total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in embed.get("fields", []))
    return total


def check_embeds(embeds: list[dict[str, Any]]) -> None:
    if len(embeds) > 10:
        raise invalid_form(f"at most 10 embeds, got {len(embeds)}")
    total = 0
    for i, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            if len(embed.get(key) or "") > limit:
                raise invalid_form(f"embeds[{i}].{key} is longer than {limit} characters")
        fields = embed.get("fields", [])
        if len(fields) > 25:
            raise invalid_form(f"embeds[{i}] has {len(fields)} fields; the limit is 25")
        for j, f in enumerate(fields):
            if not f.get("name") or len(f["name"]) > 256:
                raise invalid_form(f"embeds[{i}].fields[{j}].name must be 1-256 characters")
            if not f.get("value") or len(f["value"]) > 1024:
                raise invalid_form(f"embeds[{i}].fields[{j}].value must be 1-1024 characters")
        if len((embed.get("footer") or {}).get("text", "") or "") > 2048:
            raise invalid_form(f"embeds[{i}].footer.text is longer than 2048 characters")
        if len((embed.get("author") or {}).get("name", "") or "") > 256:
            raise invalid_form(f"embeds[{i}].author.name is longer than 256 characters")
        total += _embed_chars(embed)
    if total > 6000:
        raise invalid_form(f"embeds total {total} characters; the limit is 6000")


def check_components(components: list[dict[str, Any]]) -> None:
    stack = list(components)
    while stack:
        comp = stack.pop()
        cid = comp.get("custom_id")
        if cid is not None and not 1 <= len(cid) <= 100:
            raise invalid_form(f"custom_id {cid[:40]!r}… must be 1-100 characters")
        if comp.get("type") == 2 and len(comp.get("label") or "") > 80:
            raise invalid_form("button label longer than 80 characters")
        if comp.get("type") == 3 and not 1 <= len(comp.get("options", [])) <= 25:
            raise invalid_form("a string select needs 1-25 options")
        if comp.get("type") == 1 and len(comp.get("components", [])) > 5:
            raise invalid_form("an action row holds at most 5 components")
        stack.extend(comp.get("components", []))
    if sum(1 for c in components if c.get("type") == 1) > 5:
        raise invalid_form("at most 5 action rows per message")


def check_message(data: dict[str, Any], *, has_files: bool, creating: bool) -> None:
    """Validate a message create/edit body (content, embeds, components, flags)."""
    content = data.get("content")
    if content is not None and len(str(content)) > 2000:
        raise invalid_form(f"content is {len(str(content))} characters; the limit is 2000")
    check_embeds(data.get("embeds") or [])
    check_components(data.get("components") or [])
    flags = int(data.get("flags") or 0)
    if flags & ~ALLOWED_MESSAGE_FLAGS:
        raise invalid_form(f"flags {flags} include bits a bot may not set")
    if creating and not (content or data.get("embeds") or has_files or data.get("components")
                         or data.get("sticker_ids") or data.get("poll")):
        raise DiscordError(400, 50006, "Cannot send an empty message")


def check_command(cmd: dict[str, Any]) -> None:
    """The registration rules discord.py does not check itself, enough to catch broken cogs."""
    ctype = cmd.get("type", 1)
    name = cmd.get("name", "")
    if ctype == 1:
        if not COMMAND_NAME.match(name) or name != name.lower():
            raise invalid_form(f"command name {name!r} must be 1-32 lowercase letters, digits, - or _")
        if not 1 <= len(cmd.get("description", "")) <= 100:
            raise invalid_form(f"/{name}: description must be 1-100 characters")
        _check_options(name, cmd.get("options", []))
    elif not 1 <= len(name) <= 32:
        raise invalid_form(f"context menu name {name!r} must be 1-32 characters")


def _check_options(path: str, options: list[dict[str, Any]]) -> None:
    if len(options) > 25:
        raise invalid_form(f"/{path} has {len(options)} options; the limit is 25")
    seen_optional = False
    for opt in options:
        where = f"/{path} {opt.get('name')}"
        if not COMMAND_NAME.match(opt.get("name", "")):
            raise invalid_form(f"{where}: invalid option name")
        if not 1 <= len(opt.get("description", "")) <= 100:
            raise invalid_form(f"{where}: description must be 1-100 characters")
        if len(opt.get("choices", []) or []) > 25:
            raise invalid_form(f"{where}: at most 25 choices")
        if opt.get("choices") and opt.get("autocomplete"):
            raise invalid_form(f"{where}: choices and autocomplete are mutually exclusive")
        if opt.get("type") in (1, 2):
            _check_options(f"{path} {opt['name']}", opt.get("options", []))
        elif opt.get("required"):
            if seen_optional:
                raise invalid_form(f"{where}: required options must come before optional ones")
        else:
            seen_optional = True
