"""The trainer's public seam: plain data in, callbacks out, cancel/pause in. Torch-free on purpose.

Callers (the CLI, the arq worker's training subprocess, tests) build these objects; nothing here knows about
Discord, arq or the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from trainer.vocabulary import FamilyName


@dataclass(frozen=True)
class BaseModelRef:
    """Which base to load: ``source`` is a hub id, a local diffusers directory or ``builtin:tiny-sd15`` etc."""

    name: str
    family: FamilyName
    source: str
    arch: str = ""  # architecture file for memory planning (trainer.memory.planner); "" → by name/source/family


@dataclass(frozen=True)
class TrainItem:
    """One training image (already normalised RGB on disk), its caption (may be empty) and the name of its image
    group in a multi-concept dataset ("" = none; the config's ``groups`` give its trigger and repeats)."""

    image_path: Path
    caption: str = ""
    group: str = ""


@dataclass
class ProgressEvent:
    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    loss: float | None = None
    lr: float | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    phase: Literal["loading", "caching", "training", "sampling", "exporting", "done"] = "training"
    sample_paths: list[Path] = field(default_factory=list)


class TrainingCancelled(Exception):
    """Raised by the trainer when the cancel signal was seen; the last epoch checkpoint stays usable."""


class GenerationStopped(Exception):
    """Raised by ``Generator.generate`` when its ``stop`` callable said so between denoising steps."""


class TrainControl(Protocol):
    """What the trainer polls between steps."""

    def cancelled(self) -> bool: ...

    def pause_point(self) -> None:
        """Block while the caller wants the GPU for something else (fair-share with generation)."""


class NullControl:
    def cancelled(self) -> bool:
        return False

    def pause_point(self) -> None:
        return None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    """Files written under the output folder by a finished run."""

    out_dir: Path
    epochs: int
    steps: int
    final_loss: float | None
    lora_diffusers: Path  # diffusers-format LoRA .safetensors (pipeline.load_lora_weights)
    lora_kohya: Path  # kohya/A1111/ComfyUI-format .safetensors with ss_* metadata
    element_json: Path
    loss_curve_png: Path | None
    grid_png: Path | None  # epoch x strength grid
    samples: dict[int, list[Path]]  # epoch -> sample images
    epoch_weights: dict[int, Path]  # epoch -> diffusers-format LoRA of that epoch
    recommended_strength: float = 1.0  # the sweep's midpoint when it found a range
    resumed_from_epoch: int = 0
    strength_range: tuple[float, float] | None = None  # what the post-training strength sweep recommends


@dataclass(frozen=True)
class LoraRef:
    """An Element as the generation engine sees it: a cache key, a .safetensors file, a trigger, a strength."""

    key: str
    path: Path
    trigger: str
    strength: float = 1.0


@dataclass
class GenerationRequest:
    prompt: str
    loras: list[LoraRef] = field(default_factory=list)
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    count: int = 1
    hires: bool = False
    aspect: str | None = None  # a preset from trainer.prompting.ASPECTS ("1:1", "3:4", ...); width/height win


@dataclass
class GenerationResult:
    images: list  # PIL.Image.Image, one per requested image
    seed: int
    seeds: list[int]
    prompt: str  # the prompt actually used (trigger words inserted)
    warnings: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0
