"""Public entry point: :func:`train_lora` — load → cache → train (resumable) → export.

Output folder layout::

    out_dir/
      <name>.safetensors          diffusers-format LoRA (pipeline.load_lora_weights)
      <name>_kohya.safetensors    kohya/A1111/ComfyUI-format LoRA with ss_* metadata
      element.json                what this Element is and how it was trained
      loss_curve.png, grid.png    loss per step; epoch × strength grid
      epochs/epoch-N.safetensors  diffusers-format LoRA of each saved epoch
      samples/epoch-N/sample-K.png
      checkpoints/epoch-N/        last complete epoch (resume point)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from trainer.api import (
    BaseModelRef,
    NullControl,
    ProgressCallback,
    ProgressEvent,
    TrainControl,
    TrainItem,
    TrainResult,
)
from trainer.caching import cache_latents, cache_text, encode_captions, make_batch, offload
from trainer.checkpoint import TrainState, latest_checkpoint, restore_rng, rng_state, save_checkpoint
from trainer.config import TrainingConfig
from trainer.data import Slot, build_samples, dataset_hash, optimizer_steps, steps_per_epoch, total_steps
from trainer.export import cast_lora, read_diffusers_lora, save_diffusers_lora
from trainer.families import Runtime, TrainFamily, family_class
from trainer.loading import load_pipeline
from trainer.loop import LoopParts, TrainingLoop
from trainer.memory.modes import apply_storage_mode, apply_text_encoder_mode, reinit_lora_fp32
from trainer.optim import build_optimizer, build_scheduler, check_optimizer_available
from trainer.outputs import grid_epochs, render_samples, write_bundle
from trainer.strength_sweep import SweepResult, run_sweep

# Config fields that only shape outputs; changing them between attempts must not block a resume.
OUTPUT_ONLY_FIELDS = {"sample_every_n_epochs", "sample_prompts", "sample_steps", "sample_guidance", "sample_seed",
                      "sample_resolution", "grid", "grid_strengths", "recommended_strength", "output_name",
                      "strength_sweep", "save_every_n_steps",
                      "save_precision", "save_every_n_epochs", "device"}
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_runtime(config: TrainingConfig, base: BaseModelRef | None = None) -> Runtime:
    """Device and precision for this machine; half precision on a CPU falls back to fp32 with a note."""
    notes: list[str] = []
    has_cuda = torch.cuda.is_available()
    if config.device == "cuda" and not has_cuda:
        raise RuntimeError("device: 'cuda' was requested but no CUDA GPU is available; use device='auto'")
    device = torch.device("cuda" if (config.device != "cpu" and has_cuda) else "cpu")
    precision = config.mixed_precision
    mode = resolve_memory_mode(config, base, device, notes)
    if device.type == "cpu" and mode == "fp8":
        precision = "bf16"  # layerwise casting upcasts fp8 to a 16-bit compute dtype (CPU autocast does bf16)
    elif device.type == "cpu" and precision != "no":
        notes.append(f"mixed_precision={precision!r} needs a GPU; trained in fp32 on the CPU")
        precision = "no"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        notes.append("this GPU has no bf16 support; trained with fp16 instead")
        precision = "fp16"
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Runtime(device=device, weight_dtype=dtype, autocast=precision != "no", notes=notes, memory_mode=mode)


def resolve_memory_mode(config: TrainingConfig, base: BaseModelRef | None, device: torch.device,
                        notes: list[str]) -> str:
    """The config's mode; ``auto`` (a run not planned by the queue) is planned here against this GPU's memory.
    On a CPU only an explicit ``fp8`` applies; ``auto`` means plain weights there."""
    from trainer.memory.planner import GB, TrainShape, arch_for, plan_training

    mode = config.memory_mode
    if device.type != "cuda":
        if mode in ("int8", "nf4"):  # bitsandbytes kernels need a CUDA device
            notes.append(f"memory_mode={mode!r} needs a GPU; trained without it on the CPU")
        return "fp8" if mode == "fp8" else "bf16"  # fp8 storage works anywhere (and is tested on the CPU)
    if mode != "auto":
        return mode
    arch = (base.arch or arch_for(base.name, base.family, base.source)) if base is not None else None
    budget = torch.cuda.get_device_properties(device).total_memory / GB
    return plan_training(arch, TrainShape.of(config), budget).mode


def place_denoiser(family: TrainFamily) -> None:
    """After caching: the denoiser onto the GPU (quantized bitsandbytes weights are there already)."""
    runtime = family.runtime
    if runtime.memory_mode not in ("int8", "nf4"):
        family.denoiser.to(runtime.device)


def run_fingerprint(config: TrainingConfig, base: BaseModelRef, items: list[TrainItem]) -> str:
    """What a checkpoint must match to be resumed: training-relevant config, base model, images + captions."""
    relevant = config.model_dump(exclude=OUTPUT_ONLY_FIELDS)
    payload = json.dumps({"config": relevant, "base": [base.family, base.source], "data": dataset_hash(items)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def output_name(config: TrainingConfig, element_name: str) -> str:
    raw = config.output_name or element_name or config.trigger or "lora"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._") or "lora"
    return slug[:80]


def _check_request(config: TrainingConfig, base: BaseModelRef, items: list[TrainItem]) -> None:
    if base.family != config.family:
        raise ValueError(f"family: the config is for {config.family!r} but base model {base.name!r} is "
                         f"{base.family!r}; build the config for {base.family!r}")
    if not items:
        raise ValueError("items: no training images; add images to the dataset first")


@contextmanager
def ema_weights(ema, params):
    """Temporarily swap the EMA weights into ``params`` (a no-op without EMA)."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


