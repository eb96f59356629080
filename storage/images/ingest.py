"""Image ingest: validate an upload, normalise it to a plain RGB PNG, fingerprint it.

Policy (the same for every way of adding images):

* Accepted: PNG, JPEG and WEBP, recognised by content (never by file name or declared type). JPEGs carrying
  extra pictures (MPO: iPhone depth maps, stereo cameras) are accepted as their primary picture.
* Refused, with a reason and a hint: empty or oversized files, other formats, decompression bombs (the pixel
  count is read from the header by :mod:`storage.images.sniff` before Pillow opens the file, so Pillow neither decodes
  nor warns about them; its own DecompressionBombWarning can only fire if ``max_pixels`` is set above Pillow's
  ~89 MP threshold), headers that are malformed or abusive (floods of segments/chunks that would keep Pillow's
  Python header parser busy for seconds), **animated** PNG/WEBP (which frame to train on
  is ambiguous and a silent first-frame pick surprises people: they export the frame they want), truncated or
  damaged files, and images smaller than ``min_side`` when ``small_policy == "refuse"`` (else a warning).
* Normalised: EXIF orientation applied, colour converted to sRGB when an ICC profile says otherwise, converted to
  RGB (transparency flattened onto white; palette, LA, RGBA, CMYK, 16-bit handled), every bit of metadata dropped
  (EXIF, GPS, XMP, ICC, text chunks), scaled down to at most ``max_side`` px on the long side (training never
  uses more; JPEGs are decoded at a reduced scale to begin with, so a 40 MP photo never sits in memory whole),
  then re-encoded with fixed settings, so the same pixels give the same bytes and the same sha256 (with the same
  Pillow build): lossy uploads (JPEG, lossy WEBP) as JPEG no larger than twice the upload, lossless ones as PNG.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import imagehash
import numpy as np
from PIL import Image, ImageCms, ImageOps

from storage.errors import InvalidInput
from storage.images.sniff import ALLOWED, accepted_formats, header_size, sniff_format

if TYPE_CHECKING:
    from storage.settings import Settings

log = logging.getLogger(__name__)

# zlib level 1: ~3x faster than Pillow's default 6 for ~10% larger files; blobs are written once, read rarely.
PNG_COMPRESS_LEVEL = 1
# JPEG qualities tried in order until the stored file is at most MAX_GROWTH × the upload (a re-encode of a
# heavily compressed photo at 92 can be larger than the original; quality 75 is smaller than nearly any upload).
JPEG_QUALITIES = (92, 85, 75, 60)
MAX_GROWTH = 2.0
_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_RESAMPLE_MODES = {"RGB", "RGBA", "L", "LA", "CMYK"}  # modes LANCZOS works on directly (metadata kept)


class ImageRejected(InvalidInput):
    """An upload that cannot be used; ``reason`` is a short machine code (``format``, ``bomb``, ``animated``…)."""

    code = "image_rejected"

    def __init__(self, message: str, hint: str = "", *, reason: str = "invalid") -> None:
        super().__init__(message, hint)
        self.reason = reason


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 256
    small_policy: Literal["warn", "refuse"] = "warn"
    near_duplicate_distance: int = 4
    max_side: int = 2048

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            min_side=settings.min_image_side,
            small_policy=settings.small_image_policy,
            near_duplicate_distance=settings.near_duplicate_distance,
            max_side=settings.max_stored_image_side,
        )


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes  # RGB JPEG or PNG (see ``stored_format``), no metadata
    sha256: str
    width: int
    height: int
    phash: str  # imagehash.phash hex (16 hex chars)
    warnings: list[str] = field(default_factory=list)
    source_format: str = ""  # "PNG" | "JPEG" | "WEBP" (what the upload was)
    upload_bytes: int = 0  # size of the upload this was made from

    @property
    def byte_size(self) -> int:
        return len(self.data)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def normalize_image(data: bytes, limits: IngestLimits) -> NormalizedImage:
    """Validate and normalise one upload (sync, CPU-bound; call it in a thread). Raises :class:`ImageRejected`."""
    if not data:
        raise ImageRejected("The file is empty (0 bytes).", "Upload the image again.", reason="empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            f"The file is too large ({_mb(len(data))}; the limit is {_mb(limits.max_bytes)}).",
            "Resize it or save it as JPEG, then upload it again.", reason="too_large",
        )
    fmt, what = sniff_format(data)
    if fmt is None:
        raise ImageRejected(
            f"This is {what}; only {accepted_formats('and')} images are accepted.",
            "Convert it to PNG or JPEG and upload it again.", reason="format",
        )
    declared = header_size(fmt, data)
    if declared is None:
        raise _damaged(fmt, ValueError("header not found or malformed"))
    _check_pixels(*declared, limits)  # before any decoder runs: bombs never reach Pillow
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        raise _bomb(None, limits) from None
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise _damaged(fmt, exc) from None
    with im:
        _check_pixels(*im.size, limits)  # the decoder's own view of the header, still before decoding
        if im.format in ("PNG", "WEBP") and getattr(im, "n_frames", 1) > 1:
            raise ImageRejected(
                f"This is an animated {ALLOWED[fmt]} ({im.n_frames} frames); training needs still images.",
                "Export the frame you want as a PNG or JPEG and upload that.", reason="animated",
            )
        try:
            lossy = fmt == "JPEG" or (fmt == "WEBP" and not _webp_lossless(data))
            if fmt == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still leaves max_side
                scale = limits.max_side / max(im.size)
                if scale < 1:
                    im.draft(im.mode, (max(1, int(im.width * scale)), max(1, int(im.height * scale))))
            im.load()  # MPO (multi-picture JPEG) loads its primary picture
            src = im
            if max(src.size) > limits.max_side and src.mode in _RESAMPLE_MODES:
                src = _shrink(src, limits.max_side)  # before the colour work: only one full-size copy at a time
                im.close()  # frees the full-size pixels now, not when the ``with`` ends
            rgb, warnings = _to_rgb(src)
        except Image.DecompressionBombError:
            raise _bomb(None, limits) from None
        except ImageRejected:
            raise
        except Exception as exc:
            raise _damaged(fmt, exc) from None
    if max(rgb.size) > limits.max_side:
        rgb = _shrink(rgb, limits.max_side)
    w, h = rgb.size
    if min(w, h) < limits.min_side:
        msg = f"The image is small ({w}×{h}); images under {limits.min_side} px on the short side train poorly."
        if limits.small_policy == "refuse":
            raise ImageRejected(msg, "Upload a larger version of this image.", reason="too_small")
        warnings.append(msg)
    stored = encode_jpeg(rgb, max_bytes=int(len(data) * MAX_GROWTH)) if lossy else encode_png(rgb)
    return NormalizedImage(
        data=stored, sha256=hashlib.sha256(stored).hexdigest(), width=w, height=h,
        phash=phash_of(rgb), warnings=warnings, source_format=fmt, upload_bytes=len(data),
    )


def _shrink(rgb: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _webp_lossless(data: bytes) -> bool:
    """A WEBP whose first image chunk is VP8L (lossless); VP8 (and VP8X with VP8 inside) is lossy."""
    return b"VP8L" in data[12:4096] and b"VP8 " not in data[12:4096]


def _check_pixels(w: int, h: int, limits: IngestLimits) -> None:
    if w <= 0 or h <= 0:
        raise ImageRejected(
            f"The image header declares an impossible size ({w}×{h}).",
            "The file is damaged; export it again from your editor.", reason="damaged",
        )
    if w * h > limits.max_pixels:
        raise _bomb((w, h), limits)


def _bomb(size: tuple[int, int] | None, limits: IngestLimits) -> ImageRejected:
    dims = f" ({size[0]}×{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels)" if size else ""
    return ImageRejected(
        f"The image is too large in pixels{dims}; the limit is {limits.max_pixels / 1e6:.0f} megapixels.",
        "Resize it (2048 px on the long side is plenty for training) and upload it again.", reason="bomb",
    )


def _damaged(fmt: str, exc: Exception) -> ImageRejected:
    log.debug("undecodable %s upload: %r", fmt, exc)
    return ImageRejected(
        f"The {ALLOWED[fmt]} file is damaged or incomplete and can't be read.",
        "Open it in an image editor, save it again, and upload the new file.", reason="damaged",
    )


def _to_rgb(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """Orientation, colour space and mode → plain RGB with no metadata; returns warnings for the user."""
    warnings: list[str] = []
    icc = im.info.get("icc_profile")
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF: keep the pixels as stored
        out = im.copy()
        warnings.append("The photo's orientation tag couldn't be read; check that it is the right way up.")
    if out.mode.startswith("I"):  # 16/32-bit greyscale: keep the high byte, not a clip at 255
        arr = np.asarray(out).astype(np.uint32)
        out = Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    elif out.mode == "F":
        arr = np.nan_to_num(np.asarray(out), nan=0.0)
        out = Image.fromarray((np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8), "L")
    has_alpha = out.mode in _ALPHA_MODES or "transparency" in out.info
    if has_alpha:
        out = out.convert("RGBA")
    elif out.mode not in ("RGB", "CMYK"):
        out = out.convert("RGB")
    if icc and out.mode in ("RGB", "RGBA", "CMYK"):
        out = _to_srgb(out, icc)
    if out.mode == "RGBA":
        alpha = out.getchannel("A")
        if alpha.getextrema()[0] < 255:
            warnings.append("Transparent areas were filled with white.")
        flat = Image.new("RGB", out.size, _WHITE)
        flat.paste(out, mask=alpha)
        out = flat
    elif out.mode != "RGB":
        out = out.convert("RGB")
    out.info.clear()
    return out, warnings


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    """Convert to sRGB through the embedded profile (phones shoot Display P3); keep pixels if it is unusable."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(src).lower():
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
        return converted if converted is not None else im
    except Exception:
        log.debug("ignoring unusable ICC profile", exc_info=True)
        return im


