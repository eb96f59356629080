"""Wording shared by every front end's messages (storage errors, the bot, the CLI)."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, "image")`` → "1 image", ``plural(3, "image")`` → "3 images"."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"