@contextmanager
def vae_on_device(family: TrainFamily):
    """The VAE lives off the GPU after caching; bring it back while decoding samples."""
    vae = family.vae
    home = next(vae.parameters()).device
    vae.to(family.runtime.device)
    try:
        yield
    finally:
        vae.to(home)


class Sampler:
    """Sample images from the live pipeline with fixed seeds; prompt embeddings cached while the TE is frozen."""

    def __init__(self, family: TrainFamily, config: TrainingConfig, prompts: list[str]) -> None:
        self.family, self.config, self.prompts = family, config, prompts
        self.cached = None if family.trains_text_encoder else encode_captions(family, [*prompts, ""])

    def _embeds(self, caption: str) -> dict[str, torch.Tensor]:
        row = self.cached[caption] if self.cached is not None else encode_captions(self.family, [caption])[caption]
        return {k: v.unsqueeze(0) for k, v in row.items()}

    def image(self, prompt: str, seed: int):
        cfg = self.config
        with vae_on_device(self.family):
            return self.family.sample(self._embeds(prompt), self._embeds(""), seed=seed,
                                      size=cfg.sample_resolution or cfg.resolution, steps=cfg.sample_steps,
                                      guidance=cfg.sample_guidance)


def train_lora(config: TrainingConfig, base: BaseModelRef, items: list[TrainItem], out_dir: Path, *,
               models_dir: Path, on_progress: ProgressCallback | None = None, control: TrainControl | None = None,
               element_name: str = "", category: str = "",
               on_checkpoint: Callable[[Path], None] | None = None) -> TrainResult:
    """Train a LoRA for ``base`` on ``items`` into ``out_dir``; resumes from ``out_dir``'s last checkpoint.

    Raises ``TrainingCancelled`` when ``control.cancelled()`` turns true (checked between steps; the last epoch
    checkpoint stays usable), ``ValueError`` for bad input (wrong family, unreadable image, foreign checkpoint),
    ``OptimizerUnavailable`` when the optimizer's package is missing, ``BaseModelLoadError`` when the base cannot
    be loaded. ``on_checkpoint(folder)`` runs after each epoch checkpoint is complete (e.g. to copy it off the
    machine) and before the next epoch starts.
    """
    control = control or NullControl()
    emit = on_progress or (lambda _event: None)
    _check_request(config, base, items)
    check_optimizer_available(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = build_samples(items, config)
    fingerprint = run_fingerprint(config, base, items)
    ckpt = latest_checkpoint(out_dir, fingerprint)
    state = ckpt.state if ckpt else TrainState()
    resumed_from = state.epoch
    runtime = resolve_runtime(config, base)
    clock, before = time.monotonic(), state.elapsed_seconds
    total = total_steps(samples, config)

    def elapsed() -> float:
        return before + time.monotonic() - clock

    def event(phase: str, **kw) -> ProgressEvent:
        return ProgressEvent(step=state.global_step, total_steps=total, epoch=state.epoch,
                             total_epochs=config.epochs, phase=phase,  # type: ignore[arg-type]
                             elapsed_seconds=elapsed(), **kw)

    emit(event("loading"))
    # Everything loads to CPU memory first; the text encoders and the VAE visit the GPU for caching and leave
    # before the denoiser arrives, so their memory and the denoiser's never add up (trainer.memory.planner).
    pipe = load_pipeline(base, models_dir, device=runtime.device, dtype=runtime.weight_dtype,
                         memory_mode=runtime.memory_mode, place=False)
    family = family_class(config.family)(pipe, config, runtime)
    apply_storage_mode(family.denoiser, runtime.memory_mode, runtime.weight_dtype)
    family.add_lora()
    reinit_lora_fp32(family.denoiser, runtime.memory_mode, config.seed)

    emit(event("caching"))
    if not family.trains_text_encoder:
        for encoder in family.text_encoders().values():
            apply_text_encoder_mode(encoder, runtime.memory_mode, runtime.weight_dtype)
    for module in [family.vae, *family.text_encoders().values()]:
        module.to(runtime.device)
    if runtime.weight_dtype == torch.float16:
        family.vae.to(torch.float32)  # fp16 VAEs (SDXL's notably) overflow when encoding
    latents = cache_latents(family, samples)
    family.vae.to(runtime.weight_dtype)
    text_cache = None if family.trains_text_encoder else cache_text(family, samples, config)
    prompts = config.resolved_sample_prompts()
    sampler = Sampler(family, config, prompts or [config.trigger or "a picture"])
    offload(family, text_encoders=not family.trains_text_encoder)
    place_denoiser(family)

    optimizer = build_optimizer(family.param_groups(), config)
    scheduler = build_scheduler(optimizer, config, optimizer_steps(samples, config))
    scaler = torch.amp.GradScaler("cuda") if runtime.fp16 else None
    noise_gen = torch.Generator("cpu").manual_seed(config.seed)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    ema = None
    if config.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=config.ema_decay)
    if ckpt:
        family.load_lora_state(ckpt.lora)
        optimizer.load_state_dict(ckpt.optimizer)
        scheduler.load_state_dict(ckpt.scheduler)
        if scaler is not None and ckpt.scaler:
            scaler.load_state_dict(ckpt.scaler)
        if ema is not None and ckpt.ema:
            ema.load_state_dict(ckpt.ema)
            ema.to(runtime.device)
        restore_rng(noise_gen, ckpt.rng)

    def checkpoint() -> None:
        state.elapsed_seconds = elapsed()
        saved = save_checkpoint(out_dir, fingerprint=fingerprint, state=state, lora=family.lora_state(),
                                optimizer=optimizer, scheduler=scheduler, scaler=scaler, rng=rng_state(noise_gen),
                                ema=ema)
        if on_checkpoint is not None:
            on_checkpoint(saved)

    last_saved = [state.global_step]

    def after_update(epoch: int, batches: int) -> None:
        """Mid-epoch checkpoint every ``save_every_n_steps`` (the epoch end writes its own)."""
        n = config.save_every_n_steps
        if n and state.global_step - last_saved[0] >= n and state.epoch_step < batches:
            checkpoint()
            last_saved[0] = state.global_step

    parts = LoopParts(family, config, samples, latents, text_cache, optimizer, scheduler, scaler, noise_gen, ema)
    loop = TrainingLoop(parts, state, total_steps=total, emit=emit, control=control, elapsed=elapsed,
                        after_update=after_update)
    pipeline_cls = type(pipe)
    save_dtype = SAVE_DTYPES[config.save_precision]
    for epoch in range(state.epoch + 1, config.epochs + 1):
        loop.run_epoch(epoch, skip=state.epoch_step if epoch == state.epoch + 1 else 0)
        if epoch in config.saved_epochs():
            path = out_dir / "epochs" / f"epoch-{epoch}.safetensors"
            with ema_weights(ema, trainable):
                save_diffusers_lora(pipeline_cls, path, cast_lora(family.lora_state(), save_dtype),
                                    family.adapter_metadata(), {"atelier_epoch": str(epoch)})
            state.epoch_weights[epoch] = str(path.relative_to(out_dir))
        if prompts and epoch in config.sample_epochs():
            loop.check_control()
            emit(event("sampling"))
            paths = render_samples(lambda k, seed: sampler.image(prompts[k], seed), len(prompts), out_dir,
                                   epoch, config.sample_seed)
            state.samples[epoch] = [str(p.relative_to(out_dir)) for p in paths]
            emit(event("sampling", sample_paths=paths))
        state.epoch, state.epoch_step = epoch, 0
        checkpoint()
        last_saved[0] = state.global_step

    if ema is not None:
        ema.copy_to(trainable)  # the exported Element (sweep, grid, files) is the averaged one
    sweep = None
    if config.strength_sweep:
        loop.check_control()
        emit(event("sampling"))
        sweep = _strength_sweep(family, sampler, config, samples, latents, text_cache)
    emit(event("exporting"))
    grid_cells = _grid_cells(family, sampler, config, out_dir, state)
    result = write_bundle(
        family=family, pipeline_cls=pipeline_cls, config=config, base=base, items=items, samples=samples,
        out_dir=out_dir, state=state, name=output_name(config, element_name), element_name=element_name,
        category=category or config.category, grid_cells=grid_cells, total_steps=total,
        resumed_from=resumed_from, steps_per_epoch=steps_per_epoch(samples, config), sweep=sweep,
    )
    emit(event("done", loss=state.losses[-1] if state.losses else None))
    return result