def encode_png(rgb: Image.Image) -> bytes:
    """Deterministic PNG: only IHDR/IDAT/IEND, fixed compression settings."""
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def encode_jpeg(rgb: Image.Image, *, max_bytes: int) -> bytes:
    """Deterministic baseline JPEG (4:2:0, no metadata) at the best of :data:`JPEG_QUALITIES` that fits
    ``max_bytes``; the lowest quality when none does."""
    out = b""
    for quality in JPEG_QUALITIES:
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=True)
        out = buf.getvalue()
        if len(out) <= max_bytes:
            break
    return out


def stored_extension(data: bytes) -> str:
    """File extension of a stored image blob (``jpg`` or ``png``), from its first bytes."""
    return "jpg" if data[:3] == b"\xff\xd8\xff" else "png"


def phash_of(im: Image.Image) -> str:
    """Perceptual hash (imagehash.phash) as hex; the one definition everything compares against."""
    return str(imagehash.phash(im))


Source = bytes | Callable[[], bytes]  # the bytes, or a reader called in the worker thread (zip entries)

# Every decode of the process runs on these threads, whatever the number of adds and imports at once: a decode
# holds a few full-size copies of one image, and glibc keeps each thread's arena at its peak, so a fixed pair of
# threads bounds the process's memory where asyncio's default pool (up to cores + 4 threads) would multiply it.
DECODE_THREADS = 2
_decode_pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="atelier-decode")


