"""Dataset lint: pure checks that tell people, before they spend a training slot, what will hurt their Element.

Severity: ``error`` blocks training (too few / too many images for the family), ``warning`` will likely make
results worse, ``info`` is advice. Every finding names the images (1-based positions) and says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from storage.images.ingest import phash_distance
from storage.settings import Family, ImageLimits
from storage.wording import plural

Severity = Literal["error", "warning", "info"]
_ORDER = {"error": 0, "warning": 1, "info": 2}

# Recommended image counts per category (community guides for Flux/SDXL LoRAs).
CATEGORY_RANGES: dict[str, tuple[int, int]] = {
    "character": (15, 25),
    "style": (15, 30),
    "object": (10, 20),
    "concept": (10, 30),
}
# Training resolution per family; images below half of it get blurry upscales.
FAMILY_RESOLUTION: dict[str, int] = {Family.FLUX: 1024, Family.SDXL: 1024, Family.SD15: 512}
EXTREME_ASPECT = 2.5
# CLIP (SD1.5/SDXL) reads 77 tokens ≈ 300 characters of tags; the rest of a caption is silently dropped.
CLIP_CAPTION_CHARS = 300


@dataclass(frozen=True)
class ImageFacts:
    index: int  # 1-based position shown to users
    width: int
    height: int
    phash: str
    caption: str = ""


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str
    hint: str
    indices: list[int] = field(default_factory=list)


def _refs(indices: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(f"#{i}" for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def lint_dataset(
    images: Sequence[ImageFacts],
    *,
    category: str | None,
    family: str | None,
    limits: ImageLimits,
    near_duplicate_distance: int,
) -> list[Finding]:
    """All findings for a dataset, errors first. ``category``/``family`` may be unknown (``None``)."""
    fam = Family(family) if family else None
    out: list[Finding] = []
    out += _count_findings(images, category, fam, limits)
    if images:
        out += _duplicate_findings(images, near_duplicate_distance)
        out += _resolution_findings(images, fam)
        out += _aspect_findings(images)
        out += _caption_findings(images, category, fam)
    out.sort(key=lambda f: _ORDER[f.severity])
    return out


def _count_findings(images: Sequence[ImageFacts], category: str | None, fam: Family | None,
                    limits: ImageLimits) -> list[Finding]:
    n = len(images)
    if n < limits.min_images:
        return [Finding("error", "too_few_images",
                        f"The dataset has {plural(n, 'image')}; training needs at least "
                        f"{limits.min_images}.",
                        f"Add {limits.min_images - n} more (varied poses, backgrounds and lighting).")]
    max_n = limits.max_for(fam) if fam else max(limits.max_images.values())
    if n > max_n:
        what = f"{fam.value} models" if fam else "any base model"
        return [Finding("error", "too_many_images",
                        f"The dataset has {n} images; the limit for {what} is {max_n}.",
                        f"Remove {n - max_n}: start with near-duplicates and the weakest pictures.")]
    rng = CATEGORY_RANGES.get(category or "")
    if rng and not rng[0] <= n <= rng[1]:
        lo, hi = rng
        advice = (f"Add {lo - n} more if you can." if n < lo
                  else f"Consider removing {n - hi} of the least typical ones: more is not always better.")
        return [Finding("warning", "count_outside_recommended",
                        f"{n} images; {category} Elements usually train best with {lo}–{hi}.", advice)]
    return []


def _duplicate_findings(images: Sequence[ImageFacts], max_distance: int) -> list[Finding]:
    """Groups of images whose perceptual hashes are within ``max_distance`` bits (union-find over pairs)."""
    parent = list(range(len(images)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(images):
        for j in range(i + 1, len(images)):
            d = phash_distance(a.phash, images[j].phash)
            if d is not None and d <= max_distance:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(root(i), []).append(img.index)
    out = []
    for members in groups.values():
        if len(members) > 1:
            members.sort()
            out.append(Finding(
                "warning", "near_duplicates", f"Images {_refs(members)} look nearly identical.",
                f"Keep the best one and remove {_refs(members[1:])}: duplicates make the Element copy that "
                "picture instead of learning the subject.", members,
            ))
    return out


def _resolution_findings(images: Sequence[ImageFacts], fam: Family | None) -> list[Finding]:
    target = FAMILY_RESOLUTION[fam] if fam else 512
    low = [i.index for i in images if min(i.width, i.height) < target // 2]
    soft = [i.index for i in images if target // 2 <= min(i.width, i.height) < target]
    out = []
    if low:
        out.append(Finding(
            "warning", "low_resolution",
            f"{_refs(low)} {'is' if len(low) == 1 else 'are'} under {target // 2} px on the short side; "
            f"training runs at {target} px, so they will be blurry upscales.",
            "Replace them with larger versions, or remove them.", low,
        ))
    if soft and fam is not None:
        out.append(Finding(
            "info", "below_training_resolution",
            f"{_refs(soft)} {'is' if len(soft) == 1 else 'are'} smaller than the {target} px training size.",
            "Fine if they are sharp; larger originals give crisper detail.", soft,
        ))
    return out


def _aspect_findings(images: Sequence[ImageFacts]) -> list[Finding]:
    out = []
    ratios = {i.index: max(i.width, i.height) / max(1, min(i.width, i.height)) for i in images}
    extreme = [idx for idx, r in ratios.items() if r > EXTREME_ASPECT]
    if extreme:
        out.append(Finding(
            "warning", "extreme_aspect_ratio",
            f"{_refs(extreme)} {'is' if len(extreme) == 1 else 'are'} very wide or tall (more than "
            f"{EXTREME_ASPECT}:1); training crops or shrinks them a lot.",
            "Crop them closer to the subject (2:1 or squarer).", extreme,
        ))
    portrait = [i.index for i in images if i.height > 1.2 * i.width]
    landscape = [i.index for i in images if i.width > 1.2 * i.height]
    if portrait and landscape:
        minority, kind = (portrait, "portrait") if len(portrait) <= len(landscape) else (landscape, "landscape")
        if len(minority) <= len(images) // 4:
            out.append(Finding(
                "info", "mixed_aspect_ratios",
                f"Most images share one orientation; {_refs(minority)} {'is' if len(minority) == 1 else 'are'} "
                f"{kind}.",
                "That works (images are bucketed by shape), but a lone shape trains in tiny batches; crop them "
                "to match if framing doesn't matter.", minority,
            ))
    return out


def _caption_findings(images: Sequence[ImageFacts], category: str | None, fam: Family | None) -> list[Finding]:
    out = []
    missing = [i.index for i in images if not i.caption.strip()]
    if missing and category in ("character", "object"):
        out.append(Finding(
            "info", "missing_captions",
            f"{_refs(missing)} {'has' if len(missing) == 1 else 'have'} no caption.",
            "Describe what changes between pictures (clothes, background, pose, lighting) and leave out the "
            "subject itself, so the trigger word absorbs only the subject.", missing,
        ))
    elif missing and len(missing) < len(images):
        out.append(Finding(
            "info", "some_captions_missing",
            f"{_refs(missing)} {'has' if len(missing) == 1 else 'have'} no caption while others do.",
            "Caption all images or none, so every picture teaches the same way.", missing,
        ))
    captioned = [i for i in images if i.caption.strip()]
    by_caption: dict[str, list[int]] = {}
    for i in captioned:
        by_caption.setdefault(i.caption.strip().casefold(), []).append(i.index)
    same = max(by_caption.values(), key=len, default=[])
    if len(same) >= 3 and len(same) == len(captioned):
        out.append(Finding(
            "info", "identical_captions", f"{_refs(same)} all have the same caption.",
            "Identical captions teach nothing beyond the trigger; describe what differs in each picture.", same,
        ))
    if fam in (Family.SD15, Family.SDXL):
        long = [i.index for i in captioned if len(i.caption) > CLIP_CAPTION_CHARS]
        if long:
            out.append(Finding(
                "info", "long_captions",
                f"{_refs(long)} {'has a caption' if len(long) == 1 else 'have captions'} longer than "
                f"{fam.value} reads (about {CLIP_CAPTION_CHARS} characters); the end is ignored.",
                "Put the important words first or shorten them.", long,
            ))
    return out