SWEEP_PROMPTS, SWEEP_IMAGES, SWEEP_DRAWS = 2, 8, 2


def _strength_sweep(family: TrainFamily, sampler: Sampler, config: TrainingConfig, samples: list,
                    latents, text_cache) -> SweepResult:
    """Render the sample prompts at each sweep strength and score them against the dataset (see strength_sweep)."""
    prompts = sampler.prompts[:SWEEP_PROMPTS]
    picks = list({s.image: s for s in samples}.values())[:SWEEP_IMAGES]  # one placement per image

    def render(strength: float, k: int):
        with family.lora_strength(strength):
            return [sampler.image(prompts[k], config.sample_seed + k)]

    @torch.no_grad()
    def denoise_loss(strength: float) -> float:
        gen = torch.Generator("cpu").manual_seed(config.seed + 1)  # the same draws at every strength
        family.train_mode(False)
        total = 0.0
        with family.lora_strength(strength):
            for sample in picks:
                batch = make_batch([Slot(sample.index, 0, False)], samples, latents, text_cache, config)
                text = batch.text if batch.text is not None else family.encode_text(batch.captions)
                for _ in range(SWEEP_DRAWS):
                    total += float(family.loss(batch, text, gen))
        return total / (len(picks) * SWEEP_DRAWS)

    images = []
    for s in picks:
        with Image.open(s.image_path) as img:
            images.append(img.convert("RGB"))
    return run_sweep(render, denoise_loss, images, size=config.sample_resolution or config.resolution,
                     device=family.runtime.device, prompts=len(prompts))


def _grid_cells(family: TrainFamily, sampler: Sampler, config: TrainingConfig, out_dir: Path,
                state: TrainState) -> dict | None:
    """Images for the epoch × strength grid, rendered with the training pipeline and each epoch's saved
    weights (no second copy of the base model in memory); strength 0 is the base alone, rendered once."""
    if not config.grid:
        return None
    epochs = grid_epochs(sorted(state.epoch_weights))
    final = family.lora_state()
    prompt = sampler.prompts[0]
    cells = {}
    try:
        base_img = None
        for e in epochs:
            family.load_lora_state(read_diffusers_lora(out_dir / state.epoch_weights[e]))
            for s in config.grid_strengths:
                if s == 0 and base_img is not None:
                    cells[(e, s)] = base_img
                    continue
                with family.lora_strength(s):
                    cells[(e, s)] = sampler.image(prompt, config.sample_seed)
                if s == 0:
                    base_img = cells[(e, s)]
    finally:
        family.load_lora_state(final)
    return {"epochs": epochs, "strengths": list(config.grid_strengths), "cells": cells, "prompt": prompt}