async def normalize_many(
    items: Sequence[Source], limits: IngestLimits, *, concurrency: int = 2
) -> list[NormalizedImage | ImageRejected]:
    """Normalise uploads in worker threads (at most ``concurrency`` at once); results in input order.

    Rejections are returned, not raised, so one bad file never sinks the batch.
    """
    sem = asyncio.Semaphore(max(1, concurrency))

    def work(source: Source) -> NormalizedImage | ImageRejected:
        try:
            # Read inside the thread and drop the upload right after decoding: one raw file per slot in memory.
            img = normalize_image(source() if callable(source) else source, limits)
        except ImageRejected as exc:
            # Its traceback holds the decoder's frames, the whole upload among their locals: a batch of
            # refusals would keep every refused file in memory until the report is built.
            return exc.with_traceback(None)
        except InvalidInput as exc:  # an unreadable zip entry: a refusal like any other
            return ImageRejected(exc.message, exc.hint or "Zip the file again and add it.", reason="archive")
        return img

    async def one(source: Source) -> NormalizedImage | ImageRejected:
        async with sem:
            return await asyncio.get_running_loop().run_in_executor(_decode_pool, work, source)

    return list(await asyncio.gather(*(one(d) for d in items)))


def phash_distance(a: str, b: str) -> int | None:
    """Hamming distance between two hex phashes; ``None`` if they are not comparable."""
    if len(a) != len(b):
        return None
    try:
        return (int(a, 16) ^ int(b, 16)).bit_count()
    except ValueError:
        return None


def find_near_duplicate(phash: str, existing: Iterable[tuple[str, str]], max_distance: int) -> str | None:
    """Label (e.g. ``"#3"``) of the closest image in ``existing`` — ``(label, phash)`` pairs — within
    ``max_distance`` bits of ``phash``; ``None`` if there is none. Ties go to the first one listed."""
    best: tuple[int, str] | None = None
    for label, other in existing:
        d = phash_distance(phash, other)
        if d is not None and d <= max_distance and (best is None or d < best[0]):
            best = (d, label)
            if d == 0:
                break
    return best[1] if best else None
