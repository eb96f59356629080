"""Multi-concept datasets: named image groups, each with its own trigger or class word and repeats.

The rules live here once: what a group name may be, how kohya's ``N_name/`` zip folders map to groups, and how a
dataset's groups become the training config's ``groups`` (repeats balanced so every group gets an equal share of
steps unless the owner fixed them). Torch-free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from storage.errors import InvalidInput
from storage.names import clean_text, text_key
from trainer.config import MAX_GROUP_NAME, MAX_GROUP_TRIGGER, MAX_REPEATS

_GROUP_NAME = re.compile(rf"^[\w-]{{1,{MAX_GROUP_NAME}}}$")
_KOHYA_FOLDER = re.compile(r"^(\d{1,4})_(.+)$")


@dataclass(frozen=True)
class GroupInfo:
    name: str
    trigger: str
    repeats: int | None  # None → balanced automatically at training time
    image_count: int


def normalize_group(name: str) -> str:
    """A group name: letters, digits, ``_`` or ``-``, at most MAX_GROUP_NAME characters (spaces become ``-``)."""
    raw = clean_text(name or "", max_len=200).replace(" ", "-")
    if not _GROUP_NAME.match(raw):
        raise InvalidInput(f"“{raw[:MAX_GROUP_NAME]}” is not a usable group name.",
                           f"Use up to {MAX_GROUP_NAME} letters, digits, - or _, e.g. `outfit2`.")
    return raw


def clean_group_trigger(trigger: str) -> str:
    word = clean_text(trigger or "", max_len=MAX_GROUP_TRIGGER)
    if "@" in word or ":" in word:
        raise InvalidInput("A group trigger cannot contain “@” or “:”.", "Use plain words, e.g. `red dress`.")
    return word


def check_repeats(repeats: int | None) -> int | None:
    if repeats is not None and not 1 <= int(repeats) <= MAX_REPEATS:
        raise InvalidInput(f"Repeats must be between 1 and {MAX_REPEATS} (got {repeats}).",
                           "Leave it out to balance the groups automatically.")
    return None if repeats is None else int(repeats)


def find_group(groups: Mapping[str, Any], name: str) -> str | None:
    """The stored spelling of group ``name`` (case-insensitive), or None."""
    key = text_key(name or "")
    return next((g for g in groups if text_key(g) == key), None)


def group_infos(groups: Mapping[str, Any], image_groups: Iterable[str]) -> list[GroupInfo]:
    counts = Counter(g for g in image_groups if g)
    return [GroupInfo(name, str(spec.get("trigger", "")), spec.get("repeats"), counts.get(name, 0))
            for name, spec in sorted(groups.items(), key=lambda kv: text_key(kv[0]))]


def training_groups(groups: Mapping[str, Any], manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The config's ``groups`` override for a frozen manifest: groups that have images, with their trigger, image
    count and, when the owner set them, fixed repeats (otherwise the trainer balances them)."""
    counts = Counter(str(m.get("group") or "") for m in manifest)
    out = []
    for name, spec in groups.items():
        if counts.get(name):
            entry: dict[str, Any] = {"name": name, "trigger": str(spec.get("trigger", "")), "images": counts[name]}
            if spec.get("repeats"):
                entry["repeats"] = int(spec["repeats"])
            out.append(entry)
    return out


def kohya_folder(path: str) -> tuple[str, str, int] | None:
    """``(group name, trigger, repeats)`` for an archive path inside a kohya ``N_name/`` folder, else None.

    kohya's folder name is ``<repeats>_<instance token> <class token>``: the text becomes the group's trigger
    and, made name-safe, its name.
    """
    parts = path.replace("\\", "/").split("/")
    for folder in reversed(parts[:-1]):
        m = _KOHYA_FOLDER.match(folder.strip())
        if m:
            text = clean_text(m.group(2), max_len=MAX_GROUP_TRIGGER)
            name = re.sub(r"[^\w-]+", "-", text).strip("-")[:MAX_GROUP_NAME]
            if name:
                return name, text, max(1, min(MAX_REPEATS, int(m.group(1))))
    return None
