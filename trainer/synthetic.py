"""Synthetic images: flat colours, gradients and simple shapes in named or random colour schemes.

Used to fit the tiny VAE (many random schemes), to build the offline demo's dataset (one distinctive scheme) and
by tests that need a dataset without downloading anything. Torch-free; deterministic for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from trainer.api import TrainItem

RGB = tuple[int, int, int]

# (background, foreground) pairs with a clear look, for datasets with one recognisable style.
SCHEMES: dict[str, tuple[RGB, RGB]] = {
    "orange-on-teal": ((12, 70, 78), (240, 130, 30)),
    "magenta-on-lime": ((170, 220, 60), (200, 30, 150)),
    "white-on-navy": ((20, 30, 90), (240, 240, 235)),
    "red-on-cream": ((240, 230, 200), (200, 30, 30)),
}


def _jitter(rng: random.Random, colour: RGB, amount: int) -> RGB:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def _gradient(size: int, a: RGB, b: RGB, vertical: bool) -> Image.Image:
    line = Image.new("RGB", (size, 1))
    for i in range(size):
        t = i / max(1, size - 1)
        line.putpixel((i, 0), tuple(round(a[k] * (1 - t) + b[k] * t) for k in range(3)))
    img = line.resize((size, size), Image.NEAREST)
    return img.transpose(Image.ROTATE_90) if vertical else img


def draw_shapes(rng: random.Random, size: int, background: RGB, foreground: RGB, *,
                gradient: bool = False, shapes: int | None = None, jitter: int = 12) -> Image.Image:
    """A background (flat or a gentle gradient) with 1–3 ellipses/rectangles/triangles in the foreground colour."""
    bg = _jitter(rng, background, jitter)
    if gradient:
        img = _gradient(size, bg, _jitter(rng, background, 3 * jitter), rng.random() < 0.5)
    else:
        img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(shapes if shapes is not None else rng.randint(1, 3)):
        fg = _jitter(rng, foreground, jitter)
        w, h = rng.randint(size // 5, size // 2), rng.randint(size // 5, size // 2)
        x, y = rng.randint(0, size - w), rng.randint(0, size - h)
        kind = rng.choice(("ellipse", "rect", "triangle"))
        if kind == "ellipse":
            draw.ellipse((x, y, x + w, y + h), fill=fg)
        elif kind == "rect":
            draw.rectangle((x, y, x + w, y + h), fill=fg)
        else:
            draw.polygon([(x, y + h), (x + w, y + h), (x + w // 2, y)], fill=fg)
    return img


def random_colour(rng: random.Random) -> RGB:
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def random_image(rng: random.Random, size: int = 64) -> Image.Image:
    """One image of a random kind and colour scheme (flat, gradient, shapes on either) — VAE fitting data."""
    kind = rng.random()
    a, b = random_colour(rng), random_colour(rng)
    if kind < 0.1:
        return Image.new("RGB", (size, size), a)
    if kind < 0.25:
        return _gradient(size, a, b, rng.random() < 0.5)
    return draw_shapes(rng, size, a, b, gradient=rng.random() < 0.4, shapes=rng.randint(1, 4), jitter=0)


def make_dataset(out_dir: Path, *, count: int = 12, scheme: str = "orange-on-teal", size: int = 64,
                 seed: int = 0, caption: str = "shapes") -> list[TrainItem]:
    """Write ``count`` PNGs of one colour scheme to ``out_dir`` and return them as training items."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown colour scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    background, foreground = SCHEMES[scheme]
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        img = draw_shapes(rng, size, background, foreground, gradient=i % 3 == 2)
        path = out_dir / f"{scheme}-{i:03d}.png"
        img.save(path)
        items.append(TrainItem(image_path=path, caption=caption))
    return items
