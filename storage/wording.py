"""Wording shared by every front end's messages (storage errors, the bot, the CLI)."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, "image")`` → "1 image", ``plural(3, "image")`` → "3 images"."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


def human_bytes(size: float) -> str:
    """``human_bytes(1536)`` → "1.5 KB" (bytes as a person reads them; GB at most)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
