"""Shared fixtures for trainer tests: tiny models materialised once per session, synthetic datasets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.api import BaseModelRef, TrainItem
from trainer.synthetic import make_dataset as _make_dataset

TINY_FAMILIES = {"sd15": "tiny-sd15", "sdxl": "tiny-sdxl", "flux": "tiny-flux"}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Where built-in tiny models are saved (each once per session, on first use via ``ensure_builtin``)."""
    return tmp_path_factory.mktemp("models")


def tiny_ref(family: str) -> BaseModelRef:
    """A ``BaseModelRef`` for the tiny built-in model of ``family`` ("sd15", "sdxl", "flux")."""
    name = TINY_FAMILIES[family]
    return BaseModelRef(name=name, family=family, source=f"builtin:{name}")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_base() -> Callable[[str], BaseModelRef]:
    return tiny_ref


@pytest.fixture(scope="session")
def tiny_model_path(models_dir) -> Callable[[str], Path]:
    """``tiny_model_path("sd15")`` → the saved diffusers folder of that tiny model (built on first call)."""
    from trainer.tiny import ensure_builtin

    return lambda family: ensure_builtin(TINY_FAMILIES[family], models_dir)


@pytest.fixture
def make_dataset(tmp_path) -> Callable[..., list[TrainItem]]:
    """``make_dataset(count=12, scheme="orange-on-teal", size=64, seed=0, caption="shapes")`` → TrainItems
    written as PNGs under a fresh temp folder (see ``trainer.synthetic.SCHEMES``)."""
    counter = iter(range(1_000_000))

    def make(**kwargs) -> list[TrainItem]:
        return _make_dataset(tmp_path / f"dataset-{next(counter)}", **kwargs)

    return make


def write_test_lora(model_dir: Path, family: str, out_path: Path, *, seed: int = 0, scale: float = 0.3,
                    rank: int = 4) -> Path:
    """Write a diffusers-format LoRA ``.safetensors`` for the tiny model at ``model_dir`` without training:
    add a peft adapter to the denoiser, fill its (normally zero) B matrices with seeded noise, save it."""
    import torch
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from trainer.loading import pipeline_class

    if family == "flux":
        denoiser = FluxTransformer2DModel.from_pretrained(model_dir, subfolder="transformer")
    else:
        denoiser = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in denoiser.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))
    key = "transformer_lora_layers" if family == "flux" else "unet_lora_layers"
    out_path = Path(out_path)
    pipeline_class(family).save_lora_weights(out_path.parent, **{key: layers}, weight_name=out_path.name,
                                             safe_serialization=True)
    return out_path


@pytest.fixture(scope="session")
def lora_file(tmp_path_factory, tiny_model_path) -> Callable[..., Path]:
    """``lora_file("sd15", seed=1)`` → a cached perturbed-weights LoRA for that tiny model (see write_test_lora)."""
    folder = tmp_path_factory.mktemp("loras")
    made: dict[tuple, Path] = {}

    def make(family: str = "sd15", *, seed: int = 0, scale: float = 0.3) -> Path:
        key = (family, seed, scale)
        if key not in made:
            made[key] = write_test_lora(tiny_model_path(family), family,
                                        folder / f"{family}-{seed}-{scale}.safetensors", seed=seed, scale=scale)
        return made[key]

    return make
