"""Build an architecture's components from its config (meta device: no memory, no weights) — for parameter
counts and for the memory bench, which runs real-size models with ``device="meta"`` or on a real device."""

from __future__ import annotations

import torch


def build_component(cls_name: str, config: dict, *, device="meta", dtype=torch.float32) -> torch.nn.Module:
    """``cls_name`` from diffusers or transformers, built from ``config`` on ``device`` in ``dtype``."""
    import diffusers
    import transformers

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if hasattr(diffusers, cls_name) and not cls_name.startswith(("CLIP", "T5")):
                return getattr(diffusers, cls_name)(**config)
            cls = getattr(transformers, cls_name)
            config_cls = {"CLIPTextModel": transformers.CLIPTextConfig,
                          "CLIPTextModelWithProjection": transformers.CLIPTextConfig,
                          "T5EncoderModel": transformers.T5Config}[cls_name]
            return cls(config_cls(**config))
    finally:
        torch.set_default_dtype(previous)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
