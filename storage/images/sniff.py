"""Identify an upload by its first bytes and read its pixel size from the header, before any decoder runs.

Nothing here trusts a file name or a declared content type. Reading the dimensions ourselves means a
decompression bomb (tiny file, huge canvas) is refused before Pillow parses, allocates or warns about anything.
"""

from __future__ import annotations

import re
import struct

# Formats we ingest, keyed by the Pillow format name used to open them.
ALLOWED = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}


def accepted_formats(last: str = "or") -> str:
    """The accepted formats as people read them in messages and help texts: ``PNG, JPEG or WEBP``."""
    names = list(ALLOWED)
    return f"{', '.join(names[:-1])} {last} {names[-1]}"


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the frame size (C4 = DHT, C8 = JPG, CC = DAC are not frames).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}
_MAX_JPEG_SEGMENTS = 4096  # real files have ~10 (APPn, DQT, DHT, SOF); EXIF/ICC add a few dozen at most
_MAX_JPEG_JUNK = 64 * 1024
_MAX_PNG_CHUNKS = 100_000  # a 25 MB PNG written with 8 KB IDAT chunks has ~3,000
_FILL_RE = re.compile(rb"\xff+")


def sniff_format(data: bytes) -> tuple[str | None, str]:
    """Return ``(pillow_format, description)``: the format is ``None`` when the file is not one we accept,
    and ``description`` says in plain words what the file is (e.g. ``"a GIF image"``)."""
    head = data[:64]
    if head.startswith(_PNG_SIG):
        return "PNG", "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG", "a JPEG image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", "a WEBP image"
    return None, _describe_other(head, data)


def _describe_other(head: bytes, data: bytes) -> str:
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF image"
    if head[:2] == b"BM":
        return "a BMP image"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "a TIFF image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "a HEIC/HEIF photo"
        return "a video or MP4-style file"
    if head[:4] == b"8BPS":
        return "a Photoshop (PSD) file"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return "an icon (ICO/CUR) file"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "a JPEG XL image"
    if head[:4] == b"qoif":
        return "a QOI image"
    if head[:4] == b"%PDF":
        return "a PDF document"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "a ZIP archive"
    if head[:4] == b"RIFF":
        return "a RIFF media file (audio/video)"
    sample = data[:2048]
    if b"<svg" in sample.lower():
        return "an SVG drawing"
    if _looks_like_text(sample):
        return "a text file"
    return "not an image we recognise"


def _looks_like_text(sample: bytes) -> bool:
    if not sample:
        return False
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)


def header_size(fmt: str, data: bytes) -> tuple[int, int] | None:
    """Pixel size declared in the header; ``None`` when the structure is broken or abusive (the caller
    refuses the file then, rather than let a slow pure-Python header parser chew on it)."""
    try:
        if fmt == "PNG":
            return _png_size(data)
        if fmt == "JPEG":
            return _jpeg_size(data)
        if fmt == "WEBP":
            return _webp_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    """IHDR size, after checking the chunk structure: millions of tiny chunks would keep Pillow's per-chunk
    Python loop busy for seconds (with the GIL held), so more than ``_MAX_PNG_CHUNKS`` is refused."""
    if data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    i, n = 8, len(data)
    for _ in range(_MAX_PNG_CHUNKS):
        if i + 8 > n:
            return (w, h)  # truncated: the decoder will report it as damaged
        (length,) = struct.unpack(">I", data[i : i + 4])
        if data[i + 4 : i + 8] == b"IEND":
            return (w, h)
        i += 12 + length
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Largest frame size among SOF markers before the first scan (Pillow keeps the last; we keep the max).

    Pillow walks these segments in Python, byte by byte through junk, so the walk is bounded here first:
    at most ``_MAX_JPEG_SEGMENTS`` segments and ``_MAX_JPEG_JUNK`` stray bytes before the scan starts.
    """
    i, n, best, junk = 2, len(data), None, 0
    for _ in range(_MAX_JPEG_SEGMENTS):
        if i >= n:
            return None
        if data[i] != 0xFF:  # stray bytes between segments (some encoders pad): tolerated, bounded
            nxt = data.find(b"\xff", i, i + _MAX_JPEG_JUNK - junk + 1)
            if nxt < 0:
                return None
            junk += nxt - i
            i = nxt
        end = _FILL_RE.match(data, i).end()  # marker prefix plus any fill bytes
        junk += end - i - 1
        if junk > _MAX_JPEG_JUNK or end >= n:
            return None
        marker, i = data[end], end + 1
        if marker in _STANDALONE:
            continue
        if marker == 0xDA:  # start of scan: the header is complete
            return best
        if marker == 0xD9:
            return None
        (seg_len,) = struct.unpack(">H", data[i : i + 2])
        if seg_len < 2:
            return None
        if marker in _SOF_MARKERS:
            h, w = struct.unpack(">HH", data[i + 3 : i + 7])
            if best is None or w * h > best[0] * best[1]:
                best = (w, h)
        i += seg_len
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
