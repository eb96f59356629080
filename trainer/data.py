"""Training data: aspect-ratio buckets, resize/crop to a bucket, caption assembly, deterministic epoch batches.

Randomness here never uses global state: every choice is drawn from a ``random.Random`` seeded by
(seed, epoch, position), so a resumed run sees exactly the batches and captions an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from trainer.api import TrainItem
from trainer.config import TrainingConfig


@dataclass(frozen=True)
class Sample:
    """One training image placed in a bucket at one training resolution. Sizes are (width, height); ``crop`` is
    (top, left). With several resolutions an image has one Sample per resolution it may train at (``item`` is
    the image's position in the dataset, ``index`` the Sample's position in the list)."""

    index: int
    image_path: Path
    caption: str  # the user's caption, untouched
    bucket: tuple[int, int]
    original_size: tuple[int, int]
    crop: tuple[int, int]
    item: int = -1
    group: str = ""

    @property
    def image(self) -> int:
        return self.item if self.item >= 0 else self.index


class DatasetError(ValueError):
    """A training image could not be used; the message names the file."""


def make_buckets(resolution: int, step: int, max_aspect: float) -> list[tuple[int, int]]:
    """(w, h) buckets with area ≤ resolution², sides multiples of ``step``, aspect within ``max_aspect``
    (kohya-ss ``--enable_bucket`` style). Always contains the square bucket."""
    step = min(step, resolution)
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    w = step
    while w <= resolution * max_aspect:
        h = (area // w) // step * step
        if h >= step and max(w / h, h / w) <= max_aspect:
            buckets.add((w, h))
            buckets.add((h, w))
        w += step
    return sorted(buckets)


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to ``size``'s; ties go to the larger area."""
    ar = np.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(np.log(b[0] / b[1]) - ar), -b[0] * b[1]))


