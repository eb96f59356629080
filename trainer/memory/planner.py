"""Predict the peak GPU memory of training and generation from the base's architecture file — no weights, no
network, no torch (storage and the bot plan runs before they are queued).

``archs/<base>.json`` holds the real model's config, parameter counts and bytes per mode (built on the meta
device) and activation figures calibrated by measurement (``scripts/write_arch_files.py``; ``bench/bench_memory.py``
checks predictions against fresh measurements). A run's peak is the largest of its phases:

* training — ``caching`` (text encoders, then the VAE, on the GPU without the denoiser), ``step`` (frozen
  denoiser in the mode + fp32 LoRA with gradients and optimizer state + activations), ``sampling`` (denoiser +
  VAE decode);
* generation — all components resident in ``bf16``; in the other modes components take turns on the GPU
  (diffusers model offload), so the peak is the largest component with its activations.

Modes, fastest first: ``bf16``, ``fp8`` (layerwise-cast storage), ``int8``, ``nf4`` (bitsandbytes), ``offload``
(block swap; generation only, see TRAIN_MODES). ``auto`` takes the first that fits the budget, with the config's
gradient checkpointing setting and then with checkpointing on.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARCH_DIR = Path(__file__).parent / "archs"
MODES = ("bf16", "fp8", "int8", "nf4", "offload")
# Training has no block swap: diffusers' group offloading is built for inference — it moves every parameter of a
# block back to the CPU after the block runs (the LoRA's too, whose gradients and optimizer step live on the GPU),
# and autograd keeps the onloaded weights alive for the backward pass anyway. Small cards train in int8/NF4
# (QLoRA, as diffusers' Flux QLoRA example and ai-toolkit do).
TRAIN_MODES = ("bf16", "fp8", "int8", "nf4")
MODE_CHOICES = ("auto", *MODES)
GB = 1e9
# CUDA context, cuBLAS workspaces and allocator fragmentation that max_memory_allocated does not show.
RESERVE_GB = 1.0
NF4_BYTES = 0.5 + 0.127 / 8 + 1 / 64  # 4-bit weights + double-quantized absmax per 64-block (QLoRA paper)
# Base models with a shipped architecture file, and the file each family falls back on for custom sources.
KNOWN_ARCHS = ("sd15", "sdxl", "flux-dev", "flux-schnell")
FAMILY_ARCH = {"sd15": "sd15", "sdxl": "sdxl", "flux": "flux-dev"}


class PlanError(ValueError):
    """A run that fits the budget in no mode; ``needs_gb`` is the least it would need."""

    def __init__(self, message: str, needs_gb: float, advice: str) -> None:
        super().__init__(message)
        self.needs_gb = needs_gb
        self.advice = advice


@functools.cache
def load_arch(name: str) -> dict:
    path = ARCH_DIR / f"{name}.json"
    if not path.exists():
        raise ValueError(f"no architecture file for {name!r}; known: {', '.join(KNOWN_ARCHS)}")
    return json.loads(path.read_text())


def arch_for(base_name: str, family: str, source: str) -> str | None:
    """The architecture file for a base model; None for the built-in tiny CPU models (nothing to plan)."""
    if source.startswith("builtin:"):
        return None
    if base_name in KNOWN_ARCHS:
        return base_name
    if "schnell" in source.lower():
        return "flux-schnell"
    return FAMILY_ARCH.get(family)


def detect_gpu_gb() -> tuple[float | None, str]:
    """Total memory of GPU 0 and its name via ``nvidia-smi`` (torch-free); (None, reason) without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "no NVIDIA GPU found (nvidia-smi is not installed)"
    try:
        line = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()[0]
        name, mib = (part.strip() for part in line.rsplit(",", 1))
        return int(mib) * 2**20 / GB, name
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return None, f"nvidia-smi did not answer ({exc})"


def budget_gb(setting: float | None) -> float | None:
    """``ATELIER_GPU_MEMORY_GB`` when set, else the detected GPU's memory, else None (no GPU: nothing refused)."""
    return setting if setting is not None else detect_gpu_gb()[0]


