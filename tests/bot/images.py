"""Small real test files for the dataset cog tests (tiny, so the tests stay fast): distinct noise PNGs, zips
with kohya-style captions, and the hostile files of tests/storage/hostile.py."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.conftest import noise_png
from tests.storage.hostile import SLIP_NAMES, make_zip, pixel_bomb_png, text_renamed_png

__all__ = ["SLIP_NAMES", "jpeg", "noise_png", "pixel_bomb_png", "png", "slip_only_zip", "text_renamed_png",
           "zip_of"]


def png(seed: int, size: int = 64) -> bytes:
    """A distinct random-noise PNG (different seeds are never near-duplicates of each other)."""
    return noise_png(seed, size)


def jpeg(seed: int, size: int = 64, quality: int = 92) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def zip_of(entries: dict[str, bytes | str]) -> bytes:
    """A .zip of ``{name: bytes or caption text}`` (kohya style: ``cat.png`` + ``cat.txt``)."""
    return make_zip([(n, d.encode() if isinstance(d, str) else d) for n, d in entries.items()])


def slip_only_zip(image: bytes) -> bytes:
    """Only path-traversal entries (zip slip): nothing in it may be added."""
    return make_zip([(n, image) for n in SLIP_NAMES])
