"""The one validated training configuration. Torch-free: storage and the bot import it to validate a request and
estimate steps/time before anything is queued.

Build one with :meth:`TrainingConfig.for_request` (category preset + overrides); errors are pydantic
``ValidationError``/``ValueError`` whose message names the offending field.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer.presets import CATEGORIES, auto_repeats, preset_for
from trainer.prompting import MAX_STRENGTH
from trainer.vocabulary import CategoryName, FamilyName

Category = CategoryName
Optimizer = Literal["adamw", "adamw8bit", "prodigy"]
Scheduler = Literal["constant", "cosine", "cosine_with_restarts"]
Precision = Literal["no", "bf16", "fp16"]


RESOLUTION_STEP = 16  # training and sample resolutions are multiples of this (VAE 8 × Flux's 2×2 packing)
FLUX_RESOLUTION_SCALES = [0.5, 0.75, 1.0]  # 512/768/1024 at 1024 px, as ai-toolkit's Flux configs train


# A multi-concept dataset's groups (kohya's ``N_name/`` folders); storage and the front ends show these.
MAX_GROUPS = 16
MAX_GROUP_NAME = 40
MAX_GROUP_TRIGGER = 100
MAX_REPEATS = 1000


class GroupSpec(BaseModel):
    """One named image group of a multi-concept dataset (kohya's ``N_name/`` folder): its own trigger or class
    word (put after the Element's trigger in its captions) and its own repeats (balanced steps per group)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_GROUP_NAME)
    trigger: str = Field("", max_length=MAX_GROUP_TRIGGER)
    repeats: int = Field(1, ge=1, le=MAX_REPEATS)
    images: int = Field(0, ge=0)  # images in the group when the config was built (for step counts)


class TrainingConfig(BaseModel):
    """Everything one LoRA run needs besides the base model, the images and the output folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    family: FamilyName
    category: Category = "character"
    trigger: str = Field("", max_length=100)

    # Schedule: steps = epochs × ceil(images × repeats / batch_size).
    epochs: int = Field(10, ge=1, le=500)
    repeats: int = Field(1, ge=1, le=MAX_REPEATS)
    batch_size: int = Field(1, ge=1, le=64)
    # Optimizer step every N batches (effective batch = batch_size × N); the schedule counts optimizer steps.
    gradient_accumulation_steps: int = Field(1, ge=1, le=128)

    # Optimisation.
    learning_rate: float = Field(1e-4, gt=0, le=10)
    text_encoder_lr: float | None = Field(None, gt=0, le=10)  # None → same as learning_rate
    optimizer: Optimizer = "adamw"
    weight_decay: float = Field(1e-2, ge=0, le=1)
    max_grad_norm: float = Field(1.0, ge=0)  # 0 disables clipping
    ema_decay: float | None = Field(None, gt=0, lt=1)  # e.g. 0.999: export an EMA of the LoRA weights
    lr_scheduler: Scheduler = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    lr_num_cycles: int = Field(1, ge=1, le=100)  # cosine_with_restarts only

    # Network.
    rank: int = Field(16, ge=1, le=256)
    alpha: float = Field(16, gt=0, le=1024)
    use_dora: bool = False
    # Which layers carry LoRA: "full" = kohya parity (attention + proj_in/out + feed-forward, CLIP MLP, Flux
    # single-block output); "attention" = attention projections only (diffusers' scripts; smaller files).
    targets: Literal["attention", "full"] = "full"
    train_text_encoder: bool = False

    # Noise / loss.
    min_snr_gamma: float | None = Field(None, gt=0, le=100)  # SD only
    noise_offset: float = Field(0.0, ge=0, le=1)  # SD only
    flux_timestep_sampling: Literal["shift", "sigmoid", "uniform"] = "shift"
    # None → by resolution, as FluxPipeline shifts at inference (calculate_shift; 3.1582 at 1024²); a number fixes it.
    flux_shift: float | None = Field(None, gt=0, le=20)
    flux_guidance: float = Field(1.0, ge=0, le=20)
    max_sequence_length: int = Field(512, ge=8, le=512)  # Flux T5 tokens

    # Data.
    resolution: int = Field(1024, ge=32, le=2048)
    bucketing: bool = True
    bucket_step: int = Field(64, ge=8, le=256)
    max_aspect_ratio: float = Field(2.0, ge=1.0, le=4.0)
    # An image is never enlarged more than this to fill a bucket; smaller images train in smaller buckets
    # (kohya --bucket_no_upscale at 1.0).
    bucket_max_upscale: float = Field(1.0, ge=1.0, le=8.0)
    # Multi-resolution: train at resolution × each scale (an image takes them in turn; no extra steps).
    resolution_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=4)
    groups: list[GroupSpec] = Field(default_factory=list, max_length=MAX_GROUPS)
    prefix_trigger: bool = True
    shuffle_captions: bool = False
    keep_tokens: int = Field(1, ge=0, le=32)
    caption_dropout: float = Field(0.0, ge=0, le=1)
    caption_separator: str = Field(",", min_length=1, max_length=4)
    shuffle_variants: int = Field(8, ge=1, le=64)  # cached shuffled-caption variants per image (frozen TE)

    # Runtime.
    seed: int = Field(42, ge=0, le=2**31 - 1)
    mixed_precision: Precision = "bf16"  # GPU only; CPU runs fall back to fp32 with a note
    gradient_checkpointing: bool = False
    # Frozen denoiser weights on the GPU (trainer.memory): "auto" → the fastest mode the planner finds fits.
    # (Block swap is a generation mode only: see trainer.memory.planner.TRAIN_MODES.)
    memory_mode: Literal["auto", "bf16", "fp8", "int8", "nf4"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # Outputs.
    save_every_n_epochs: int = Field(1, ge=1)
    save_every_n_steps: int = Field(0, ge=0)  # also checkpoint mid-epoch every N steps (resume point); 0 = off
    sample_every_n_epochs: int = Field(0, ge=0)  # 0 → only after the last epoch
    sample_prompts: list[str] = Field(default_factory=list, max_length=8)
    sample_steps: int = Field(20, ge=1, le=100)
    sample_guidance: float | None = Field(None, ge=0, le=30)  # None → family default
    sample_seed: int = Field(1234, ge=0, le=2**31 - 1)
    sample_resolution: int | None = Field(None, ge=32, le=2048)  # None → resolution
    grid: bool = True
    grid_strengths: list[float] = Field(default_factory=lambda: [0.0, 0.5, 0.75, 1.0], min_length=1, max_length=8)
    recommended_strength: float = Field(1.0, ge=0, le=2)  # used when the strength sweep is off or inconclusive
    strength_sweep: bool = True  # after training: render 0.2…1.2, recommend a range (trainer/strength_sweep.py)
    output_name: str = Field("", max_length=100)
    save_precision: Literal["fp16", "bf16", "fp32"] = "fp16"  # exported LoRA files (checkpoints stay fp32)

    @field_validator("trigger", "output_name")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @field_validator("resolution", "sample_resolution")
    @classmethod
    def _resolution_step(cls, v: int | None) -> int | None:
        if v is not None and v % RESOLUTION_STEP:
            nearest = max(2 * RESOLUTION_STEP, round(v / RESOLUTION_STEP) * RESOLUTION_STEP)
            raise ValueError(f"must be a multiple of {RESOLUTION_STEP} (got {v}); try {nearest}")
        return v

    @field_validator("sample_prompts")
    @classmethod
    def _prompts(cls, v: list[str]) -> list[str]:
        prompts = [p.strip() for p in v if p.strip()]
        if any(len(p) > 500 for p in prompts):
            raise ValueError("each sample prompt must be at most 500 characters")
        return prompts

    @field_validator("grid_strengths")
    @classmethod
    def _strengths(cls, v: list[float]) -> list[float]:
        if any(not 0 <= s <= MAX_STRENGTH for s in v):
            raise ValueError(f"strengths must be between 0 and {MAX_STRENGTH:g}")
        return v

    @field_validator("resolution_scales")
    @classmethod
    def _scales(cls, v: list[float]) -> list[float]:
        if any(not 0.25 <= f <= 1.0 for f in v):
            raise ValueError("each scale must be between 0.25 and 1.0 (a fraction of resolution)")
        return sorted(set(v))

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, v: list[GroupSpec]) -> list[GroupSpec]:
        names = [g.name.casefold() for g in v]
        if len(set(names)) != len(names):
            raise ValueError("group names must be unique")
        return v

    @model_validator(mode="after")
    def _family_rules(self) -> TrainingConfig:
        if self.family == "flux" and self.train_text_encoder:
            raise ValueError("train_text_encoder: not supported for Flux (its T5/CLIP encoders stay frozen); "
                             "set it to false")
        if self.family == "flux" and self.use_dora:
            raise ValueError("use_dora: DoRA is supported for SD1.5/SDXL only (Flux's fused kohya/ComfyUI "
                             "format cannot carry it); set it to false")
        return self

    # ----------------------------------------------------------------------------------------------- derived
    def group(self, name: str) -> GroupSpec | None:
        return next((g for g in self.groups if g.name.casefold() == (name or "").casefold()), None)

    def repeats_for(self, group: str) -> int:
        """Repeats of an image in ``group`` (the group's own when it has one, else ``repeats``)."""
        spec = self.group(group) if group else None
        return spec.repeats if spec else self.repeats

    def steps_per_epoch(self, image_count: int) -> int:
        """Optimizer steps in one epoch (exact when all images fall in one bucket; buckets round up per bucket)."""
        if self.groups:
            grouped = sum(g.images for g in self.groups)
            samples = sum(g.images * g.repeats for g in self.groups) + max(0, image_count - grouped) * self.repeats
            return math.ceil(samples / self.batch_size)
        return math.ceil(image_count * self.repeats / self.batch_size)

    def total_steps(self, image_count: int) -> int:
        return self.epochs * self.steps_per_epoch(image_count)

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.text_encoder_lr if self.text_encoder_lr is not None else self.learning_rate

    def saved_epochs(self) -> list[int]:
        """Epochs whose weights are kept (every ``save_every_n_epochs`` and always the last)."""
        return sorted({e for e in range(1, self.epochs + 1) if e % self.save_every_n_epochs == 0} | {self.epochs})

    def sample_epochs(self) -> list[int]:
        if not self.sample_every_n_epochs:
            return [self.epochs]
        return sorted({e for e in range(1, self.epochs + 1) if e % self.sample_every_n_epochs == 0}
                      | {self.epochs})

    def resolved_sample_prompts(self) -> list[str]:
        return [p.replace("{trigger}", self.trigger).strip(" ,") for p in self.sample_prompts]

    # ------------------------------------------------------------------------------------------ constructor
    @classmethod
    def for_request(cls, category: str, family: str, image_count: int, trigger: str, *, tiny: bool = False,
                    **overrides: Any) -> TrainingConfig:
        """Preset for ``family`` × ``category`` (``tiny``: a built-in tiny base) with repeats fitted to
        ``image_count``, then ``overrides``.

        Unknown override names, out-of-range values and combinations a family does not support raise a
        ``ValueError`` (``pydantic.ValidationError`` is one) whose message names the field.
        """
        preset = preset_for(family, category, tiny=tiny)
        if not isinstance(image_count, int) or image_count < 1:
            raise ValueError(f"image_count: need at least one image (got {image_count!r})")
        fixed = sorted(set(overrides) & {"family", "category", "trigger"})
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: pass these as arguments of for_request, not as overrides")
        unknown = sorted(set(overrides) - set(cls.model_fields) - {"warmup_ratio"})
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: unknown training option(s); "
                             f"known options are {', '.join(sorted(cls.model_fields))}")
        epochs = overrides.get("epochs", preset.epochs)
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs: must be a whole number ≥ 1 (got {epochs!r})")
        values: dict[str, Any] = dict(
            family=family, category=category, trigger=trigger, epochs=epochs,
            repeats=auto_repeats(preset.target_samples, epochs, image_count),
            learning_rate=preset.learning_rate, text_encoder_lr=preset.text_encoder_lr,
            rank=preset.rank, alpha=preset.alpha, lr_scheduler=preset.lr_scheduler,
            lr_num_cycles=preset.lr_num_cycles, train_text_encoder=preset.train_text_encoder,
            shuffle_captions=preset.shuffle_captions, keep_tokens=preset.keep_tokens,
            caption_dropout=preset.caption_dropout, min_snr_gamma=preset.min_snr_gamma,
            noise_offset=preset.noise_offset, resolution=preset.resolution,
            gradient_checkpointing=preset.gradient_checkpointing,
            sample_prompts=list(preset.sample_prompts),
        )
        # Prodigy adapts its own step size: lr is a multiplier and 1.0 is its documented default.
        if overrides.get("optimizer") == "prodigy" and "learning_rate" not in overrides:
            values["learning_rate"] = 1.0
            values["text_encoder_lr"] = None
        if family == "flux":
            values["resolution_scales"] = list(FLUX_RESOLUTION_SCALES)
        warmup_ratio = overrides.pop("warmup_ratio", preset.warmup_ratio)
        if overrides.get("groups"):
            values["groups"] = balanced_groups(overrides.pop("groups"), preset.target_samples, epochs)
        values.update(overrides)
        config = cls(**values)
        if "lr_warmup_steps" not in overrides:  # the schedule counts optimizer steps
            config.lr_warmup_steps = round(float(warmup_ratio) * config.total_steps(image_count)
                                           / config.gradient_accumulation_steps)
        return config


def balanced_groups(groups: list, target_samples: int, epochs: int) -> list[GroupSpec]:
    """Groups with repeats chosen so each gets an equal share of the run's samples (kohya's advice for
    multi-concept folders: images × repeats about equal per concept); a group's explicit repeats wins."""
    specs = [g if isinstance(g, GroupSpec) else GroupSpec(**g) for g in groups]
    share = target_samples / max(1, len(specs))
    # Repeats of the largest automatic group first, the others scaled from it: rounding each group on its own
    # lets small runs drift apart (4 vs 8 images: 5 and 2 repeats, 20 vs 16 samples); scaling keeps them equal.
    largest = max((g.images for g in specs if "repeats" not in g.model_fields_set), default=1)
    base = auto_repeats(round(share), epochs, max(1, largest))
    out = []
    for g in specs:
        explicit = "repeats" in g.model_fields_set
        repeats = g.repeats if explicit else max(1, min(100, round(base * largest / max(1, g.images))))
        out.append(g.model_copy(update={"repeats": repeats}))
    return out


def estimate_seconds(family: str, config: TrainingConfig, image_count: int, device: str = "gpu") -> float:
    """Rough wall-clock seconds for a run, for queue messages ("about 25 minutes"); never a promise.

    Per-step costs are typical community-reported speeds on a 24 GB consumer GPU (RTX 3090/4090 class, bf16,
    batch 1, gradient checkpointing): Flux-dev ≈1.6 s/step at 1024 px, SDXL ≈0.7 s at 1024 px, SD1.5 ≈0.15 s at
    512 px; scaled linearly by pixels × batch, +15 % with text-encoder training. Load + cache + export overhead and
    sampling (≈ steps × prompts × a quarter of a training step; the strength sweep too) are added. CPU is taken
    as ~60× slower.
    """
    per_step, ref_px, load_s = {"flux": (1.6, 1024, 90.0), "sdxl": (0.7, 1024, 40.0),
                                "sd15": (0.15, 512, 15.0)}[family]
    scale = (config.resolution / ref_px) ** 2 * config.batch_size
    step_s = per_step * scale * (1.15 if config.train_text_encoder else 1.0)
    if not config.gradient_checkpointing:
        step_s *= 0.8
    # Leaner frozen weights cost time: fp8 upcasts every layer per step; bitsandbytes dequantizes (QLoRA runs are
    # commonly reported 30–50 % slower than bf16 LoRA).
    step_s *= {"fp8": 1.1, "int8": 1.5, "nf4": 1.35}.get(config.memory_mode, 1.0)
    steps = config.total_steps(image_count)
    samples = len(config.sample_prompts) * len(config.sample_epochs()) * config.sample_steps * per_step * 0.25
    if config.strength_sweep:  # 7 strengths × up to 2 prompts, plus 8 images × 2 denoising passes each
        samples += 7 * max(1, min(2, len(config.sample_prompts))) * config.sample_steps * per_step * 0.25
        samples += 7 * 16 * per_step * 0.3
    caching = image_count * 0.2 * (config.resolution / ref_px) ** 2
    total = load_s + caching + steps * step_s + samples + 10.0
    return total * (60.0 if device == "cpu" else 1.0)


def validation_message(exc: ValidationError) -> str:
    """One readable line per problem: ``field: message`` (for bot/CLI replies)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


__all__ = ["CATEGORIES", "GroupSpec", "TrainingConfig", "estimate_seconds", "validation_message"]


def field_bounds(name: str) -> tuple[float, float]:
    """The lowest and highest value :class:`TrainingConfig` accepts for the numeric field ``name`` (an exclusive
    bound is returned as is), so front ends' option ranges and help texts follow the one definition."""
    lo = hi = None
    for rule in TrainingConfig.model_fields[name].metadata:
        lo = next((v for v in (getattr(rule, "ge", None), getattr(rule, "gt", None)) if v is not None), lo)
        hi = next((v for v in (getattr(rule, "le", None), getattr(rule, "lt", None)) if v is not None), hi)
    if lo is None or hi is None:
        raise ValueError(f"TrainingConfig.{name} has no lower and upper bound")
    return lo, hi