def _cover_crop(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resized (w, h) covering the bucket while keeping aspect, and the centred crop's (top, left)."""
    w, h = size
    scale = max(bucket[0] / w, bucket[1] / h)
    rw, rh = max(bucket[0], round(w * scale)), max(bucket[1], round(h * scale))
    return (rw, rh), ((rh - bucket[1]) // 2, (rw - bucket[0]) // 2)


def training_resolutions(config: TrainingConfig) -> list[int]:
    """The side lengths trained at: ``resolution`` × each of ``resolution_scales``, multiples of 16, ascending."""
    return sorted({max(16, round(config.resolution * f / 16) * 16) for f in config.resolution_scales})


def upscale_needed(size: tuple[int, int], bucket: tuple[int, int]) -> float:
    """How much an image of ``size`` is enlarged to cover ``bucket`` (1.0 = not at all)."""
    return max(bucket[0] / size[0], bucket[1] / size[1])


def own_bucket(size: tuple[int, int], max_upscale: float, step: int, max_side: int) -> tuple[int, int]:
    """A bucket fitted to an image smaller than every training resolution (kohya ``--bucket_no_upscale``): its own
    aspect, enlarged at most ``max_upscale``, sides rounded down to ``step`` and at most ``max_side``."""
    w, h = size
    f = min(max_upscale, max_side / max(w, h))
    return max(step, int(w * f) // step * step), max(step, int(h * f) // step * step)


def place_image(size: tuple[int, int], config: TrainingConfig) -> list[tuple[int, int]]:
    """The buckets an image of ``size`` trains in: one per training resolution it reaches without being enlarged
    more than ``bucket_max_upscale``; an image too small for all of them gets one bucket of its own size."""
    resolutions = training_resolutions(config)
    placed = []
    for res in resolutions:
        buckets = (make_buckets(res, config.bucket_step, config.max_aspect_ratio)
                   if config.bucketing else [(res, res)])
        bucket = nearest_bucket(size, buckets)
        if upscale_needed(size, bucket) <= config.bucket_max_upscale + 1e-6:
            placed.append(bucket)
    if not placed:
        placed.append(own_bucket(size, config.bucket_max_upscale, config.bucket_step, resolutions[0]))
    return placed


def build_samples(items: list[TrainItem], config: TrainingConfig) -> list[Sample]:
    """Read each image's size and assign its bucket(s); a missing/unreadable file is a :class:`DatasetError`."""
    if not items:
        raise DatasetError("no training images: add images to the dataset first")
    samples: list[Sample] = []
    for i, item in enumerate(items):
        path = Path(item.image_path)
        try:
            with Image.open(path) as img:
                size = ImageOps.exif_transpose(img).size if img.getexif() else img.size
        except (OSError, ValueError) as exc:
            raise DatasetError(f"training image {path.name} could not be read ({exc}); remove or re-add it") from exc
        for bucket in place_image(size, config):
            _, crop = _cover_crop(size, bucket)
            samples.append(Sample(len(samples), path, item.caption or "", bucket, size, crop, item=i,
                                  group=item.group or ""))
    return samples


def load_pixels(sample: Sample) -> np.ndarray:
    """The image resized to cover its bucket and centre-cropped: float32 CHW in [-1, 1]."""
    with Image.open(sample.image_path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        (rw, rh), (top, left) = _cover_crop(img.size, sample.bucket)
        img = img.resize((rw, rh), Image.Resampling.LANCZOS)
        img = img.crop((left, top, left + sample.bucket[0], top + sample.bucket[1]))
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return arr.transpose(2, 0, 1).copy()


# ---------------------------------------------------------------------------------------------- captions
def _prefix(caption: str, word: str, sep: str) -> str:
    if not word or re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, re.I):
        return caption
    return f"{word}{sep} {caption}" if caption else word


def group_trigger(config: TrainingConfig, group: str) -> str:
    spec = config.group(group) if group else None
    return spec.trigger if spec else ""


def base_caption(caption: str, config: TrainingConfig, group: str = "") -> str:
    """The caption with the trigger word first and the image group's trigger second (each unless present)."""
    caption = caption.strip()
    if config.prefix_trigger:
        caption = _prefix(_prefix(caption, group_trigger(config, group), config.caption_separator),
                          config.trigger, config.caption_separator)
    return caption


def kept_tokens(config: TrainingConfig, group: str = "") -> int:
    """Leading tags never shuffled: ``keep_tokens``, plus the group trigger that follows the Element's."""
    return config.keep_tokens + (1 if config.prefix_trigger and group_trigger(config, group) else 0)


def caption_variant(caption: str, config: TrainingConfig, rng: random.Random, keep: int | None = None) -> str:
    """``caption`` with its tags after the first ``keep_tokens`` shuffled (kohya ``--shuffle_caption``)."""
    sep = config.caption_separator
    tags = [t.strip() for t in caption.split(sep) if t.strip()]
    n_keep = config.keep_tokens if keep is None else keep
    keep, rest = tags[:n_keep], tags[n_keep:]
    rng.shuffle(rest)
    return f"{sep} ".join(keep + rest) if sep != " " else " ".join(keep + rest)


def variant_count(config: TrainingConfig) -> int:
    """How many caption variants one image has over the whole run (1 when captions are not shuffled).

    With a trained text encoder every step gets a fresh shuffle; with a frozen one the embeddings are cached,
    so the shuffles are limited to ``shuffle_variants`` per image, cycled through the epochs (documented
    trade-off: exact per-step shuffling would defeat the text-embedding cache).
    """
    if not config.shuffle_captions:
        return 1
    total = config.epochs * config.repeats
    return total if config.train_text_encoder else min(config.shuffle_variants, total)


def caption_for(sample: Sample, config: TrainingConfig, variant: int) -> str:
    """Caption variant ``variant`` of ``sample`` (deterministic for a given seed)."""
    caption = base_caption(sample.caption, config, sample.group)
    if not config.shuffle_captions:
        return caption
    return caption_variant(caption, config, random.Random(f"{config.seed}:shuffle:{sample.image}:{variant}"),
                           kept_tokens(config, sample.group))


@dataclass(frozen=True)
class Slot:
    """One image occurrence in an epoch: which sample, which caption variant, whether its caption is dropped."""

    sample: int
    variant: int
    drop_caption: bool


def _by_image(samples: list[Sample]) -> dict[int, list[Sample]]:
    out: dict[int, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.image, []).append(s)
    return out


def epoch_batches(samples: list[Sample], config: TrainingConfig, epoch: int) -> list[list[Slot]]:
    """The batches of ``epoch`` (1-based): each image ``repeats`` times, batches never mix buckets, order shuffled.

    An image with several resolutions trains at them in turn (occurrence k uses resolution k mod n), so
    multi-resolution costs no extra steps. Deterministic in (seed, epoch) so a resumed run replays the same order.
    """
    rng = random.Random(f"{config.seed}:epoch:{epoch}")
    per_bucket: dict[tuple[int, int], list[Slot]] = {}
    n_variants = variant_count(config)
    for image, variants in _by_image(samples).items():
        repeats = config.repeats_for(variants[0].group)
        for r in range(repeats):
            occurrence = (epoch - 1) * repeats + r
            s = variants[(occurrence + image) % len(variants)]
            drop = config.caption_dropout > 0 and rng.random() < config.caption_dropout
            per_bucket.setdefault(s.bucket, []).append(Slot(s.index, occurrence % n_variants, drop))
    batches: list[list[Slot]] = []
    for bucket in sorted(per_bucket):
        slots = per_bucket[bucket]
        rng.shuffle(slots)
        batches += [slots[i:i + config.batch_size] for i in range(0, len(slots), config.batch_size)]
    rng.shuffle(batches)
    return batches


def steps_per_epoch(samples: list[Sample], config: TrainingConfig, epoch: int = 1) -> int:
    """Exact optimizer steps in ``epoch`` (per-bucket batching can add a partial batch per bucket)."""
    return len(epoch_batches(samples, config, epoch))


def total_steps(samples: list[Sample], config: TrainingConfig) -> int:
    """Exact optimizer steps of the whole run (with several resolutions the buckets differ per epoch)."""
    return sum(steps_per_epoch(samples, config, e) for e in range(1, config.epochs + 1))


def optimizer_steps(samples: list[Sample], config: TrainingConfig) -> int:
    """Optimizer steps of the whole run: batches grouped by ``gradient_accumulation_steps`` (the last group of
    an epoch may be short: an epoch never carries gradients into the next)."""
    accum = config.gradient_accumulation_steps
    return sum(-(-steps_per_epoch(samples, config, e) // accum) for e in range(1, config.epochs + 1))


def dataset_hash(items: list[TrainItem]) -> str:
    """Content hash of the images and captions (resume safety, ``ss_dataset_dirs`` stand-in)."""
    h = hashlib.sha256()
    for item in items:
        h.update(hashlib.sha256(Path(item.image_path).read_bytes()).digest())
        h.update((item.caption or "").encode())
        if item.group:
            h.update(f"\0group:{item.group}".encode())
    return h.hexdigest()


def tag_frequency(samples: list[Sample], config: TrainingConfig) -> dict[str, int]:
    """Tag → count over the captions as trained (kohya ``ss_tag_frequency``)."""
    freq: dict[str, int] = {}
    for s in (variants[0] for variants in _by_image(samples).values()):
        for tag in base_caption(s.caption, config, s.group).split(config.caption_separator):
            tag = tag.strip()
            if tag:
                freq[tag] = freq.get(tag, 0) + 1
    return freq
