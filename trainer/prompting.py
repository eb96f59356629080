"""Torch-free generation rules shared by the engine, storage use cases and the bot.

Trigger-word insertion, LoRA strength limits, aspect presets and per-family defaults live here so the bot can
check a request (and list choices) without importing torch, and the engine applies exactly the same rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# Generation limits, defined once: the use case enforces them, Discord's option ranges and help texts show them.
MAX_LORAS = 4
MAX_STRENGTH = 2.0
MAX_COUNT = 4
MAX_PROMPT = 2000  # characters, prompt and negative prompt each
MAX_STEPS = 150
MAX_GUIDANCE = 30.0

# Aspect preset → (width, height) per size class. "tiny" is for the built-in offline models (divisible by 8,
# which the SD pipelines check); the others are the usual training buckets of each family.
ASPECTS: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"sd15": (512, 512), "sdxl": (1024, 1024), "flux": (1024, 1024), "tiny": (64, 64)},
    "3:4": {"sd15": (512, 704), "sdxl": (896, 1152), "flux": (896, 1152), "tiny": (48, 64)},
    "4:3": {"sd15": (704, 512), "sdxl": (1152, 896), "flux": (1152, 896), "tiny": (64, 48)},
    "16:9": {"sd15": (896, 512), "sdxl": (1344, 768), "flux": (1344, 768), "tiny": (72, 40)},
    "9:16": {"sd15": (512, 896), "sdxl": (768, 1344), "flux": (768, 1344), "tiny": (40, 72)},
}
DEFAULT_ASPECT = "1:1"

# Per size class: (steps, guidance). Tiny models use few steps and no CFG amplification.
DEFAULTS: dict[str, tuple[int, float]] = {
    "sd15": (25, 7.0), "sdxl": (30, 6.0), "flux": (28, 3.5), "tiny": (6, 1.0),
    # Schnell is timestep-distilled without guidance: ~4 steps, guidance 0 (its model card's settings).
    "flux-schnell": (4, 0.0),
}
# Flux's T5 prompt length per size class (schnell was distilled with 256 tokens; dev with 512).
MAX_SEQUENCE_LENGTH: dict[str, int] = {"flux": 512, "flux-schnell": 256}
# Pixel sizes must be multiples of this per size class (VAE downsampling x UNet/packing needs).
SIZE_MULTIPLE: dict[str, int] = {"sd15": 64, "sdxl": 64, "flux": 16, "flux-schnell": 16, "tiny": 8}
MAX_SIDE: dict[str, int] = {"sd15": 1024, "sdxl": 2048, "flux": 2048, "flux-schnell": 2048, "tiny": 256}


def size_class(family: str, source: str, arch: str = "") -> str:
    """"tiny" for built-in offline models, "flux-schnell" for Schnell (its own defaults), else the family name."""
    if source.startswith("builtin:"):
        return "tiny"
    if family == "flux" and (arch == "flux-schnell" or "schnell" in source.lower()):
        return "flux-schnell"
    return family


def _trigger_pattern(trigger: str) -> re.Pattern[str]:
    # Whole word, case-insensitive; lookarounds (not \b) so triggers with punctuation like "sks-style" work.
    return re.compile(r"(?<![\w])" + re.escape(trigger) + r"(?![\w])", re.IGNORECASE)


def insert_triggers(prompt: str, triggers: Sequence[str]) -> str:
    """Prefix the trigger words missing from ``prompt`` (case-insensitive, whole word), keeping their order.

    >>> insert_triggers("a cat in a hat", ["zxq style"])
    'zxq style, a cat in a hat'
    >>> insert_triggers("a ZXQ cat", ["zxq"])
    'a ZXQ cat'
    """
    prompt = prompt.strip()
    missing: list[str] = []
    for trigger in triggers:
        trigger = (trigger or "").strip()
        if not trigger or any(t.lower() == trigger.lower() for t in missing):
            continue
        if not _trigger_pattern(trigger).search(prompt):
            missing.append(trigger)
    return ", ".join([*missing, prompt] if prompt else missing)


def range_warnings(strengths: Sequence[float], ranges: Sequence[tuple[float, float] | None],
                   names: Sequence[str]) -> list[str]:
    """A warning for each strength outside its Element's recommended range (from the post-training sweep)."""
    out = []
    for s, r, name in zip(strengths, ranges, names, strict=True):
        if r is not None and not r[0] - 1e-9 <= s <= r[1] + 1e-9:
            out.append(f"strength {s:g} for {name} is outside its recommended range {r[0]:g}–{r[1]:g}")
    return out


