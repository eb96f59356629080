"""Text and embed helpers that respect Discord's limits (content 2000, description 4096, field 1024 …)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import discord

from storage.wording import human_bytes, plural

__all__ = ["human_bytes", "plural"]  # re-exported: the cogs and renderers take it from here

CONTENT_LIMIT = 2000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
MAX_FIELDS = 25
EMBED_TOTAL_LIMIT = 6000

OK = 0x2ECC71
INFO = 0x5865F2
WARN = 0xF1C40F
ERROR = 0xE74C3C


def truncate(text: str, limit: int, *, ellipsis: str = "…") -> str:
    """``text`` cut to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - len(ellipsis))] + ellipsis


def human_duration(seconds: float) -> str:
    """Short duration: "45s", "3m 05s", "2h 10m"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def bullets(lines: Iterable[str], *, limit: int = DESCRIPTION_LIMIT, bullet: str = "•") -> str:
    """A bullet list that fits in ``limit`` characters, ending with "… and N more" when it does not."""
    items = [f"{bullet} {line}" for line in lines]
    text = "\n".join(items)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for i, item in enumerate(items):
        # would this item still leave room for the "and N more" line that follows it?
        if len("\n".join([*kept, item, f"… and {len(items) - i - 1} more"])) > limit:
            return "\n".join([*kept, f"… and {len(items) - i} more"])
        kept.append(item)
    return "\n".join(kept)  # pragma: no cover - the full text did not fit, so the loop returns


def error_text(message: str, hint: str = "") -> str:
    """How every user-facing error reads: what went wrong, then what to do about it."""
    text = f"❌ {message}"
    if hint:
        text += f"\n💡 {hint}"
    return truncate(text, CONTENT_LIMIT)


def embed(title: str, description: str | None = None, *, color: int = INFO,
          fields: Sequence[tuple[str, str] | tuple[str, str, bool]] = (), footer: str | None = None,
          url: str | None = None) -> discord.Embed:
    """An embed cut to Discord's limits: each part to its own, and all together to 6000 characters (title, then
    description, then footer keep their text first; fields that no longer fit are dropped)."""
    title = truncate(title, TITLE_LIMIT)
    budget = EMBED_TOTAL_LIMIT - len(title)
    desc = truncate(description, min(DESCRIPTION_LIMIT, budget)) if description else None
    budget -= len(desc or "")
    foot = truncate(footer, min(FOOTER_LIMIT, budget)) if footer and budget > 0 else None
    budget -= len(foot or "")
    e = discord.Embed(title=title, color=color, url=url, description=desc)
    for field in fields[:MAX_FIELDS]:
        name = truncate(field[0] or "\u200b", FIELD_NAME_LIMIT)
        value = truncate(field[1] or "\u200b", FIELD_VALUE_LIMIT)
        if len(name) + len(value) > budget:
            break
        budget -= len(name) + len(value)
        e.add_field(name=name, value=value, inline=field[2] if len(field) > 2 else False)  # type: ignore[misc]
    if foot:
        e.set_footer(text=foot)
    return e


def escape(text: str) -> str:
    """User-provided text shown verbatim (no markdown, no mentions)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))
