"""Embeds, buttons and images for generations: the posted result, its info, and the strength-grid composite."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import discord
from PIL import Image, ImageDraw, ImageFont

from bot import render
from bot.context import button, custom_id, routed_view
from bot.render import escape, plural

GRID_TILE = 256  # px: grid tiles are scaled to this height so labels stay readable


def elements_text(elements: Sequence[dict[str, Any]]) -> str:
    if not elements:
        return "none"
    return "\n".join(f"**{escape(str(e.get('name')))}** × {float(e.get('strength') or 0):g}" for e in elements)


def credits_text(credits: Sequence[tuple[str, str]]) -> str | None:
    if not credits:
        return None
    return "\n".join(f"“{escape(name)}” by {escape(owner)}" for name, owner in credits)


def result_embed(gen: Any, *, requester: str | None = None) -> discord.Embed:
    """A finished generation (:class:`storage.generation_actions.GenerationInfo`)."""
    seeds = gen.seeds or ([gen.seed] if gen.seed is not None else [])
    w, h = gen.params.get("width"), gen.params.get("height")
    fields: list[tuple[str, str, bool]] = [
        ("Elements", elements_text(gen.elements), True),
        ("Seed" if len(seeds) == 1 else "Seeds", ", ".join(str(s) for s in seeds) or "random", True),
        ("Size", f"{w}×{h}{' (hi-res)' if gen.hires else ''} · {gen.base_model}", True),
    ]
    if (credit := credits_text(gen.credits)) is not None:
        fields.append(("Shared Elements by", credit, False))
    if gen.negative_prompt:
        fields.append(("Negative prompt", escape(gen.negative_prompt), False))
    if gen.warnings:
        fields.append(("⚠️ Warnings", render.bullets((escape(w_) for w_ in gen.warnings),
                                                    limit=render.FIELD_VALUE_LIMIT), False))
    head = f"for {escape(requester)}" if requester else None
    return render.embed(render.truncate(f"🎨 {gen.prompt or '(no prompt)'}", render.TITLE_LIMIT), head,
                        color=render.WARN if gen.warnings else render.OK, fields=fields,
                        footer=f"Generation {gen.id} · {plural(gen.count, 'image')}")


def result_view(gen: Any, owner_discord_id: int) -> discord.ui.View:
    def cid(action: str) -> str:
        return custom_id("gen", action, gen.id, owner=owner_discord_id)

    return routed_view(
        button("Reroll", cid("reroll"), emoji="🎲", row=0),
        button("Variations", cid("vary"), emoji="🔀", row=0),
        button("Strength grid", cid("grid"), emoji="🎚️", row=0, disabled=not gen.elements),
        button("Hi-res ×2", cid("hires"), emoji="🔍", row=0, disabled=gen.hires),
        button("Add to dataset", cid("add"), emoji="➕", row=1, style=discord.ButtonStyle.success),
        button("Info", cid("info"), emoji="ℹ️", row=1),
        button("Delete", cid("delete"), emoji="🗑️", row=1, style=discord.ButtonStyle.danger),
    )


def image_files(gen_id: int, images: Sequence[bytes]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), f"generation-{gen_id}-{i}.png") for i, data in enumerate(images, 1)]


def info_embed(gen: Any) -> discord.Embed:
    p = gen.params
    fields: list[tuple[str, str, bool]] = [
        ("Prompt", escape(gen.prompt) or "(empty)", False),
        ("Prompt sent to the model", escape(str(p.get("used_prompt") or gen.prompt)), False),
        ("Elements", elements_text(gen.elements), True),
        ("Seeds", ", ".join(str(s) for s in gen.seeds) or str(gen.seed), True),
        ("Base model", gen.base_model, True),
        ("Size", f"{p.get('width')}×{p.get('height')}" + (" (hi-res ×2)" if gen.hires else ""), True),
        ("Steps", str(p.get("steps") or "default"), True),
        ("Guidance", str(p.get("guidance") if p.get("guidance") is not None else "default"), True),
    ]
    if gen.negative_prompt:
        fields.append(("Negative prompt", escape(gen.negative_prompt), False))
    if (credit := credits_text(gen.credits)) is not None:
        fields.append(("Shared Elements by", credit, False))
    if p.get("parent_generation_id"):
        fields.append(("Made from", f"generation {p['parent_generation_id']}", True))
    return render.embed(f"Generation {gen.id}", None, fields=fields,
                        footer=f"Created {gen.created_at:%Y-%m-%d %H:%M} UTC · job {gen.job_id}")


def grid_embed(parent_id: int, prompt: str, elements: Sequence[dict[str, Any]], members: Sequence[Any]
               ) -> discord.Embed:
    failed = [m for m in members if m.status != "succeeded"]
    names = ", ".join(escape(str(e.get("name"))) for e in elements) or "the Elements"
    desc = (f"The same seed with {names} at strengths "
            f"{', '.join(f'{m.strength:g}' for m in members)} (left to right).")
    fields = []
    if failed:
        fields.append(("Missing tiles", render.bullets(f"strength {m.strength:g}: {escape(m.error or m.status)}"
                                                       for m in failed), False))
    e = render.embed(render.truncate(f"🎚️ Strength grid — {prompt}", render.TITLE_LIMIT), desc,
                     fields=fields, footer=f"From generation {parent_id}")
    e.set_image(url="attachment://strength-grid.png")
    return e


def compose_strength_grid(tiles: Sequence[tuple[str, bytes | None]]) -> bytes:
    """A labelled row of images (blocking: run it in a thread). A missing image becomes a grey tile."""
    decoded: list[Image.Image | None] = []
    for _, data in tiles:
        if data is None:
            decoded.append(None)
            continue
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            scale = GRID_TILE / im.height
            decoded.append(im.resize((max(1, round(im.width * scale)), GRID_TILE), Image.Resampling.LANCZOS))
    width = max((im.width for im in decoded if im is not None), default=GRID_TILE)
    label_h, pad = 28, 6
    sheet = Image.new("RGB", (len(tiles) * (width + pad) + pad, GRID_TILE + label_h + 2 * pad), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for i, ((label, _), im) in enumerate(zip(tiles, decoded, strict=True)):
        x = pad + i * (width + pad)
        if im is None:
            draw.rectangle((x, pad, x + width - 1, pad + GRID_TILE - 1), fill=(70, 70, 70))
        else:
            sheet.paste(im, (x + (width - im.width) // 2, pad))
        tw = draw.textlength(label, font=font)
        draw.text((x + (width - tw) / 2, pad + GRID_TILE + 4), label, fill=(235, 235, 235), font=font)
    buf = io.BytesIO()
    sheet.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def queued_text(job: object, *, what: str = "Your images are") -> str:
    position = getattr(job, "queue_position", None)
    where = f"position {position} in the queue" if position else "queued"
    return f"🎨 {what} {where} (job {getattr(job, 'id', '?')}). I'll post the result in this channel."


def cancel_view(job_id: int, owner_id: int) -> discord.ui.View:
    return routed_view(button("Cancel", custom_id("job", "cancel", job_id, owner=owner_id), emoji="✖️"))