def split_group(ref: str) -> tuple[str, str]:
    """``"Name@outfit2"`` → ``("Name", "outfit2")``; ``"Name"`` → ``("Name", "")`` (the last ``@`` counts)."""
    head, sep, tail = (ref or "").rpartition("@")
    if sep and head.strip() and re.fullmatch(r"[\w-]{1,40}", tail.strip()):
        return head.strip(), tail.strip()
    return (ref or "").strip(), ""


def check_strengths(strengths: Sequence[float], names: Sequence[str] | None = None) -> list[str]:
    """Validate LoRA strengths; return warnings, raise ``ValueError`` for what is refused.

    Refused: more than 4 Elements, a strength that is not a number, below 0 or above 2. Warned: a strength above 1
    or strengths adding up to more than 1 (Elements then tend to overcook or fight each other).
    """
    names = list(names) if names is not None else [f"Element {i + 1}" for i in range(len(strengths))]
    if len(strengths) > MAX_LORAS:
        raise ValueError(f"at most {MAX_LORAS} Elements can be combined in one generation; got {len(strengths)}")
    warnings: list[str] = []
    for name, s in zip(names, strengths, strict=True):
        if not isinstance(s, int | float) or math.isnan(s) or math.isinf(s):
            raise ValueError(f"strength for {name} must be a number between 0 and {MAX_STRENGTH:g}; got {s!r}")
        if s < 0 or s > MAX_STRENGTH:
            raise ValueError(
                f"strength {s:g} for {name} is out of range; use a value between 0 and {MAX_STRENGTH:g} (1 = full)"
            )
        if s > 1:
            warnings.append(f"strength {s:g} for {name} is above 1; images may look overcooked")
    total = float(sum(strengths))
    if len(strengths) > 1 and total > 1:
        warnings.append(
            f"combined strength {total:g} is above 1; the Elements may fight each other — try lowering them"
        )
    return warnings


def resolve_size(size_cls: str, *, width: int | None, height: int | None, aspect: str | None) -> tuple[int, int, list[str]]:
    """Pick (width, height): explicit sizes win, then the aspect preset, then 1:1; snapped to the allowed multiple.

    Returns the size and any warnings (a size that had to be snapped). Raises ``ValueError`` for unknown aspects or
    sizes out of range.
    """
    if aspect is not None and aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; choose one of {', '.join(ASPECTS)}")
    preset = ASPECTS[aspect or DEFAULT_ASPECT][size_cls]
    w = width if width is not None else (preset[0] if height is None else None)
    h = height if height is not None else (preset[1] if width is None else None)
    if w is None:  # only height given: keep the preset's aspect
        w = round(h * preset[0] / preset[1])
    if h is None:
        h = round(w * preset[1] / preset[0])
    multiple, top = SIZE_MULTIPLE[size_cls], MAX_SIDE[size_cls]
    for label, v in (("width", w), ("height", h)):
        if v < multiple or v > top:
            raise ValueError(f"{label} {v} is out of range; use {multiple}–{top} pixels for this model")
    warnings = []
    sw, sh = max(multiple, w // multiple * multiple), max(multiple, h // multiple * multiple)
    if (sw, sh) != (w, h):
        warnings.append(f"size {w}x{h} was rounded to {sw}x{sh} (multiples of {multiple} for this model)")
    return sw, sh, warnings