# ------------------------------------------------------------------------------------------------- the model
def _denoiser(arch: dict, depth: tuple[int, int] | None) -> dict:
    """Denoiser figures, for a reduced-depth Flux transformer when ``depth`` = (double, single) is given."""
    den = dict(arch["denoiser"])
    if depth is not None:
        blocks = den["blocks"]
        counts = blocks["counts"]
        drop = {"double": counts["double"] - depth[0], "single": counts["single"] - depth[1]}
        for key in ("params", "linear_params", "bytes_bf16", "bytes_fp8", "lora_params_per_rank"):
            den[key] = den[key] - sum(drop[k] * blocks[k][key] for k in drop)
        den["blocks"] = {**blocks, "counts": {"double": depth[0], "single": depth[1]}}
    return den


def weight_bytes(den: dict, mode: str) -> float:
    linear, other = den["linear_params"], den["bytes_bf16"] - 2 * den["linear_params"]
    return {"bf16": den["bytes_bf16"], "fp8": den["bytes_fp8"], "int8": linear + other,
            "nf4": linear * NF4_BYTES + other,
            "offload": 2 * den["largest_block_bytes_bf16"] + den["outside_blocks_bytes_bf16"]}[mode]


def _act_mode(mode: str) -> str:
    return "fp8" if mode == "fp8" else "bf16"  # the quantized modes dequantize per layer, like bf16 compute


