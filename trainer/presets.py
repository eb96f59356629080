"""Category presets per base family: the defaults a request starts from. Torch-free.

Where the numbers come from (community knowledge as of 2024–25; all overridable per request):

* SD1.5 — the kohya-ss ``train_network.py`` README and Holostrawberry's widely used Civitai/Colab guide: UNet lr
  5e-4 with text-encoder lr 1e-4, ``network_dim`` 16 / ``network_alpha`` 8 for characters (32/16 for styles),
  ~10 epochs with repeats chosen so images × repeats ≈ 200–400 per epoch, cosine-with-restarts (3 cycles),
  ``--min_snr_gamma 5`` (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting"), 512 px.
* SDXL — kohya-ss ``docs/train_SDXL-en.md`` and Civitai SDXL guides: lr 1e-4 (lower than SD1.5: the UNet is
  larger), text encoders 10× lower (1e-5) because they overfit quickly, rank 16–32 with alpha = rank/2,
  noise offset 0.0357 (the value SDXL base itself was trained with), 1024 px, gradient checkpointing.
* Flux-dev — ostris/ai-toolkit ``train_lora_flux_24gb.yaml`` (lr 1e-4 constant, linear 16 / alpha 16, 2000 steps,
  caption dropout 0.05, 512–1024 buckets) and kohya-ss ``docs/flux_train_network.md`` (``--timestep_sampling
  shift --discrete_flow_shift 3.1582``, ``--guidance_scale 1.0``, text encoders frozen). T5 reads captions as
  natural language, so captions are never shuffled for Flux.

Caption handling by category (kohya ``--shuffle_caption --keep_tokens``; Civitai guides):
* character/object — trigger word first and kept in place (keep_tokens=1), the rest shuffled on SD; a little
  caption dropout so the trigger alone carries the identity.
* style — shuffle, small dropout; the trigger is still prepended so the style can be switched on by word.
* concept — captions matter most (they describe what is *not* the concept): no shuffle, no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from trainer.vocabulary import CATEGORIES, FAMILIES


@dataclass(frozen=True)
class Preset:
    """Defaults for one (family, category). ``target_samples`` = images × repeats × epochs to aim for."""

    epochs: int
    target_samples: int
    learning_rate: float
    text_encoder_lr: float | None
    rank: int
    alpha: float
    lr_scheduler: str
    warmup_ratio: float
    lr_num_cycles: int
    train_text_encoder: bool
    shuffle_captions: bool
    keep_tokens: int
    caption_dropout: float
    min_snr_gamma: float | None
    noise_offset: float
    resolution: int
    gradient_checkpointing: bool
    sample_prompts: tuple[str, ...] = field(default_factory=tuple)


# Sample prompts: "{trigger}" is replaced by the trigger word. Kept short: samples are a quick visual check.
_PROMPTS = {
    "character": ("{trigger}, portrait, looking at the viewer", "{trigger} walking in a city street"),
    "object": ("a photo of {trigger} on a wooden table", "{trigger} in a forest clearing"),
    "style": ("{trigger}, a lighthouse on a cliff at sunset", "{trigger}, a cat sitting on a windowsill"),
    "concept": ("{trigger}, a busy market square", "{trigger}, a quiet mountain lake"),
}


def _sd(category: str, **family: Any) -> Preset:
    """What the SD1.5 and SDXL guides agree on; ``family`` holds the rest."""
    style = category == "style"
    return Preset(
        epochs=10,
        target_samples={"character": 2000, "object": 1600, "style": 3000, "concept": 2500}[category],
        rank=32 if style else 16, alpha=16 if style else 8,
        warmup_ratio=0.05,
        shuffle_captions=category != "concept", keep_tokens=1,
        caption_dropout=0.0 if category == "concept" else 0.05,
        min_snr_gamma=5.0,
        sample_prompts=_PROMPTS[category],
        **family,
    )


def _sd15(category: str) -> Preset:
    return _sd(category, learning_rate=5e-4, text_encoder_lr=1e-4,
               lr_scheduler="cosine_with_restarts", lr_num_cycles=3,
               train_text_encoder=True,
               noise_offset=0.05 if category == "style" else 0.0,
               resolution=512, gradient_checkpointing=False)


def _sdxl(category: str) -> Preset:
    return _sd(category, learning_rate=1e-4, text_encoder_lr=1e-5,
               lr_scheduler="cosine", lr_num_cycles=1,
               # UNet-only (kohya's recommendation for SDXL LoRAs): both encoders' outputs are cached and the
               # encoders leave the GPU before the UNet arrives.
               train_text_encoder=False,
               noise_offset=0.0357,
               resolution=1024, gradient_checkpointing=True)


def _flux(category: str) -> Preset:
    style = category == "style"
    return Preset(
        epochs=10,
        target_samples={"character": 1500, "object": 1200, "style": 2000, "concept": 2000}[category],
        learning_rate=1e-4, text_encoder_lr=None,
        rank=32 if style else 16, alpha=32 if style else 16,
        lr_scheduler="constant", warmup_ratio=0.0, lr_num_cycles=1,
        train_text_encoder=False,
        shuffle_captions=False, keep_tokens=1,
        caption_dropout=0.0 if category == "concept" else 0.05,
        min_snr_gamma=None, noise_offset=0.0,
        resolution=1024, gradient_checkpointing=True,
        sample_prompts=_PROMPTS[category],
    )


_BUILDERS = {"sd15": _sd15, "sdxl": _sdxl, "flux": _flux}


# The built-in tiny bases (tests, demo, a first try on a CPU) are 64 px models: the real presets would plan
# thousands of 512–1024 px steps on them. A tenth of the samples at their native size finishes in about a minute.
TINY_RESOLUTION = 64
TINY_SAMPLE_FRACTION = 10


def preset_for(family: str, category: str, *, tiny: bool = False) -> Preset:
    """The preset for ``family`` × ``category`` (sized for a built-in tiny base when ``tiny``); a ValueError
    names the bad argument and the choices."""
    if family not in _BUILDERS:
        raise ValueError(f"family: unknown base family {family!r}; choose one of {', '.join(FAMILIES)}")
    if category not in CATEGORIES:
        raise ValueError(f"category: unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    preset = _BUILDERS[family](category)
    if tiny:
        preset = replace(preset, resolution=TINY_RESOLUTION, gradient_checkpointing=False,
                         target_samples=preset.target_samples // TINY_SAMPLE_FRACTION)
    return preset


def auto_repeats(target_samples: int, epochs: int, image_count: int) -> int:
    """Repeats so that images × repeats × epochs lands near ``target_samples`` (kohya's repeats tables)."""
    if image_count < 1:
        raise ValueError("image_count: a dataset needs at least one image")
    return max(1, min(100, round(target_samples / (epochs * image_count))))
