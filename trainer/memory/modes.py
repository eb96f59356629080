"""Put a frozen denoiser into a memory mode with the libraries' own tools (nothing hand-written):

* ``bf16`` — weights in bf16 (fp16 on GPUs without bf16, fp32 on a CPU).
* ``fp8`` — diffusers layerwise casting: weights stored in float8_e4m3fn, each layer upcast to the compute dtype
  only while it runs.
* ``int8`` / ``nf4`` — bitsandbytes through diffusers' ``BitsAndBytesConfig`` at load time (LLM.int8 weight-only;
  4-bit NormalFloat with double quantization, i.e. QLoRA). CUDA only.
* ``offload`` (generation only, trainer.generate) — diffusers group offloading ("block swap"): weights live in
  CPU memory and each block is brought to the GPU (prefetched on a side stream) just before it runs.

LoRA parameters stay fp32 in every mode; gradient checkpointing is independent of the mode.
"""

from __future__ import annotations

import functools

import torch

FP8 = torch.float8_e4m3fn


def quantization_config(mode: str, compute_dtype: torch.dtype):
    """diffusers ``BitsAndBytesConfig`` for the quantized modes (None for the others)."""
    if mode not in ("int8", "nf4"):
        return None
    if not torch.cuda.is_available():
        raise RuntimeError(f"memory mode {mode!r} uses bitsandbytes, which needs a CUDA GPU; use 'fp8' or 'bf16'")
    try:
        import bitsandbytes  # noqa: F401 — fail here, with the fix, rather than deep inside from_pretrained
        from diffusers import BitsAndBytesConfig
    except ImportError:
        raise RuntimeError(f"memory mode {mode!r} needs the bitsandbytes package: pip install 'atelier[optim]'") \
            from None
    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


# Convolutions stay 16-bit in fp8 mode: their backward reads the weight tensor itself, which layerwise casting has
# put back into fp8 storage by then ("expected scalar type BFloat16 but found Float8_e4m3fn"); a linear layer's
# backward reads a transposed view that still holds the upcast copy. Flux has no convolutions in its transformer;
# they hold 69 % of SD1.5's UNet weights and 13 % of SDXL's (trainer/memory/archs), which fp8 saves less on.
FP8_KEEP_16BIT = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def apply_storage_mode(denoiser: torch.nn.Module, mode: str, compute_dtype: torch.dtype) -> None:
    """Before LoRA is added: fp8 storage via layerwise casting. (Cast after LoRA, the recomputed forward of a
    checkpointed block hands fp8 weights to the backward pass; cast before, it works — see the tests — but peft
    creates the LoRA weights in fp8: :func:`reinit_lora_fp32` redoes them in fp32.)"""
    if mode == "fp8":
        denoiser.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=compute_dtype,
                                          skip_modules_classes=FP8_KEEP_16BIT)


# Kept 16-bit: norms and embeddings (diffusers casts nn.Embedding too; T5's are "shared" and the relative
# attention bias) and T5's ``wo``, whose forward casts its input to the *stored* weight dtype before the upcast hook.
ENCODER_SKIP = ("norm", "embed", "shared", "relative_attention_bias", r"\.wo$")


def apply_text_encoder_mode(encoder: torch.nn.Module, mode: str, compute_dtype: torch.dtype) -> None:
    """In every lean mode the frozen text encoders (T5-XXL: 9.5 GB in bf16) are cached from fp8 storage, as
    kohya's ``--fp8_base`` does; diffusers' layerwise casting works on any module, transformers' included."""
    if mode == "bf16":
        return
    from diffusers.hooks import apply_layerwise_casting

    apply_layerwise_casting(encoder, storage_dtype=FP8, compute_dtype=compute_dtype,
                            skip_modules_pattern=ENCODER_SKIP)


def enable_checkpointing(denoiser: torch.nn.Module) -> None:
    """Gradient checkpointing that also works under fp8 layerwise casting. The recomputed forward runs the casting
    hooks again, so the tensors it saves need not carry the first pass's metadata; torch's check of that is off
    (the gradients match a non-checkpointed run exactly; see the tests)."""
    denoiser.enable_gradient_checkpointing(functools.partial(
        torch.utils.checkpoint.checkpoint, use_reentrant=False, determinism_check="none"))


def reinit_lora_fp32(denoiser: torch.nn.Module, mode: str, seed: int) -> None:
    """fp8 mode: peft created the LoRA weights in the base layer's fp8; they were upcast to fp32 by the trainer,
    so draw the seeded initialisation again at full precision (peft's own ``reset_lora_parameters``)."""
    if mode != "fp8":
        return
    from peft.tuners.lora import LoraLayer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in denoiser.modules():
            if isinstance(module, LoraLayer):
                for name in module.lora_A:
                    module.reset_lora_parameters(name, "gaussian")
