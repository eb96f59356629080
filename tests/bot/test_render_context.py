"""Pure helpers: Discord limits in bot/render.py and custom_id encoding in bot/context.py."""

from __future__ import annotations

import pytest

from bot import render
from bot.context import custom_id, parse_custom_id
from bot.errors import friendly
from storage.errors import FamilyMismatch


def test_truncate_and_bullets_respect_limits() -> None:
    assert render.truncate("abcdef", 4) == "abc…" and render.truncate("abc", 4) == "abc"
    lines = [f"image-{i:03d}.png" for i in range(200)]
    text = render.bullets(lines, limit=200)
    assert len(text) <= 200 and text.endswith("more") and text.startswith("• image-000.png")
    shown = text.count("•")
    assert text.endswith(f"… and {200 - shown} more")
    assert render.bullets(["a", "b"]) == "• a\n• b"


def test_embed_is_cut_to_discord_limits() -> None:
    e = render.embed("t" * 300, "d" * 5000, fields=[(f"f{i}", "v" * 2000) for i in range(30)], footer="x" * 3000)
    assert len(e.title) == 256 and len(e.description) == 4096 and len(e.footer.text) == 6000 - 256 - 4096
    assert all(len(f.value) <= 1024 for f in e.fields)
    assert len(e) <= 6000  # discord.py's own count of the embed's characters


def test_small_formatters() -> None:
    assert render.plural(1, "image") == "1 image" and render.plural(3, "image") == "3 images"
    assert render.human_bytes(512) == "512 B" and render.human_bytes(3 * 1024 * 1024) == "3.0 MB"
    assert render.human_duration(45) == "45s" and render.human_duration(185) == "3m 05s"
    assert render.human_duration(7800) == "2h 10m"
    assert render.escape("**@everyone**") != "**@everyone**"


def test_custom_id_round_trip() -> None:
    cid = custom_id("gen", "reroll", "0f1e2d", owner=123456789012345678)
    assert cid == "atelier:gen:reroll:0f1e2d:@123456789012345678"
    parsed = parse_custom_id(cid)
    assert parsed is not None and (parsed.noun, parsed.action, parsed.args, parsed.owner) == (
        "gen", "reroll", ("0f1e2d",), 123456789012345678)
    assert parse_custom_id("atelier:ds:open").owner is None  # type: ignore[union-attr]
    assert parse_custom_id("confirm-yes") is None
    with pytest.raises(ValueError, match="no ':'"):
        custom_id("gen", "reroll", "a:b")
    with pytest.raises(ValueError, match="100"):
        custom_id("gen", "reroll", "x" * 100)


def test_domain_error_text_has_message_and_hint() -> None:
    text = friendly(FamilyMismatch("Element 'ink' is for SDXL.", "Pick an SDXL base model."))
    assert text == "❌ Element 'ink' is for SDXL.\n💡 Pick an SDXL base model."
    assert friendly(RuntimeError("bug")) is None


def test_checks_and_cooldowns_read_as_friendly_text() -> None:
    from discord import app_commands

    cooldown = app_commands.CommandOnCooldown(app_commands.Cooldown(1, 30.0), retry_after=12.4)
    assert friendly(cooldown) == "❌ You're doing that too fast.\n💡 Try again in 12s."
    assert friendly(app_commands.CheckFailure("Only admins can do that.")) == "❌ Only admins can do that."
    assert friendly(app_commands.MissingPermissions(["manage_guild"])) == (
        "❌ You need the permission(s) manage guild for this.")


def test_a_cancelled_training_says_whether_its_slot_came_back() -> None:
    from bot.element_render import progress_embed

    queued = progress_embed({"element_name": "Ink", "slot_refunded": True}, status="cancelled")
    running = progress_embed({"element_name": "Ink", "slot_refunded": False}, status="cancelled")
    assert "slot was refunded" in queued.description
    assert "used a training slot" in running.description and "refunded" not in running.description
