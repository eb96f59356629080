"""Resolve a base-model reference to a folder or hub id and load it as the right diffusers pipeline.

Every family always goes through ``<PipelineClass>.from_pretrained(path_or_id)`` — built-in tiny models are
first saved to a folder — so the path a user with downloaded weights takes is the one the tests exercise.
"""

from __future__ import annotations

from pathlib import Path

from trainer.api import BaseModelRef, FamilyName
from trainer.tiny import BUILTIN_FAMILIES, ensure_builtin

BUILTIN_PREFIX = "builtin:"

_PIPELINES: dict[tuple[str, bool], str] = {
    ("sd15", False): "StableDiffusionPipeline",
    ("sd15", True): "StableDiffusionImg2ImgPipeline",
    ("sdxl", False): "StableDiffusionXLPipeline",
    ("sdxl", True): "StableDiffusionXLImg2ImgPipeline",
    ("flux", False): "FluxPipeline",
    ("flux", True): "FluxImg2ImgPipeline",
}


class BaseModelLoadError(RuntimeError):
    """A base model could not be resolved or loaded; the message says which setting to change."""


def _hint(name: str) -> str:
    return f"set ATELIER_BASE_MODELS__{name}__SOURCE to a local diffusers folder"


def pipeline_class(family: FamilyName, *, img2img: bool = False):
    """The diffusers pipeline class for ``family`` (text-to-image, or image-to-image when ``img2img``)."""
    import diffusers

    try:
        return getattr(diffusers, _PIPELINES[(family, img2img)])
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of sd15, sdxl, flux") from None


def resolve_source(ref: BaseModelRef, models_dir: Path) -> str:
    """Turn ``ref.source`` into what ``from_pretrained`` takes: a local folder or a hub id.

    ``builtin:<name>`` is materialised under ``models_dir`` first. A path-looking source that does not exist is an
    error here rather than a confusing hub lookup later.
    """
    source = ref.source.strip()
    if source.startswith(BUILTIN_PREFIX):
        builtin = source[len(BUILTIN_PREFIX):]
        if builtin not in BUILTIN_FAMILIES:
            raise BaseModelLoadError(
                f"base model {ref.name!r} names unknown built-in {builtin!r}; built-ins are "
                f"{', '.join(BUILTIN_PREFIX + n for n in sorted(BUILTIN_FAMILIES))}"
            )
        if BUILTIN_FAMILIES[builtin] != ref.family:
            raise BaseModelLoadError(
                f"base model {ref.name!r} is declared family {ref.family!r} but {source} is "
                f"{BUILTIN_FAMILIES[builtin]!r}; fix ATELIER_BASE_MODELS__{ref.name}__FAMILY"
            )
        return str(ensure_builtin(builtin, Path(models_dir)))
    local = Path(source).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if source.startswith(("/", ".", "~")) or local.suffix or "\\" in source:
        raise BaseModelLoadError(
            f"could not load base model {ref.name!r} from {source}: no such folder; {_hint(ref.name)}"
        )
    return source  # a hub id such as "stabilityai/stable-diffusion-xl-base-1.0"


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device):
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (half precision is slow/unsupported there)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def dtype_kwarg(dtype) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` since diffusers deprecated ``torch_dtype`` (0.36-ish),
    ``torch_dtype`` before — detected by feature, so older diffusers load in the right precision too."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401 — only present with ``dtype``
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def load_pipeline(ref: BaseModelRef, models_dir: Path, *, device=None, dtype=None, img2img: bool = False,
                  memory_mode: str = "bf16", place: bool = True):
    """Load ``ref`` with ``from_pretrained`` (safetensors only) in ``dtype`` and, when ``place``, onto ``device``
    (both auto). ``memory_mode`` int8/nf4 loads the denoiser quantized by bitsandbytes (it lands on the GPU
    at once); fp8 and offload are applied later by the caller (trainer.memory.modes)."""
    import torch

    from trainer.memory.modes import quantization_config

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype if dtype is not None else default_dtype(device)
    source = resolve_source(ref, models_dir)
    cls = pipeline_class(ref.family, img2img=img2img)
    extra = {}
    try:
        quant = quantization_config(memory_mode, dtype)
        if quant is not None:
            denoiser_cls, sub = _DENOISERS[ref.family]
            extra[sub] = getattr(__import__("diffusers"), denoiser_cls).from_pretrained(
                source, subfolder=sub, quantization_config=quant, use_safetensors=True, **dtype_kwarg(dtype))
        if ref.family == "sd15":
            # SD1.5's safety checker (a 1.2 GB CLIP vision model) would black out images without telling anyone:
            # it is not loaded; moderation is the server's policy, not a silent filter (README).
            extra.update(safety_checker=None, requires_safety_checker=False)
        pipe = cls.from_pretrained(source, use_safetensors=True, **dtype_kwarg(dtype), **extra)
    except Exception as exc:  # hub/network/format errors all mean the same thing to the operator
        raise BaseModelLoadError(
            f"could not load base model {ref.name!r} from {source}: {type(exc).__name__}: {exc}; {_hint(ref.name)}"
        ) from exc
    if place:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_DENOISERS = {"sd15": ("UNet2DConditionModel", "unet"), "sdxl": ("UNet2DConditionModel", "unet"),
              "flux": ("FluxTransformer2DModel", "transformer")}
