"""Ingest: every hostile or odd file gives its clear result; accepted images come out as clean RGB PNGs (lossless
uploads) or JPEGs (lossy uploads), at most ``max_side`` px on the long side."""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import warnings

import pytest
from PIL import Image

from storage.errors import InvalidInput
from storage.images.ingest import (
    ImageRejected,
    IngestLimits,
    NormalizedImage,
    find_near_duplicate,
    normalize_image,
    normalize_many,
    phash_distance,
)
from storage.settings import load_settings
from tests.storage import hostile as H

LIMITS = IngestLimits()


def rejected(data: bytes, limits: IngestLimits = LIMITS) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        normalize_image(data, limits)
    exc = info.value
    assert isinstance(exc, InvalidInput)
    assert exc.message and exc.hint, "every refusal says what was wrong and what to do"
    return exc


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, kinds = 8, []
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        if not kinds or kinds[-1] != kind:  # many IDAT chunks in a row count once
            kinds.append(kind)
        i += 12 + n
    return kinds


def jpeg_markers(data: bytes) -> list[int]:
    """Marker bytes of a JPEG's header segments up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    i, markers = 2, []
    while i < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        (n,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + n
    return markers


def decoded(img: NormalizedImage) -> Image.Image:
    im = Image.open(io.BytesIO(img.data))
    assert im.format in ("PNG", "JPEG") and im.mode == "RGB"
    assert im.size == (img.width, img.height)
    return im


def test_accepts_each_allowed_format_and_output_is_clean():
    for data, fmt in ((H.photo_jpeg(), "JPEG"), (H.photo_png(), "PNG"), (H.photo_webp(), "WEBP")):
        img = normalize_image(data, LIMITS)
        assert img.source_format == fmt
        assert (img.width, img.height) == (640, 480)
        assert img.sha256 == hashlib.sha256(img.data).hexdigest()
        if fmt == "PNG":
            assert png_chunks(img.data) == [b"IHDR", b"IDAT", b"IEND"]
        else:  # lossy stays lossy: JFIF header, tables, frame, scan — no EXIF (APP1) or ICC (APP2)
            assert set(jpeg_markers(img.data)) <= {0xE0, 0xDB, 0xC0, 0xC4, 0xDA}
            assert len(img.data) <= 2 * len(data)
        assert len(img.phash) == 16 and int(img.phash, 16) >= 0
        assert img.warnings == []
        decoded(img)


@pytest.mark.slow
def test_large_photos_are_stored_at_most_max_side_and_at_most_twice_their_upload():
    big = H.encode(Image.fromarray(H.photo_array(3872, 2592, seed=3)), "JPEG", quality=90)  # a 10 MP photo
    img = normalize_image(big, LIMITS)
    assert (img.width, img.height) == (2048, 1371)
    assert Image.open(io.BytesIO(img.data)).format == "JPEG"
    assert len(img.data) <= 2 * len(big)
    # A heavily compressed JPEG: re-encoding at a high quality would grow it; the stored file still fits 2x.
    small = H.encode(Image.fromarray(H.photo_array(1200, 900, seed=4)), "JPEG", quality=20)
    assert len(normalize_image(small, LIMITS).data) <= 2 * len(small)
    # Lossless input stays lossless, shrunk to the configured side.
    png = normalize_image(H.encode(Image.fromarray(H.photo_array(1200, 600, seed=6)), "PNG"),
                          IngestLimits(max_side=600))
    assert (png.width, png.height) == (600, 300) and png_chunks(png.data)[0] == b"IHDR"


def test_same_pixels_give_same_bytes_and_hash():
    pixels = Image.fromarray(H.photo_array(320, 320, seed=5))
    png = normalize_image(H.encode(pixels, "PNG"), LIMITS)
    webp_lossless = normalize_image(H.encode(pixels, "WEBP", lossless=True), LIMITS)
    assert png.sha256 == webp_lossless.sha256
    assert normalize_image(png.data, LIMITS).sha256 == png.sha256  # re-ingesting is a fixed point


def test_pixel_bombs_refused_from_the_header_without_pillow_warning():
    for bomb in (H.pixel_bomb_png(), H.jpeg_pixel_bomb(), H.webp_pixel_bomb()):
        assert len(bomb) < 20_000
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exc = rejected(bomb)
        assert exc.reason == "bomb"
        assert "megapixels" in exc.message
        assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pixel_cap_is_configurable():
    exc = rejected(H.photo_png(640, 480), IngestLimits(max_pixels=640 * 480 - 1))
    assert exc.reason == "bomb"
    assert normalize_image(H.photo_png(640, 480), IngestLimits(max_pixels=640 * 480)).width == 640


def test_text_renamed_png_refused_by_content():
    exc = rejected(H.text_renamed_png())
    assert exc.reason == "format" and "text file" in exc.message


@pytest.mark.parametrize(
    ("make", "word"),
    [(H.bmp_image, "BMP"), (H.tiff_image, "TIFF"), (H.animated_gif, "GIF")],
)
def test_other_formats_refused_and_named(make, word):
    exc = rejected(make())
    assert exc.reason == "format"
    assert word in exc.message and "PNG" in exc.hint


def test_zero_byte_file():
    assert rejected(b"").reason == "empty"


def test_byte_cap():
    data = H.photo_jpeg()
    exc = rejected(data, IngestLimits(max_bytes=len(data) - 1))
    assert exc.reason == "too_large" and "MB" in exc.message


@pytest.mark.parametrize("make", [H.truncated_jpeg, H.png_corrupt_idat, lambda: H.photo_png()[:40]])
def test_damaged_files_refused(make):
    assert rejected(make()).reason == "damaged"


@pytest.mark.parametrize("make", [H.jpeg_segment_flood, H.jpeg_fill_flood, H.png_chunk_flood])
def test_header_floods_refused_before_pillow_parses_them(make):
    """Pillow parses JPEG/PNG headers in Python: these would hold the GIL for many seconds."""
    data = make()
    assert len(data) > 7_000_000
    exc = rejected(data, IngestLimits(max_bytes=30 * 2**20))
    assert exc.reason == "damaged"


def test_jpeg_with_stray_padding_still_accepted():
    assert normalize_image(H.jpeg_with_padding(100), LIMITS).width == 320


@pytest.mark.parametrize(("make", "frames"), [(H.animated_webp, 6), (H.apng, 5)])
def test_animated_images_refused(make, frames):
    exc = rejected(make())
    assert exc.reason == "animated"
    assert f"{frames} frames" in exc.message


def test_exif_rotation_applied_and_all_metadata_dropped():
    src = H.exif_rotated_jpeg_with_gps(400, 300)
    assert b"SecretCam" in src and b"secret-xmp" in src
    img = normalize_image(src, LIMITS)
    assert (img.width, img.height) == (300, 400)  # stored landscape, displayed portrait
    im = decoded(img)
    r, g, b = im.getpixel((img.width - 10, 10))  # the red block moved to the top right
    assert r > 200 and g < 60 and b < 60
    assert im.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=8)
    assert set(jpeg_markers(img.data)) <= {0xE0, 0xDB, 0xC0, 0xC4, 0xDA}
    assert not im.getexif() and "exif" not in im.info and "xmp" not in im.info
    for secret in (b"SecretCam", b"Jane Secret", b"secret-xmp", b"GPS"):
        assert secret not in img.data


def test_png_text_xmp_exif_chunks_dropped():
    src = H.png_with_text_and_exif()
    assert b"secret-comment" in src and b"secret-xmp" in src and b"secret-description" in src
    img = normalize_image(src, LIMITS)
    assert png_chunks(img.data) == [b"IHDR", b"IDAT", b"IEND"]


def test_icc_profile_converted_to_srgb_and_dropped():
    src = H.red_png_with_swapped_icc()
    assert b"iCCP" in src
    img = normalize_image(src, LIMITS)
    assert png_chunks(img.data) == [b"IHDR", b"IDAT", b"IEND"]
    r, g, b = decoded(img).getpixel((5, 5))  # stored red, but the profile says it means green
    assert g > 200 and r < 40 and b < 40


def test_unusable_icc_profile_ignored_and_dropped():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not an RGB profile
    img = normalize_image(H.encode(Image.new("RGB", (300, 300), (255, 0, 0)), "PNG", icc_profile=icc), LIMITS)
    assert png_chunks(img.data) == [b"IHDR", b"IDAT", b"IEND"]
    assert decoded(img).getpixel((5, 5)) == (255, 0, 0)
    assert normalize_image(H.encode(Image.new("RGB", (300, 300)), "PNG", icc_profile=b"garbage"), LIMITS)


def test_cmyk_jpeg_converted_to_rgb():
    im = decoded(normalize_image(H.cmyk_jpeg(300, 300), LIMITS))
    r, g, b = im.getpixel((50, 150))  # cyan
    assert r < 60 and g > 200 and b > 200
    r, g, b = im.getpixel((250, 150))  # yellow
    assert r > 200 and g > 200 and b < 60


def test_16_bit_images_scaled_not_clipped():
    gray = decoded(normalize_image(H.png16_gray(300, 300), LIMITS))
    assert gray.getpixel((0, 5))[0] < 3
    assert 120 < gray.getpixel((150, 5))[0] < 135
    assert gray.getpixel((299, 5))[0] > 252
    rgb = decoded(normalize_image(H.png16_rgb(300, 300), LIMITS))
    assert rgb.getpixel((0, 0)) == (0, 0, 255)
    assert rgb.getpixel((299, 0)) == (255, 0, 0)


def test_transparency_flattened_onto_white():
    pal = normalize_image(H.palette_png_transparent(300, 300), LIMITS)
    assert any("white" in w for w in pal.warnings)
    im = decoded(pal)
    assert im.getpixel((10, 10)) == (255, 255, 255) and im.getpixel((290, 10)) == (255, 0, 0)
    la = decoded(normalize_image(H.la_png(300, 300), LIMITS))
    assert la.getpixel((10, 10)) == (255, 255, 255) and la.getpixel((290, 10)) == (0, 0, 0)
    half = decoded(normalize_image(H.rgba_png_half_transparent(), LIMITS))
    assert half.getpixel((5, 5)) == pytest.approx((127, 127, 255), abs=1)


def test_opaque_alpha_gives_no_warning():
    img = normalize_image(H.encode(Image.new("RGBA", (300, 300), (9, 9, 9, 255)), "PNG"), LIMITS)
    assert img.warnings == []


def test_mpo_jpeg_uses_primary_picture():
    im = decoded(normalize_image(H.mpo_jpeg(), LIMITS))
    r, g, b = im.getpixel((150, 150))
    assert g > 150 and r < 50 and b < 50


def test_small_images_warned_or_refused_by_policy():
    img = normalize_image(H.small_png(100), LIMITS)
    assert img.width == 100 and any("small" in w for w in img.warnings)
    exc = rejected(H.small_png(100), IngestLimits(small_policy="refuse"))
    assert exc.reason == "too_small" and "100×100" in exc.message


def test_limits_from_settings():
    s = load_settings(max_upload_bytes=1000, max_image_pixels=5000, min_image_side=64,
                      small_image_policy="refuse", near_duplicate_distance=7)
    assert IngestLimits.from_settings(s) == IngestLimits(1000, 5000, 64, "refuse", 7)


def test_phash_near_duplicates():
    a = normalize_image(H.photo_jpeg(seed=1, quality=95), LIMITS)
    a_recompressed = normalize_image(H.photo_jpeg(seed=1, quality=60), LIMITS)
    other = normalize_image(H.photo_jpeg(seed=2), LIMITS)
    assert a.sha256 != a_recompressed.sha256
    assert phash_distance(a.phash, a_recompressed.phash) <= 4
    assert phash_distance(a.phash, other.phash) > 10
    existing = [("#1", other.phash), ("#2", "zz"), ("#3", a.phash[:-1]), ("#4", a_recompressed.phash)]
    assert find_near_duplicate(a.phash, existing, 4) == "#4"
    assert find_near_duplicate(a.phash, [("#1", other.phash)], 4) is None
    one_bit_off = f"{int(a.phash, 16) ^ 1:016x}"
    assert find_near_duplicate(a.phash, [("#7", one_bit_off), ("#8", a.phash)], 4) == "#8"  # closest wins
    assert find_near_duplicate(a.phash, [("#7", one_bit_off), ("#8", one_bit_off)], 4) == "#7"  # then first


async def test_normalize_many_keeps_order_and_returns_rejections():
    items = [H.photo_jpeg(seed=3), b"", H.apng(), H.photo_png(seed=4), H.pixel_bomb_png()]
    results = await normalize_many(items, LIMITS, concurrency=2)
    kinds = [r.reason if isinstance(r, ImageRejected) else "ok" for r in results]
    assert kinds == ["ok", "empty", "animated", "ok", "bomb"]
    assert results[0].sha256 != results[3].sha256


async def test_normalize_many_does_not_block_the_event_loop():
    """A coroutine keeps getting scheduled while images decode in threads (no timing asserted)."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await normalize_many([H.photo_jpeg(512, 512, seed=s) for s in range(3)], LIMITS)
    done.set()
    await task
    assert ticks > 3
