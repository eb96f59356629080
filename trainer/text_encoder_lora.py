"""Text-encoder LoRA through peft directly: attach for training, load for generation.

transformers' own adapter mixin (``PreTrainedModel.add_adapter`` / ``load_adapter``, which diffusers'
``load_lora_weights`` calls for text encoders) demands a peft release of its choosing: transformers 5.24 refuses
every peft that PyPI has. peft's ``inject_adapter_in_model`` + ``set_peft_model_state_dict`` do the same work with no
such gate, so Atelier's text-encoder adapters never depend on which transformers is installed. The layers they make
are the ones diffusers' ``set_adapters`` / ``delete_adapters`` / ``enable_lora`` already drive with peft calls.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import set_peft_model_state_dict

# Prefixes a text-encoder tensor carries in the LoRA file formats Atelier reads: diffusers/peft component names and
# kohya's ``lora_te*`` names (SD1.5 ``lora_te_``, SDXL ``lora_te1_`` / ``lora_te2_``).
_TE_PREFIXES = ("text_encoder.", "text_encoder_2.", "lora_te_", "lora_te1_", "lora_te2_")


def attach(text_encoder: torch.nn.Module, config: LoraConfig, adapter_name: str) -> None:
    """Inject a fresh LoRA adapter into ``text_encoder``, keeping the configs of adapters already there."""
    previous = dict(getattr(text_encoder, "peft_config", None) or {})
    if adapter_name in previous:
        raise ValueError(f"an adapter named {adapter_name!r} is already loaded in this text encoder")
    inject_adapter_in_model(config, text_encoder, adapter_name=adapter_name)
    # peft's tuner replaces the model's ``peft_config`` with its own one-adapter dict; several Elements share a
    # text encoder at generation time, so keep the others' configs (diffusers lists adapters from this dict).
    text_encoder.peft_config = {**previous, **text_encoder.peft_config}
    # diffusers' ``delete_adapters`` drops a text encoder's adapter config only under transformers' flag for "holds
    # peft configs"; without it a deleted Element's name would stay listed (and block reloading it).
    text_encoder._hf_peft_config_loaded = True


def is_text_encoder_key(key: str) -> bool:
    return key.startswith(_TE_PREFIXES)


def load(pipe, state: dict[str, torch.Tensor], adapter_name: str) -> int:
    """Load the text-encoder part of a LoRA ``state`` (any key style diffusers reads) into ``pipe``'s text encoders.

    Key conversion (kohya → diffusers, alphas) is diffusers' own ``lora_state_dict``; the injection is peft's.
    Returns how many text encoders received the adapter.
    """
    from diffusers.utils.peft_utils import get_peft_kwargs
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    converted = pipe.lora_state_dict(state)
    state_dict, alphas = (converted[0], converted[1]) if isinstance(converted, tuple) else (converted, None)
    loaded = 0
    for name in ("text_encoder", "text_encoder_2"):
        text_encoder = getattr(pipe, name, None)
        prefix = f"{name}."
        part = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
        if text_encoder is None or not part:
            continue
        part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        if not hasattr(text_encoder, "text_model"):  # transformers 5 flattened CLIPTextModel
            part = {k.removeprefix("text_model."): v for k, v in part.items()}
        ranks = {k: v.shape[1] for k, v in part.items() if k.endswith(".lora_B.weight")}
        if not ranks:
            raise ValueError(f"the {name} part of this LoRA holds no lora_B weights")
        part_alphas = {k.removeprefix(prefix): v for k, v in (alphas or {}).items() if k.startswith(prefix)}
        config = LoraConfig(**get_peft_kwargs(ranks, part_alphas, part, is_unet=False))
        attach(text_encoder, config, adapter_name)
        result = set_peft_model_state_dict(text_encoder, part, adapter_name=adapter_name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if unexpected:
            raise ValueError(f"LoRA keys that fit no layer of the {name}: {unexpected[:3]}")
        text_encoder.to(device=text_encoder.device, dtype=text_encoder.dtype)
        loaded += 1
    return loaded
