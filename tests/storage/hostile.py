"""Generators of real (and really hostile) test files. Importable by any test; everything is built in memory.

Each function returns bytes. Images are real encodings made with Pillow, or hand-built PNG/ZIP structures where
Pillow refuses to write the hostile thing (pixel bombs, 16-bit RGB, encrypted zip flags).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image, ImageDraw

# ---- ordinary images ---------------------------------------------------------------------------------------------


def photo_array(w: int = 640, h: int = 480, seed: int = 0) -> np.ndarray:
    """Photographic-ish RGB pixels: smooth gradients + soft blobs + sensor-like noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        img[..., c] = 128 + 90 * np.sin(x / w * fx * 3.14 + ph) * np.cos(y / h * fy * 3.14)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
        img += blob[..., None] * rng.uniform(-80, 80, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo_jpeg(w: int = 640, h: int = 480, seed: int = 0, quality: int = 90) -> bytes:
    return encode(Image.fromarray(photo_array(w, h, seed)), "JPEG", quality=quality)


def photo_png(w: int = 640, h: int = 480, seed: int = 0) -> bytes:
    return encode(Image.fromarray(photo_array(w, h, seed)), "PNG")


def photo_webp(w: int = 640, h: int = 480, seed: int = 0) -> bytes:
    return encode(Image.fromarray(photo_array(w, h, seed)), "WEBP", quality=85)


# ---- hand-built PNGs -------------------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def raw_png(width: int, height: int, color_type: int, bit_depth: int, raw_rows: bytes,
            extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A PNG from already-filtered scanlines (each row starts with a filter byte)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    for kind, body in extra:
        out += _chunk(kind, body)
    return out + _chunk(b"IDAT", zlib.compress(raw_rows, 9)) + _chunk(b"IEND", b"")


def pixel_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """Tiny file, 10-gigapixel canvas: a few rows of real data; decoding it would allocate ~30 GB."""
    row = b"\x00" + b"\x00" * width  # one greyscale 8-bit row
    return raw_png(width, height, 0, 8, row * 4)


def png16_rgb(w: int = 300, h: int = 300) -> bytes:
    """16-bit-per-channel RGB: a red→blue ramp in the high bytes (Pillow can read, not write, these)."""
    rows = bytearray()
    for _y in range(h):
        rows += b"\x00"
        for x in range(w):
            v = int(x / (w - 1) * 65535)
            rows += struct.pack(">HHH", v, 0, 65535 - v)
    return raw_png(w, h, 2, 16, bytes(rows))


def png16_gray(w: int = 300, h: int = 300) -> bytes:
    """16-bit greyscale (Pillow mode I;16) spanning the full range; a clip at 255 would turn it all white."""
    ramp = (np.linspace(0, 65535, w, dtype=np.float64).astype(np.uint16))
    arr = np.tile(ramp, (h, 1))
    return encode(Image.fromarray(arr), "PNG")


def png_with_text_and_exif(w: int = 300, h: int = 300) -> bytes:
    """A PNG carrying tEXt/iTXt/eXIf/iCCP-style metadata that must not survive ingest."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-comment")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>secret-xmp</x:xmpmeta>")
    exif = Image.Exif()
    exif[0x010E] = "secret-description"
    return encode(Image.fromarray(photo_array(w, h, 3)), "PNG", pnginfo=info, exif=exif)


def palette_png_transparent(w: int = 300, h: int = 300) -> bytes:
    """P mode, index 0 fully transparent (left half), index 1 red (right half)."""
    im = Image.new("P", (w, h), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    ImageDraw.Draw(im).rectangle([w // 2, 0, w, h], fill=1)
    return encode(im, "PNG", transparency=0)


def la_png(w: int = 300, h: int = 300) -> bytes:
    """Greyscale + alpha: black, left half fully transparent."""
    alpha = Image.new("L", (w, h), 255)
    ImageDraw.Draw(alpha).rectangle([0, 0, w // 2 - 1, h], fill=0)
    return encode(Image.merge("LA", (Image.new("L", (w, h), 0), alpha)), "PNG")


def rgba_png_half_transparent(w: int = 300, h: int = 300) -> bytes:
    """Pure blue at 50% alpha everywhere → flattened onto white it is (127/128, 127/128, 255)."""
    return encode(Image.new("RGBA", (w, h), (0, 0, 255, 128)), "PNG")


# ---- photos with metadata / odd colour ---------------------------------------------------------------------


def exif_rotated_jpeg_with_gps(w: int = 400, h: int = 300) -> bytes:
    """Stored landscape w×h with a red block top-left, EXIF orientation 6 (display rotated 90° clockwise),
    GPS position, camera/owner tags and XMP. Upright it is h×w with the red block top-right."""
    im = Image.new("RGB", (w, h), (255, 255, 255))
    ImageDraw.Draw(im).rectangle([0, 0, w // 4, h // 4], fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SecretCam"
    exif[0x013B] = "Jane Secret"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 22.0, 1.5), 3: "E", 4: (4.0, 53.0, 0.0)})
    return encode(im, "JPEG", quality=95, exif=exif, xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>")


def cmyk_jpeg(w: int = 300, h: int = 300) -> bytes:
    """CMYK JPEG: pure cyan left half, pure yellow right half."""
    im = Image.new("CMYK", (w, h), (255, 0, 0, 0))
    ImageDraw.Draw(im).rectangle([w // 2, 0, w, h], fill=(0, 0, 255, 0))
    return encode(im, "JPEG", quality=95)


def mpo_jpeg(w: int = 300, h: int = 300) -> bytes:
    """Multi-picture JPEG (what iPhones/stereo cameras write): primary green, second picture magenta."""
    return encode(Image.new("RGB", (w, h), (0, 200, 0)), "MPO", save_all=True,
                  append_images=[Image.new("RGB", (w, h), (255, 0, 255))])


# ---- refused files ---------------------------------------------------------------------------------------------


def text_renamed_png() -> bytes:
    """What a user gets when they rename notes.txt to notes.png."""
    return b"These are my notes, not a picture.\nTotally a PNG, trust me.\n"


def truncated_jpeg() -> bytes:
    data = photo_jpeg(400, 300, seed=7)
    return data[: len(data) // 2]


def animated_gif(frames: int = 40, w: int = 300, h: int = 300) -> bytes:
    imgs = [Image.new("RGB", (w, h), (i * 6 % 256, 0, 0)) for i in range(frames)]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:], duration=40, loop=0)


def animated_webp(frames: int = 6, w: int = 300, h: int = 300) -> bytes:
    imgs = [Image.new("RGB", (w, h), (0, i * 40 % 256, 0)) for i in range(frames)]
    return encode(imgs[0], "WEBP", save_all=True, append_images=imgs[1:], duration=80)


def apng(frames: int = 5, w: int = 300, h: int = 300) -> bytes:
    imgs = [Image.new("RGB", (w, h), (0, 0, i * 50 % 256)) for i in range(frames)]
    return encode(imgs[0], "PNG", save_all=True, append_images=imgs[1:], duration=80)


def bmp_image() -> bytes:
    return encode(Image.fromarray(photo_array(300, 300, 1)), "BMP")


def tiff_image() -> bytes:
    return encode(Image.fromarray(photo_array(300, 300, 2)), "TIFF")


def small_png(side: int = 100) -> bytes:
    return encode(Image.fromarray(photo_array(side, side, 4)), "PNG")


# ---- hostile archives ------------------------------------------------------------------------------------------


def make_zip(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buf.getvalue()


SLIP_NAMES = ["../evil.png", "/etc/cron.d/evil.png", "C:/Windows/evil.png", "a\\..\\..\\evil.png",
              "ok/../../evil.png"]


def zip_slip(image: bytes) -> bytes:
    """One good entry plus the same image under every traversal trick."""
    return make_zip([("good.png", image)] + [(n, image) for n in SLIP_NAMES])


def zip_bomb(uncompressed_mb: int = 64, image: bytes | None = None) -> bytes:
    """One highly compressible entry (zeros) of ``uncompressed_mb`` MiB, ~1000:1, plus an optional real image."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        if image is not None:
            zf.writestr("real.png", image)
        info = zipfile.ZipInfo("bomb.png", date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            zero = bytes(1024 * 1024)
            for _ in range(uncompressed_mb):
                f.write(zero)
    return buf.getvalue()


def zip_with_encrypted_entry(image: bytes) -> bytes:
    """A zip whose second entry claims to be encrypted (flag bit 0 set in local and central headers)."""
    data = bytearray(make_zip([("plain.png", image), ("locked.png", image)], zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("locked.png")
        local_off = info.header_offset
    data[local_off + 6] |= 0x01  # local header general-purpose flags
    cd = data.rfind(b"PK\x01\x02")  # last central directory record = locked.png
    data[cd + 8] |= 0x01
    return bytes(data)


def zip_lying_sizes(image: bytes) -> bytes:
    """Central directory claims the entry is 100 bytes; the real (deflated) data is far larger."""
    data = bytearray(make_zip([("liar.png", image)]))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 100)  # uncompressed size in central directory
    struct.pack_into("<I", data, 22, 100)  # uncompressed size in the first local header
    return bytes(data)


def jpeg_pixel_bomb(side: int = 65000) -> bytes:
    """A real 16×16 JPEG whose frame header is patched to claim side×side pixels (4 gigapixels)."""
    data = bytearray(encode(Image.new("RGB", (16, 16), "gray"), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


def webp_pixel_bomb() -> bytes:
    """An extended (VP8X) WEBP whose canvas is patched to 16384×16384 (268 megapixels)."""
    data = bytearray(encode(Image.new("RGBA", (16, 16), (1, 2, 3, 128)), "WEBP", quality=80))
    assert data[12:16] == b"VP8X", "Pillow wrote a simple WEBP; expected the extended format for alpha"
    data[24:27] = (16383).to_bytes(3, "little")
    data[27:30] = (16383).to_bytes(3, "little")
    return bytes(data)


def png_corrupt_idat() -> bytes:
    """A PNG with garbage in the middle of its compressed pixel data."""
    data = bytearray(photo_png(200, 200, seed=9))
    mid = data.find(b"IDAT") + 200
    data[mid : mid + 64] = bytes(range(64))
    return bytes(data)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def swapped_primaries_icc() -> bytes:
    """A hand-built ICC v2 RGB display profile whose red and green primaries are swapped: a pixel stored as
    pure red *means* pure green. Ingest must convert through it (then drop it), so the stored pixel is green."""
    d50_primaries = {  # sRGB primaries adapted to D50, as in every sRGB ICC profile
        "r": (0.4361, 0.2225, 0.0139), "g": (0.3851, 0.7169, 0.0971), "b": (0.1431, 0.0606, 0.7141),
    }
    xyz = lambda v: b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)  # noqa: E731
    curve = b"curv\0\0\0\0" + struct.pack(">I", 1) + struct.pack(">H", 0x0233) + b"\0\0"  # gamma 2.2, padded
    text = b"Swapped primaries test"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0"
            + b"\0" * 8 + b"\0" * 3 + b"\0" * 67)  # empty Unicode and ScriptCode parts
    desc += b"\0" * (-len(desc) % 4)
    tags = [
        (b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(d50_primaries["g"])), (b"gXYZ", xyz(d50_primaries["r"])), (b"bXYZ", xyz(d50_primaries["b"])),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8
              + b"\0" * 8 + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"lcms")
    header += b"\0" * (128 - len(header))
    return header + table + body


def red_png_with_swapped_icc(w: int = 64, h: int = 64) -> bytes:
    return encode(Image.new("RGB", (w, h), (255, 0, 0)), "PNG", icc_profile=swapped_primaries_icc())


# ---- files that are cheap to send and slow to parse (Pillow walks headers in Python) ---------------------------


def jpeg_segment_flood(n: int = 2_000_000) -> bytes:
    """SOI followed by millions of empty comment segments: no frame header for a long, long time."""
    return b"\xff\xd8" + b"\xff\xfe\x00\x02" * n + photo_jpeg(64, 64)[2:]


def jpeg_fill_flood(n: int = 8_000_000) -> bytes:
    """SOI followed by megabytes of 0xFF fill bytes."""
    return b"\xff\xd8" + b"\xff" * n + photo_jpeg(64, 64)[2:]


def png_chunk_flood(n: int = 1_000_000) -> bytes:
    """A valid PNG with a million tiny text chunks between IHDR and the pixels."""
    png = photo_png(64, 64)
    return png[:33] + _chunk(b"tEXt", b"k\x00v") * n + png[33:]


def jpeg_with_padding(pad: int = 100) -> bytes:
    """A real JPEG with stray zero bytes after its first segment (some encoders do this; it must still load)."""
    data = photo_jpeg(320, 320, seed=12)
    app_len = struct.unpack(">H", data[4:6])[0]
    cut = 4 + app_len
    return data[:cut] + b"\x00" * pad + data[cut:]
