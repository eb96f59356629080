"""Turn ``slash(user, "dataset", "add", name="cats", image1=att)`` into the nested options Discord sends.

Follows the synced command schema, so a test that passes an unknown option, misses a required one or picks a
value outside ``choices`` fails here with a readable message, as the Discord client would refuse it.
"""

from __future__ import annotations

from typing import Any

from .payloads import attachment_payload, channel_payload, member_payload, user_payload
from .state import Attachment, Channel, State, User

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11


class UsageError(AssertionError):
    """The test asked for something a Discord user could not do."""


def build_command_options(state: State, command: dict[str, Any], path: tuple[str, ...], values: dict[str, Any],
                          *, channel: Channel, focused: str | None = None
                          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return (options, resolved) for ``/command *path`` with ``values`` (``focused`` marks autocomplete)."""
    options: list[dict[str, Any]] = []
    target = options
    schema: list[dict[str, Any]] = command.get("options", [])
    where = f"/{command['name']}"
    for segment in path:
        sub = next((o for o in schema if o["name"] == segment and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)),
                   None)
        if sub is None:
            raise UsageError(f"{where} has no subcommand {segment!r}; it has {_subcommands(schema) or 'none'}")
        node: dict[str, Any] = {"type": sub["type"], "name": segment, "options": []}
        target.append(node)
        target, schema, where = node["options"], sub.get("options", []), f"{where} {segment}"
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in schema):
        raise UsageError(f"{where} needs a subcommand: one of {_subcommands(schema)}")
    resolved: dict[str, Any] = {}
    by_name = {o["name"]: o for o in schema}
    for name, value in values.items():
        opt = by_name.get(name)
        if opt is None:
            raise UsageError(f"{where} has no option {name!r}; options are {sorted(by_name) or 'none'}")
        if value is None:
            continue
        if name == focused:
            if not opt.get("autocomplete"):
                raise UsageError(f"{where} option {name!r} has no autocomplete")
            target.append({"type": opt["type"], "name": name, "value": str(value), "focused": True})
            continue
        target.append({"type": opt["type"], "name": name,
                       "value": _convert(state, f"{where} {name}", opt, value, resolved, channel)})
    if focused is not None and focused not in values:
        raise UsageError(f"autocomplete: pass the typed text for {focused!r} as value=…")
    if focused is None:
        missing = [o["name"] for o in schema if o.get("required") and values.get(o["name"]) is None]
        if missing:
            raise UsageError(f"{where} is missing required option(s) {missing}")
    return options, resolved


def _subcommands(schema: list[dict[str, Any]]) -> list[str]:
    return [o["name"] for o in schema if o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)]


def _convert(state: State, where: str, opt: dict[str, Any], value: Any, resolved: dict[str, Any],
             channel: Channel) -> Any:
    kind = opt["type"]
    if kind == STRING:
        if not isinstance(value, str):
            raise UsageError(f"{where} expects text, got {value!r}")
        lo, hi = opt.get("min_length", 0), opt.get("max_length", 6000)
        if not lo <= len(value) <= hi:
            raise UsageError(f"{where} must be {lo}-{hi} characters")
    elif kind in (INTEGER, NUMBER):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == INTEGER and
                                                                              not isinstance(value, int)):
            raise UsageError(f"{where} expects a {'whole ' if kind == INTEGER else ''}number, got {value!r}")
        if "min_value" in opt and value < opt["min_value"] or "max_value" in opt and value > opt["max_value"]:
            raise UsageError(f"{where} must be between {opt.get('min_value')} and {opt.get('max_value')}")
    elif kind == BOOLEAN:
        if not isinstance(value, bool):
            raise UsageError(f"{where} expects True/False, got {value!r}")
    elif kind in (USER, MENTIONABLE):
        if not isinstance(value, User):
            raise UsageError(f"{where} expects an emulator User")
        resolved.setdefault("users", {})[str(value.id)] = user_payload(value)
        if not channel.is_dm:
            resolved.setdefault("members", {})[str(value.id)] = member_payload(value, with_user=False,
                                                                                with_permissions=True)
        return str(value.id)
    elif kind == CHANNEL:
        if not isinstance(value, Channel):
            raise UsageError(f"{where} expects an emulator Channel")
        resolved.setdefault("channels", {})[str(value.id)] = {**channel_payload(value),
                                                              "permissions": str(state.bot_user.permissions)}
        return str(value.id)
    elif kind == ATTACHMENT:
        if not isinstance(value, Attachment):
            raise UsageError(f"{where} expects an attachment from emu.upload(...)")
        resolved.setdefault("attachments", {})[str(value.id)] = attachment_payload(value)
        return str(value.id)
    else:
        raise UsageError(f"{where}: option type {kind} is not supported by the emulator")
    choices = opt.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise UsageError(f"{where} must be one of {[c['value'] for c in choices]}, got {value!r}")
    return value
