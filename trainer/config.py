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

Category = Literal["style", "character", "object", "concept"]
Optimizer = Literal["adamw", "adamw8bit", "prodigy"]
Scheduler = Literal["constant", "cosine", "cosine_with_restarts"]
Precision = Literal["no", "bf16", "fp16"]


class TrainingConfig(BaseModel):
    """Everything one LoRA run needs besides the base model, the images and the output folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    family: Literal["flux", "sdxl", "sd15"]
    category: Category = "character"
    trigger: str = Field("", max_length=100)

    # Schedule: steps = epochs × ceil(images × repeats / batch_size).
    epochs: int = Field(10, ge=1, le=500)
    repeats: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(1, ge=1, le=64)

    # Optimisation.
    learning_rate: float = Field(1e-4, gt=0, le=10)
    text_encoder_lr: float | None = Field(None, gt=0, le=10)  # None → same as learning_rate
    optimizer: Optimizer = "adamw"
    weight_decay: float = Field(1e-2, ge=0, le=1)
    max_grad_norm: float = Field(1.0, ge=0)  # 0 disables clipping
    lr_scheduler: Scheduler = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    lr_num_cycles: int = Field(1, ge=1, le=100)  # cosine_with_restarts only

    # Network.
    rank: int = Field(16, ge=1, le=256)
    alpha: float = Field(16, gt=0, le=1024)
    use_dora: bool = False
    train_text_encoder: bool = False

    # Noise / loss.
    min_snr_gamma: float | None = Field(None, gt=0, le=100)  # SD only
    noise_offset: float = Field(0.0, ge=0, le=1)  # SD only
    flux_timestep_sampling: Literal["shift", "sigmoid", "uniform"] = "shift"
    flux_shift: float = Field(3.1582, gt=0, le=20)
    flux_guidance: float = Field(1.0, ge=0, le=20)
    max_sequence_length: int = Field(512, ge=8, le=512)  # Flux T5 tokens

    # Data.
    resolution: int = Field(1024, ge=32, le=2048)
    bucketing: bool = True
    bucket_step: int = Field(64, ge=8, le=256)
    max_aspect_ratio: float = Field(2.0, ge=1.0, le=4.0)
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
    sample_every_n_epochs: int = Field(0, ge=0)  # 0 → only after the last epoch
    sample_prompts: list[str] = Field(default_factory=list, max_length=8)
    sample_steps: int = Field(20, ge=1, le=100)
    sample_guidance: float | None = Field(None, ge=0, le=30)  # None → family default
    sample_seed: int = Field(1234, ge=0, le=2**31 - 1)
    sample_resolution: int | None = Field(None, ge=32, le=2048)  # None → resolution
    grid: bool = True
    grid_strengths: list[float] = Field(default_factory=lambda: [0.0, 0.5, 0.75, 1.0], min_length=1, max_length=8)
    recommended_strength: float = Field(1.0, ge=0, le=2)
    output_name: str = Field("", max_length=100)
    save_precision: Literal["fp16", "bf16", "fp32"] = "fp16"  # exported LoRA files (checkpoints stay fp32)

    @field_validator("trigger", "output_name")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @field_validator("resolution", "sample_resolution")
    @classmethod
    def _multiple_of_16(cls, v: int | None) -> int | None:
        if v is not None and v % 16:
            raise ValueError(f"must be a multiple of 16 (got {v}); try {max(32, round(v / 16) * 16)}")
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
        if any(not 0 <= s <= 2 for s in v):
            raise ValueError("strengths must be between 0 and 2")
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
    def steps_per_epoch(self, image_count: int) -> int:
        """Optimizer steps in one epoch (exact when all images fall in one bucket; buckets round up per bucket)."""
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
    def for_request(cls, category: str, family: str, image_count: int, trigger: str,
                    **overrides: Any) -> TrainingConfig:
        """Preset for ``family`` × ``category`` with repeats fitted to ``image_count``, then ``overrides``.

        Unknown override names, out-of-range values and combinations a family does not support raise a
        ``ValueError`` (``pydantic.ValidationError`` is one) whose message names the field.
        """
        preset = preset_for(family, category)
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
        warmup_ratio = overrides.pop("warmup_ratio", preset.warmup_ratio)
        values.update(overrides)
        config = cls(**values)
        if "lr_warmup_steps" not in overrides:
            config.lr_warmup_steps = round(float(warmup_ratio) * config.total_steps(image_count))
        return config


def estimate_seconds(family: str, config: TrainingConfig, image_count: int, device: str = "gpu") -> float:
    """Rough wall-clock seconds for a run, for queue messages ("about 25 minutes"); never a promise.

    Per-step costs are typical community-reported speeds on a 24 GB consumer GPU (RTX 3090/4090 class, bf16,
    batch 1, gradient checkpointing): Flux-dev ≈1.6 s/step at 1024 px, SDXL ≈0.7 s at 1024 px, SD1.5 ≈0.15 s at
    512 px; scaled linearly by pixels × batch, +15 % with text-encoder training. Load + cache + export overhead and
    sampling (≈ steps × prompts × a quarter of a training step) are added. CPU is taken as ~60× slower.
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


__all__ = ["CATEGORIES", "TrainingConfig", "estimate_seconds", "validation_message"]
