"""Loading LoRA files safely: ``.safetensors`` only, header checked, and a load that changes nothing is an error.

Weights are read with ``safetensors`` (never unpickled) and handed to diffusers as a state dict, so diffusers'
own format conversion (diffusers / kohya / peft key styles) still applies; text-encoder tensors are injected with peft
directly (``trainer.text_encoder_lora``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from trainer import text_encoder_lora

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
_LORA_MARKERS = ("lora_a", "lora_b", "lora_down", "lora_up", "lora.down", "lora.up")


class LoraFileError(ValueError):
    """A LoRA file was refused; the message says what is wrong with it and what to do."""


def read_header(path: Path) -> dict:
    """Parse a safetensors header (8-byte little-endian length + JSON) without loading any tensor."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise LoraFileError(f"{path.name} is not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", raw_len)
            if n <= 1 or n > MAX_HEADER_BYTES or n + 8 > size:
                raise LoraFileError(f"{path.name} is not a valid safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise LoraFileError(f"LoRA file {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraFileError(f"{path.name} is not a valid safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{path.name} is not a valid safetensors file (header is not an object)")
    return header


def validate_lora_file(path: Path) -> list[str]:
    """Check ``path`` is a readable ``.safetensors`` file holding LoRA tensors; return its tensor names."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise LoraFileError(
            f"refusing to load {path.name}: only .safetensors LoRA files are accepted (got {path.suffix or 'no '}"
            " extension); .bin/.pt/.ckpt files can run code when loaded — convert the file to .safetensors"
        )
    header = read_header(path)
    keys = [k for k in header if k != "__metadata__"]
    if not keys:
        raise LoraFileError(f"{path.name} holds no tensors")
    if not any(marker in k.lower() for k in keys for marker in _LORA_MARKERS):
        raise LoraFileError(f"{path.name} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors)")
    return keys


def count_adapter_layers(pipe, adapter_name: str) -> int:
    """How many peft LoRA layers across the pipeline's LoRA-loadable components carry ``adapter_name``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    count = 0
    for component in getattr(pipe, "_lora_loadable_modules", ()):
        model = getattr(pipe, component, None)
        if model is None or not hasattr(model, "modules"):
            continue
        for module in model.modules():
            if isinstance(module, BaseTunerLayer) and adapter_name in getattr(module, "lora_A", {}):
                count += 1
    return count


def _registered(pipe, adapter_name: str) -> bool:
    return any(adapter_name in names for names in pipe.get_list_adapters().values())


def load_lora_into(pipe, path: Path, adapter_name: str) -> int:
    """Load the LoRA at ``path`` into ``pipe`` as ``adapter_name``; return the number of layers it patched.

    Raises ``LoraFileError`` for a non-safetensors file, a broken header, a name already in use, or a file whose keys
    match no layer of this pipeline (e.g. trained for another base family) — such a load is undone, never silent.
    """
    from safetensors.torch import load_file

    path = Path(path)
    validate_lora_file(path)
    if _registered(pipe, adapter_name):
        raise LoraFileError(f"an adapter named {adapter_name!r} is already loaded in this pipeline")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for truncated/corrupt data
        raise LoraFileError(f"{path.name} could not be read as safetensors: {exc}") from exc
    denoiser_part = {k: v for k, v in state.items() if not text_encoder_lora.is_text_encoder_key(k)}
    text_part = {k: v for k, v in state.items() if text_encoder_lora.is_text_encoder_key(k)}
    try:
        if denoiser_part:
            pipe.load_lora_weights(denoiser_part, adapter_name=adapter_name)
        if text_part:
            # Text encoders through peft directly: diffusers would go through transformers' adapter mixin,
            # which refuses peft releases it was not built against (see trainer/text_encoder_lora.py).
            text_encoder_lora.load(pipe, text_part, adapter_name)
    except Exception as exc:
        _discard(pipe, adapter_name)
        raise LoraFileError(
            f"{path.name} could not be loaded into this {type(pipe).__name__}: {exc}. "
            "Was it trained for a different base model family?"
        ) from exc
    layers = count_adapter_layers(pipe, adapter_name)
    if layers == 0:
        _discard(pipe, adapter_name)
        raise LoraFileError(
            f"{path.name} matched no layer of this {type(pipe).__name__} (0 of its {len(state)} tensors applied); "
            "it was probably trained for a different base model family"
        )
    return layers


def _discard(pipe, adapter_name: str) -> None:
    if _registered(pipe, adapter_name):
        pipe.delete_adapters(adapter_name)