def _latent_px(arch: dict, width: int, height: int) -> int:
    return (width // arch["vae_downscale"]) * (height // arch["vae_downscale"])


def activation_bytes(arch: dict, den: dict, kind: str, mode: str, width: int, height: int, batch: int,
                     text_tokens: int | None = None) -> float:
    """Activation bytes of one denoiser step; ``kind`` is train_ckpt, train_full or generate. Each calibrated
    figure is a line: a fixed part (per-layer transients) plus a part per latent pixel (SD) or token (Flux)."""
    acts = arch["activations"]
    k = acts[f"{kind}_{_act_mode(mode)}"]
    if arch["family"] == "flux":
        tokens = batch * (_latent_px(arch, width, height) // 4 + (text_tokens or arch["text_tokens"]))
        counts = {"base": 1, **den["blocks"]["counts"]}
        return sum(n * (k[part]["fixed"] + k[part]["per_unit"] * tokens) for part, n in counts.items())
    cfg = 2 if kind == "generate" else 1  # classifier-free guidance runs both prompts in one batch
    return k["fixed"] + k["per_unit"] * batch * cfg * _latent_px(arch, width, height)


def vae_decode_bytes(arch: dict, width: int, height: int, batch: int = 1) -> tuple[float, bool]:
    """Decode activations and whether tiling is used (images larger than one tile are decoded tile by tile)."""
    vae = arch["vae"]
    tiled = width * height > vae["tile_px"]
    return vae["decode_per_px"] * min(width * height, vae["tile_px"]) * (1 if tiled else batch), tiled


def component_bytes(arch: dict, name: str) -> float:
    return 2 * arch["components"][name]["params"]  # text encoders and VAE run in bf16


def text_encoder_names(arch: dict) -> list[str]:
    return [n for n in arch["components"] if n.startswith("text_encoder")]


@dataclass
class TrainShape:
    """The parts of a training config that decide memory (``trainer.config.TrainingConfig`` has them all)."""

    resolution: int = 1024
    batch_size: int = 1
    rank: int = 16
    optimizer: str = "adamw"
    gradient_checkpointing: bool = True
    train_text_encoder: bool = False
    max_sequence_length: int = 512
    sample_resolution: int | None = None

    @classmethod
    def of(cls, config: Any) -> TrainShape:
        return cls(**{k: getattr(config, k) for k in cls.__dataclass_fields__})


def denoiser_step_bytes(arch: dict, kind: str, mode: str, resolution: int, batch: int = 1, rank: int = 16,
                        depth: tuple[int, int] | None = None, per_lora: int = 16,
                        text_tokens: int | None = None) -> float:
    """One denoiser step alone: weights in ``mode`` (+ fp32 LoRA with gradient and Adam state when training)
    + activations — what ``bench/bench_memory.py`` measures."""
    den = _denoiser(arch, depth)
    lora = per_lora * rank * den["lora_params_per_rank"] if kind != "generate" else 4 * rank * \
        den["lora_params_per_rank"]
    return weight_bytes(den, mode) + lora + activation_bytes(arch, den, kind, mode, resolution, resolution, batch,
                                                             text_tokens)


def training_phases(arch: dict, shape: TrainShape, mode: str, checkpointing: bool,
                    depth: tuple[int, int] | None = None) -> dict[str, float]:
    """Bytes per training phase for ``mode``."""
    den = _denoiser(arch, depth)
    res, b = shape.resolution, shape.batch_size
    tokens = min(shape.max_sequence_length, arch["text_tokens"]) if arch["family"] == "flux" else None
    lora = shape.rank * den["lora_params_per_rank"]
    per_lora = 10 if shape.optimizer == "adamw8bit" else 16  # fp32 param + grad + two moments (8-bit: 1 B each)
    if shape.optimizer == "prodigy":
        per_lora = 24  # Prodigy keeps four fp32 tensors per parameter besides the weight
    tes = sum(component_bytes(arch, n) for n in text_encoder_names(arch))
    # Lean modes cache captions from fp8 text encoders (embeddings and norms stay 16-bit): ~1 byte per parameter.
    cached_tes = tes if mode == "bf16" or shape.train_text_encoder else sum(
        _fp8_encoder_bytes(arch["components"][n]) for n in text_encoder_names(arch))
    vae = component_bytes(arch, "vae")
    encode, _ = vae_decode_bytes(arch, res, res)  # encoding costs about what decoding does
    kind = "train_ckpt" if checkpointing else "train_full"
    step = denoiser_step_bytes(arch, kind, mode, res, b, shape.rank, depth, per_lora, tokens)
    if shape.train_text_encoder:
        step += tes + per_lora * 4 * shape.rank * 1e5  # CLIP attention LoRA: ~4e5 params per rank, small
    sample = shape.sample_resolution or res
    decode, _ = vae_decode_bytes(arch, sample, sample)
    sampling = weight_bytes(den, mode) + 4 * lora + vae + max(
        activation_bytes(arch, den, "generate", mode, sample, sample, 1, tokens), decode)
    return {"caching": max(cached_tes, vae + encode), "step": step, "sampling": sampling}


def generation_phases(arch: dict, mode: str, width: int, height: int, count: int = 1) -> dict[str, float]:
    den = _denoiser(arch, None)
    tes = {n: component_bytes(arch, n) for n in text_encoder_names(arch)}
    vae = component_bytes(arch, "vae")
    weights = weight_bytes(den, mode)
    act = activation_bytes(arch, den, "generate", mode, width, height, count)
    decode, _ = vae_decode_bytes(arch, width, height, count)
    if mode == "bf16":  # everything resident
        total = weights + sum(tes.values()) + vae
        return {"resident": total + max(act, decode)}
    if mode == "offload":  # text encoders swapped in layer by layer: the largest layer is the token embedding
        tes = {n: 2 * _embedding_params(arch["components"][n]["config"]) for n in tes}
    return {"text": max(tes.values()), "denoise": weights + act, "decode": vae + decode}


def _fp8_encoder_bytes(component: dict) -> int:
    """A text encoder under trainer.memory.modes.apply_text_encoder_mode: fp8 but embeddings and T5's ``wo``."""
    cfg = component["config"]
    sixteen_bit = _embedding_params(cfg) + cfg.get("d_ff", 0) * cfg.get("d_model", 0) * cfg.get("num_layers", 0)
    return component["params"] + sixteen_bit


def _embedding_params(config: dict) -> int:
    return config["vocab_size"] * config.get("d_model", config.get("hidden_size", 0))


# ------------------------------------------------------------------------------------------------- plans
@dataclass
class MemoryPlan:
    mode: str
    peak_gb: float
    budget_gb: float | None
    gradient_checkpointing: bool
    fits: bool
    phases: dict[str, float] = field(default_factory=dict)
    arch: str = ""
    note: str = ""

    def line(self) -> str:
        """One line for confirmations: ``memory: 14.2 GB of 24 GB (fp8, checkpointing)``."""
        if not self.arch:
            return f"memory: {self.note}"
        budget = f" of {self.budget_gb:g} GB" if self.budget_gb is not None else " (no GPU budget known)"
        extra = ", checkpointing" if self.gradient_checkpointing else ""
        return f"memory: {self.peak_gb:.1f} GB{budget} ({self.mode}{extra})"

    def as_dict(self) -> dict:
        return asdict(self)


def _fits(peak: float, budget: float | None) -> bool:
    return budget is None or peak / GB + RESERVE_GB <= budget


def plan_training(arch_name: str | None, shape: TrainShape, budget: float | None, mode: str = "auto",
                  depth: tuple[int, int] | None = None) -> MemoryPlan:
    """The fastest mode that fits ``budget`` (GB) — or the requested ``mode``; raises :class:`PlanError` when
    nothing fits, with the least memory any mode needs and what to change."""
    if mode not in ("auto", *TRAIN_MODES):
        raise ValueError(f"memory_mode: {mode!r} is not a training memory mode; choose one of auto, "
                         f"{', '.join(TRAIN_MODES)}")
    if arch_name is None:
        return MemoryPlan(mode="bf16" if mode == "auto" else mode, peak_gb=0.0, budget_gb=budget,
                          gradient_checkpointing=shape.gradient_checkpointing, fits=True,
                          note="built-in tiny model (CPU-sized, not planned)")
    arch = load_arch(arch_name)
    ckpts = [shape.gradient_checkpointing] + ([True] if not shape.gradient_checkpointing else [])
    # fp8 storage without checkpointing keeps an upcast copy of every weight for the backward pass (measured:
    # more than bf16), so fp8 is only planned with checkpointing.
    candidates = [(m, c) for m in (TRAIN_MODES if mode == "auto" else (mode,)) for c in ckpts if c or m != "fp8"]
    best = None
    for m, c in candidates:
        phases = training_phases(arch, shape, m, c, depth)
        plan = MemoryPlan(mode=m, peak_gb=round(max(phases.values()) / GB, 2), budget_gb=budget,
                          gradient_checkpointing=c, fits=_fits(max(phases.values()), budget),
                          phases={k: round(v / GB, 2) for k, v in phases.items()}, arch=arch_name)
        if plan.fits:
            return plan
        if best is None or plan.peak_gb < best.peak_gb:
            best = plan
    assert best is not None
    needs = math.ceil((best.peak_gb + RESERVE_GB) * 10) / 10  # rounded up: "needs 6 GB" must not fit in 6
    advice = _advice(arch_name, shape, mode)
    raise PlanError(f"this training needs about {needs:g} GB of GPU memory even in its leanest mode "
                    f"({best.mode}), but the budget is {budget:g} GB", needs, advice)


def _advice(arch_name: str, shape: TrainShape, mode: str) -> str:
    tips = []
    if mode != "auto":
        tips.append("use memory_mode auto")
    if shape.resolution > 512:
        tips.append(f"lower the resolution (now {shape.resolution})")
    if shape.batch_size > 1:
        tips.append("use batch size 1")
    if shape.rank > 16:
        tips.append(f"lower the rank (now {shape.rank})")
    if shape.train_text_encoder:
        tips.append("stop training the text encoder")
    if arch_name.startswith("flux"):
        tips.append("or train on sdxl or sd15, which need less")
    elif arch_name == "sdxl":
        tips.append("or train on sd15, which needs less")
    return "Try: " + ", ".join(tips) + "." if tips else "Use a GPU with more memory."


def plan_generation(arch_name: str | None, width: int, height: int, budget: float | None, count: int = 1,
                    mode: str = "auto") -> MemoryPlan | None:
    """The fastest generation mode that fits ``budget`` GB; None when none does (the caller waits)."""
    if arch_name is None:
        return MemoryPlan(mode="bf16", peak_gb=0.0, budget_gb=budget, gradient_checkpointing=False, fits=True,
                          note="built-in tiny model (CPU-sized, not planned)")
    arch = load_arch(arch_name)
    for m in (MODES if mode == "auto" else (mode,)):
        phases = generation_phases(arch, m, width, height, count)
        peak = max(phases.values())
        if _fits(peak, budget):
            return MemoryPlan(mode=m, peak_gb=round(peak / GB, 2), budget_gb=budget, gradient_checkpointing=False,
                              fits=True, phases={k: round(v / GB, 2) for k, v in phases.items()}, arch=arch_name)
    return None
