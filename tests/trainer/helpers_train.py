"""Helpers for the training tests: small configs for the tiny bases, a scripted TrainControl, image comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.config import TrainingConfig
from trainer.train import train_lora

from .conftest import tiny_ref


def fast_config(family: str, image_count: int = 4, **overrides) -> TrainingConfig:
    """A character preset shrunk for the tiny bases: 64 px, 2 epochs × 1 repeat, 2-step samples, short T5."""
    values = dict(resolution=64, bucket_step=16, epochs=2, repeats=1, sample_steps=2,
                  sample_prompts=["{trigger} shapes"], max_sequence_length=32, learning_rate=2e-3,
                  text_encoder_lr=1e-3 if family != "flux" else None, lr_warmup_steps=0, caption_dropout=0.0,
                  grid_strengths=[0.0, 1.0], gradient_checkpointing=False, save_precision="fp32")
    values.update(overrides)
    return TrainingConfig.for_request("character", family, image_count, "ohwx", **values)


def train_recording(family: str, config: TrainingConfig, items, out_dir: Path, models_dir: Path, control=None):
    """Trains on the tiny base of ``family``; returns the result and every progress event (also fed to
    ``control``)."""
    events = []

    def on_progress(event) -> None:
        events.append(event)
        if control is not None:
            control.on_progress(event)

    result = train_lora(config, tiny_ref(family), items, out_dir, models_dir=models_dir, on_progress=on_progress,
                        control=control)
    return result, events


class ScriptedControl:
    """Cancels once ``cancel_after_steps`` training steps were reported; counts pause points."""

    def __init__(self, cancel_after_steps: int | None = None) -> None:
        self.cancel_after_steps = cancel_after_steps
        self.steps_seen = 0
        self.pause_points = 0
        self.cancel_checks_after_cancel = 0

    def on_progress(self, event) -> None:
        if event.phase == "training":
            self.steps_seen = event.step

    def cancelled(self) -> bool:
        hit = self.cancel_after_steps is not None and self.steps_seen >= self.cancel_after_steps
        if hit:
            self.cancel_checks_after_cancel += 1
        return hit

    def pause_point(self) -> None:
        self.pause_points += 1


def generate(pipe, prompt: str = "ohwx shapes", seed: int = 0) -> np.ndarray:
    """A deterministic 64 px, 2-step image as a float array in [0, 1]."""
    import torch

    out = pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator("cpu").manual_seed(seed))
    return np.asarray(out.images[0], dtype=np.float64)


def lora_deltas(pipe, adapter: str) -> dict[str, np.ndarray]:
    """Effective weight change (scale included) of every LoRA layer carrying ``adapter``, by module path."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    deltas = {}
    for comp in ("unet", "transformer", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, comp, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer) and adapter in getattr(module, "lora_A", {}):
                deltas[f"{comp}.{name}"] = module.get_delta_weight(adapter).detach().double().numpy()
    return deltas


def expected_deltas(lora: dict[str, dict], alpha: float, rank: int) -> dict[str, np.ndarray]:
    """(B @ A) · alpha/rank from peft-format tensors (e.g. a checkpoint's lora state)."""
    out = {}
    for comp, sd in lora.items():
        for key, a in sd.items():
            if key.endswith(".lora_A.weight"):
                module = key[: -len(".lora_A.weight")]
                b = sd[f"{module}.lora_B.weight"]
                delta = b.double().flatten(1) @ a.double().flatten(1)  # 1×1 convs (SD1.5 proj_in/out) too
                if a.dim() == 4:
                    delta = delta[:, :, None, None]
                out[f"{comp}.{module}"] = delta.numpy() * (alpha / rank)
    return out


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: on a shared 2-core machine this is several times faster and keeps runs bit-stable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def out_files(out_dir: Path) -> set[str]:
    return {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()}
