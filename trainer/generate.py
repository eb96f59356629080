"""The generation engine: resident pipelines per base model, LoRA adapters cached per Element, one call per request.

``Generator.generate`` is synchronous (the worker runs it in a thread) and serialised by a lock, because a
diffusers pipeline and its active adapter set are shared mutable state.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from trainer.api import BaseModelRef, GenerationRequest, GenerationResult, GenerationStopped
from trainer.loading import default_device, default_dtype, load_pipeline
from trainer.lora_io import validate_lora_file
from trainer.pipeline_cache import PipelineCache, ResidentPipeline
from trainer.prompting import (
    DEFAULTS,
    MAX_COUNT,
    MAX_SEQUENCE_LENGTH,
    MAX_STEPS,
    check_strengths,
    insert_triggers,
    resolve_size,
    size_class,
)

HIRES_SCALE = 2
HIRES_DENOISE = 0.4  # enough to add detail at 2x, little enough to keep the first pass's composition
MAX_SEED = 2**63 - 1


class Generator:
    """Generate images for requests against named base models, keeping pipelines and adapters resident.

    ``stats`` counts pipeline_loads / pipeline_evictions / adapter_loads / adapter_evictions / adapter_switches /
    generations, which is how tests and operators see what was reused.
    """

    def __init__(self, models_dir: Path, *, max_pipelines: int = 2, max_adapters: int = 8, device=None,
                 dtype=None) -> None:
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.models_dir = Path(models_dir)
        self.max_adapters = max_adapters
        self._device = device
        self._dtype = dtype
        self.stats: Counter = Counter()
        self._cache = PipelineCache(self._load, max_pipelines, counters=self.stats)
        self._lock = threading.Lock()

    @property
    def device(self):
        import torch

        return torch.device(self._device) if self._device is not None else default_device()

    def _load(self, ref: BaseModelRef, mode: str = "bf16"):
        """Load ``ref`` in generation memory ``mode``: bf16 → every component resident on the device; fp8 /
        int8 / NF4 → a leaner denoiser and components taking turns on the GPU (diffusers model offload);
        offload → denoiser and text encoders swapped in block by block (diffusers group offloading)."""
        dtype = self._dtype if self._dtype is not None else default_dtype(self.device)
        gpu = self.device.type == "cuda"
        quantized = mode if mode in ("int8", "nf4") and gpu else "bf16"
        pipe = load_pipeline(ref, self.models_dir, device=self.device, dtype=dtype, memory_mode=quantized,
                             place=mode == "bf16" or not gpu)
        if gpu and mode != "bf16":
            _apply_generation_mode(pipe, mode, self.device, dtype)
        self.stats[f"loads_{mode}"] += 1
        return pipe

    def memory_plan(self, base: BaseModelRef, request: GenerationRequest, budget_gb: float | None):
        """The fastest generation mode whose peak fits ``budget_gb`` (None: unknown budget → bf16), or None when
        nothing fits — the caller then waits for the GPU (worker.fairshare)."""
        from trainer.memory.planner import arch_for, plan_generation

        cls = size_class(base.family, base.source, base.arch)
        width, height, _ = resolve_size(cls, width=request.width, height=request.height, aspect=request.aspect)
        if request.hires:
            width, height = width * HIRES_SCALE, height * HIRES_SCALE
        arch = base.arch or arch_for(base.name, base.family, base.source)
        return plan_generation(arch, width, height, budget_gb, count=request.count)

    def modes(self) -> dict[BaseModelRef, str]:
        """Resident base models and the memory mode each was loaded in."""
        with self._lock:
            return self._cache.modes()

    def resident(self) -> list[BaseModelRef]:
        """Base models currently loaded, least recently used first."""
        return self._cache.keys()

    def pipeline(self, base: BaseModelRef) -> ResidentPipeline:
        """The resident pipeline for ``base`` (loaded on first use); exposed for benchmarks and warm-up."""
        with self._lock:
            return self._cache.get(base)

    def close(self) -> None:
        """Release every resident pipeline."""
        with self._lock:
            self._cache.clear()

    def generate(self, base: BaseModelRef, request: GenerationRequest,
                 stop: Callable[[], bool] | None = None, *, mode: str = "bf16") -> GenerationResult:
        """Run one request; raises ``ValueError`` (incl. ``LoraFileError``) for requests that cannot be served.

        ``stop`` is polled after every denoising step; when it returns True the run ends there and
        ``GenerationStopped`` is raised (a timeout or a cancel must free the engine, not leave it running).
        ``mode`` is the memory mode from :meth:`memory_plan`; a resident copy in another mode is released first.
        """
        warnings = _validate(base, request)
        cls = size_class(base.family, base.source, base.arch)
        width, height, size_warnings = resolve_size(cls, width=request.width, height=request.height,
                                                    aspect=request.aspect)
        warnings += size_warnings
        default_steps, default_guidance = DEFAULTS[cls]
        steps = request.steps if request.steps is not None else default_steps
        guidance = request.guidance if request.guidance is not None else default_guidance
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        seeds = [seed + i for i in range(request.count)]
        prompt = insert_triggers(request.prompt, [lora.trigger for lora in request.loras])
        negative = request.negative_prompt.strip()
        if negative and base.family == "flux":
            warnings.append("negative prompts are not used by Flux models; it was ignored")
            negative = ""

        with self._lock:
            self.warnings = warnings  # _run adds what the pipeline reports (e.g. a safety checker's verdict)
            entry = self._cache.get(base, mode)
            entry.activate(request.loras, self.max_adapters)
            hook = _step_hook(stop)
            extra = {"max_sequence_length": MAX_SEQUENCE_LENGTH[cls]} if cls in MAX_SEQUENCE_LENGTH else {}
            images = self._run(entry, hook, prompt, negative, seeds, steps, guidance, width, height, **extra)
            if request.hires:
                width, height = width * HIRES_SCALE, height * HIRES_SCALE
                # A 2× pass decodes up to 2048 px: tile the VAE there (an untiled decode alone needs several GB).
                entry.pipe.vae.enable_tiling()
                images = self._hires(entry, hook, images, prompt, negative, seeds, steps, guidance, width, height)
            self.stats["generations"] += 1
        return GenerationResult(images=images, seed=seed, seeds=seeds, prompt=prompt, warnings=warnings,
                                width=width, height=height)

    def _generators(self, seeds: list[int]):
        import torch

        # CPU generators: the same seed gives the same noise on any device.
        return [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

    def _run(self, entry: ResidentPipeline, hook, prompt, negative, seeds, steps, guidance, width, height,
             **extra) -> list:
        kwargs = dict(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, width=width,
                      height=height, num_images_per_prompt=len(seeds), generator=self._generators(seeds),
                      callback_on_step_end=hook, **extra)
        if negative:
            kwargs["negative_prompt"] = negative
        out = entry.pipe(**kwargs)
        flagged = sum(bool(f) for f in (getattr(out, "nsfw_content_detected", None) or []))
        if flagged:  # a pipeline that brought its own safety checker: say what it blacked out
            self.warnings.append(f"{flagged} image(s) were blacked out by the base model's safety checker")
        return _finished(entry.pipe, out.images)

    def _hires(self, entry: ResidentPipeline, hook, images, prompt, negative, seeds, steps, guidance, width,
               height) -> list:
        """Second pass: upscale 2x and re-denoise lightly with img2img built from the same modules."""
        from PIL import Image

        upscaled = [img.resize((width, height), Image.LANCZOS) for img in images]
        # img2img runs int(steps * strength) steps; keep at least 2 so the pass really refines.
        hires_steps = max(steps, math.ceil(2 / HIRES_DENOISE))
        n = len(upscaled)  # one prompt per image: img2img's batch is prompts x num_images_per_prompt
        kwargs = dict(prompt=[prompt] * n, image=upscaled, strength=HIRES_DENOISE,
                      num_inference_steps=hires_steps, guidance_scale=guidance, generator=self._generators(seeds),
                      callback_on_step_end=hook)
        if entry.ref.family == "flux":
            kwargs.update(width=width, height=height)
        if negative:
            kwargs["negative_prompt"] = [negative] * n
        pipe = entry.img2img()
        return _finished(pipe, pipe(**kwargs).images)


def _apply_generation_mode(pipe, mode: str, device, dtype) -> None:
    """GPU memory modes for a generation pipeline, all through diffusers' own hooks."""
    import torch

    from trainer.memory.modes import FP8

    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    if mode == "fp8":
        denoiser.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=dtype)
    if mode == "offload":
        from diffusers.hooks import apply_group_offloading

        for name in ("text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                                       offload_type="leaf_level", use_stream=True)
        denoiser.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                      offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        pipe.vae.to(device)
        return
    pipe.enable_model_cpu_offload(device=device)  # components take turns on the GPU


def _step_hook(stop: Callable[[], bool] | None):
    """A diffusers ``callback_on_step_end`` that interrupts the pipeline once ``stop()`` is true (None: no hook)."""
    if stop is None:
        return None

    def hook(pipe, _step, _timestep, callback_kwargs):
        if stop():
            pipe._interrupt = True  # diffusers' own flag: the denoising loop skips the remaining steps
        return callback_kwargs

    return hook


def _finished(pipe, images) -> list:
    """The images of a run that was not interrupted; the flag is reset so the resident pipeline stays usable."""
    if getattr(pipe, "_interrupt", False):
        pipe._interrupt = False
        raise GenerationStopped("the generation was stopped")
    return list(images)


def _validate(base: BaseModelRef, request: GenerationRequest) -> list[str]:
    """Refuse what cannot run (ValueError with a reason); return warnings for what runs but looks risky."""
    if not 1 <= request.count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}; got {request.count}")
    if request.steps is not None and not 1 <= request.steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}; got {request.steps}")
    if request.guidance is not None and not 0 <= request.guidance <= 30:
        raise ValueError(f"guidance must be between 0 and 30; got {request.guidance}")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED - MAX_COUNT:
        raise ValueError(f"seed must be between 0 and {MAX_SEED - MAX_COUNT}; got {request.seed}")
    if not request.prompt.strip() and not request.loras:
        raise ValueError("the prompt is empty; describe what to generate")
    keys = [lora.key for lora in request.loras]
    if len(set(keys)) != len(keys):
        raise ValueError("the same Element is listed twice; list each Element once with one strength")
    warnings = check_strengths([lora.strength for lora in request.loras],
                               names=[lora.trigger or lora.key for lora in request.loras])
    for lora in request.loras:
        validate_lora_file(Path(lora.path))  # refuse non-safetensors before touching the pipeline
    return warnings
