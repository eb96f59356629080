"""Contact sheet: a readable grid of numbered thumbnails."""

from __future__ import annotations

import io

from PIL import Image

from storage.images.contact_sheet import _BADGE, render_contact_sheet
from tests.storage import hostile as H

COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 30), (200, 40, 200)]


def solid(color: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    return H.encode(Image.new("RGB", size, color), "PNG")


def render(items, **kw) -> Image.Image:
    data = render_contact_sheet(items, title=kw.pop("title", "My dataset — 5 images"), **kw)
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return im.convert("RGB")


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_grid_layout_thumbnails_and_badges():
    items = [(i + 1, solid(c), f"caption number {i + 1}") for i, c in enumerate(COLORS)]
    sheet = render(items, thumb=120, columns=3)
    cell_w = 120 + 16
    assert sheet.width == 3 * cell_w + 8  # 3 columns
    rows_h = sheet.height - 44 - 8
    assert rows_h % 2 == 0  # 2 rows of equal height
    cell_h = rows_h // 2
    for k, color in enumerate(COLORS):
        x0 = 4 + (k % 3) * cell_w + 4 + 4
        y0 = 44 + (k // 3) * cell_h + 4
        assert close(sheet.getpixel((x0 + 60, y0 + 60)), color), f"thumbnail {k + 1} is in its cell"
        badge = [sheet.getpixel((x0 + dx, y0 + 5)) for dx in range(4, 40)]
        assert any(close(p, _BADGE, 4) for p in badge), f"badge for #{k + 1} is drawn"


def test_default_columns_and_large_sets():
    items = [(i, solid(COLORS[i % 5], (64, 64)), "") for i in range(1, 51)]
    sheet = render(items)
    assert 5 <= (sheet.width - 8) // (160 + 16) <= 8
    assert sheet.width * sheet.height < 4000 * 4000


def test_unreadable_and_odd_inputs_do_not_fail_the_sheet():
    long_caption = "word " * 200
    items = [
        (1, b"garbage", "broken"),
        (2, solid((10, 10, 10), (2000, 200)), long_caption),  # very wide image, very long caption
        (3, H.photo_jpeg(300, 500), "line\nbreaks\tand\u200b odd spaces"),
        (42, solid((250, 250, 250), (50, 50)), "tiny"),
    ]
    sheet = render(items, title="Ünïcødé ✨ " + "very long title " * 20)
    assert sheet.width > 300


def test_empty_dataset():
    sheet = render([], title="Empty")
    assert sheet.width >= 300 and sheet.height > 44


def test_characters_the_font_lacks_are_replaced_not_boxed():
    from storage.images.contact_sheet import _displayable, _has_glyph

    out = _displayable("café “Straße” 猫 \U0010fffd ok", 12)
    assert out.endswith(" ok") and "\U0010fffd" not in out
    assert all(_has_glyph(12, ch) or ch == "?" for ch in out)
