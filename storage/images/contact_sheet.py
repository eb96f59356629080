"""Contact sheet: one PNG showing a dataset's images as numbered thumbnails with caption snippets.

The numbers are the positions people type in commands (``remove 7``), so the badge is large and high-contrast.
Rendering is synchronous CPU work; callers run it in a thread.
"""

from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from storage.wording import plural

_BG = (30, 31, 34)
_CELL_BG = (43, 45, 49)
_TEXT = (230, 232, 235)
_MUTED = (150, 155, 162)
_BADGE = (88, 101, 242)
_PAD = 8
_TITLE_H = 44
_CAPTION_LINES = 2


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans when the system has it (wide Unicode coverage), else Pillow's built-in font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _glyph_mask(size: int, ch: str) -> bytes:
    im = Image.new("L", (size * 2, size * 2))
    ImageDraw.Draw(im).text((2, 2), ch, font=_font(size), fill=255)
    return im.tobytes()


@lru_cache(maxsize=8192)
def _has_glyph(size: int, ch: str) -> bool:
    return ch.isspace() or _glyph_mask(size, ch) != _glyph_mask(size, "\U0010fffd")


def _displayable(text: str, size: int) -> str:
    """Replace characters the font cannot draw (they would show as boxes): accented letters lose their
    accent (é → e), anything else becomes ``?``."""
    out = []
    for ch in text:
        if _has_glyph(size, ch):
            out.append(ch)
            continue
        base = unicodedata.normalize("NFKD", ch)[:1]
        out.append(base if base != ch and base.isascii() and _has_glyph(size, base) else "?")
    return "".join(out)


def _text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    return font.getlength(text)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    """Greedy word wrap into at most ``lines`` lines; the last one ends with … when text was cut."""
    words = text.split()
    out: list[str] = []
    cur = ""
    for k, word in enumerate(words):
        trial = f"{cur} {word}".strip()
        if _text_width(font, trial) <= width:
            cur = trial
            continue
        if cur:
            out.append(cur)
        cur = word
        if len(out) == lines:
            cur = ""
            out[-1] = _ellipsize(out[-1] + " " + " ".join(words[k:]), font, width)
            break
    if cur:
        if len(out) < lines:
            out.append(_ellipsize(cur, font, width))
        else:
            out[-1] = _ellipsize(out[-1] + " " + cur, font, width)
    return out


def _ellipsize(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    if _text_width(font, text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if _text_width(font, text[:mid].rstrip() + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def _thumbnail(data: bytes | Path, thumb: int) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.draft("RGB", (thumb, thumb))  # JPEG: decode at reduced scale
            im.thumbnail((thumb, thumb), Image.Resampling.LANCZOS, reducing_gap=2.0)
            return im.convert("RGB")
    except Exception:
        return None


def render_contact_sheet(
    items: Sequence[tuple[int, bytes | Path, str]], *, title: str, thumb: int = 160, columns: int | None = None
) -> bytes:
    """PNG of ``(index, image bytes or file, caption)`` items as a grid: image, ``#index`` badge, caption snippet.

    Files are opened one at a time (each decoded at reduced scale where the format allows), so memory holds the
    sheet and one image, whatever the dataset's size.

    Unreadable images get a placeholder cell instead of failing the whole sheet.
    """
    n = len(items)
    cols = columns or max(1, min(8, math.ceil(math.sqrt(max(n, 1) * 1.4))))
    cols = max(1, min(cols, max(n, 1)))
    rows = max(1, math.ceil(n / cols))
    cap_font, badge_font, title_font = _font(12), _font(16), _font(20)
    line_h = 15
    cell_w, cell_h = thumb + 2 * _PAD, thumb + 2 * _PAD + _CAPTION_LINES * line_h + 4
    width = max(cols * cell_w + _PAD, 360)
    height = _TITLE_H + rows * cell_h + _PAD

    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    subtitle = plural(n, "image")
    title = _displayable(title, 20)
    draw.text((_PAD + 4, 10), _ellipsize(title, title_font, width - 140), font=title_font, fill=_TEXT)
    draw.text((width - _PAD - 4, 14), subtitle, font=cap_font, fill=_MUTED, anchor="ra")
    if n == 0:
        draw.text((_PAD + 4, _TITLE_H + 10), "No images yet.", font=cap_font, fill=_MUTED)

    for k, (index, data, caption) in enumerate(items):
        x0 = _PAD // 2 + (k % cols) * cell_w + _PAD // 2
        y0 = _TITLE_H + (k // cols) * cell_h
        draw.rectangle([x0, y0, x0 + cell_w - _PAD, y0 + cell_h - _PAD // 2], fill=_CELL_BG)
        tx, ty = x0 + _PAD // 2, y0 + _PAD // 2
        im = _thumbnail(data, thumb)
        if im is None:
            draw.text((tx + thumb // 2, ty + thumb // 2), "unreadable", font=cap_font, fill=_MUTED, anchor="mm")
        else:
            sheet.paste(im, (tx + (thumb - im.width) // 2, ty + (thumb - im.height) // 2))
        label = f"#{index}"
        bw = int(_text_width(badge_font, label)) + 12
        draw.rounded_rectangle([tx + 3, ty + 3, tx + 3 + bw, ty + 27], radius=6, fill=_BADGE,
                               outline=(255, 255, 255), width=1)
        draw.text((tx + 3 + bw / 2, ty + 15), label, font=badge_font, fill=(255, 255, 255), anchor="mm")
        text = _displayable(caption.replace("\n", " "), 12) if caption else ""
        lines = _wrap(text, cap_font, thumb, _CAPTION_LINES) if text else []
        for li, text in enumerate(lines or ["(no caption)"]):
            draw.text((tx, ty + thumb + 4 + li * line_h), text, font=cap_font,
                      fill=_TEXT if lines else _MUTED)

    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
