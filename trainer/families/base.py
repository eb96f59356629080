"""What every base family shares, and the seams where they differ.

A family object wraps a loaded diffusers pipeline during training. The shared loop only calls:
``add_lora`` → ``encode_text`` / ``encode_images`` (for caching) → ``loss`` per step → ``lora_layers`` (export) and
``sample`` (sample images with the live adapter). Subclasses fill in prompt encoding, the noise/target scheme,
LoRA targets and sampling defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from trainer import text_encoder_lora
from trainer.config import TrainingConfig

ADAPTER = "default"
# CLIP targets per ``config.targets``: attention projections (diffusers' scripts) or, at kohya parity, also the
# MLP (kohya's lora.py trains every Linear of CLIPAttention and CLIPMLP).
TEXT_ENCODER_TARGETS = {"attention": ["q_proj", "k_proj", "v_proj", "out_proj"],
                        "full": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]}


@dataclass
class Runtime:
    """Where and in what precision a run happens, resolved once from the config and the machine."""

    device: torch.device
    weight_dtype: torch.dtype  # frozen base weights (and cached latents/embeddings)
    autocast: bool
    notes: list[str] = field(default_factory=list)
    memory_mode: str = "bf16"  # frozen denoiser storage on the GPU (trainer.memory.modes)

    @property
    def fp16(self) -> bool:
        return self.autocast and self.weight_dtype == torch.float16


@dataclass
class Batch:
    """One training batch from the caches: scaled-latent distribution + text conditioning (+ extras)."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    text: dict[str, torch.Tensor] | None  # cached embeddings; None → encode ``captions`` now (trained TE)
    captions: list[str]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class TrainFamily(ABC):
    """Per-family behaviour over one pipeline."""

    name: str
    denoiser_name: str  # pipeline attribute of the UNet/transformer
    text_encoder_names: tuple[str, ...]
    denoiser_targets: list[str]  # peft target_modules for the current config.targets
    default_sample_guidance: float

    def __init__(self, pipe, config: TrainingConfig, runtime: Runtime) -> None:
        self.pipe = pipe
        self.config = config
        self.runtime = runtime

    # ------------------------------------------------------------------------------------------ components
    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    def text_encoders(self) -> dict[str, torch.nn.Module]:
        return {n: getattr(self.pipe, n) for n in self.text_encoder_names if getattr(self.pipe, n, None) is not None}

    @property
    def trains_text_encoder(self) -> bool:
        return self.config.train_text_encoder and bool(self.text_encoder_names)

    def lora_modules(self) -> dict[str, torch.nn.Module]:
        """Components that carry a trained adapter, keyed by their pipeline attribute name."""
        mods = {self.denoiser_name: self.denoiser}
        if self.trains_text_encoder:
            mods.update(self.text_encoders())
        return mods

    # ------------------------------------------------------------------------------------------ LoRA setup
    def add_lora(self) -> None:
        """Freeze the base, inject LoRA (seeded, so the init is reproducible), keep LoRA params in fp32."""
        cfg = self.config
        for module in [self.denoiser, self.vae, *self.text_encoders().values()]:
            module.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.denoiser.add_adapter(self._lora_config(self.denoiser_targets, dora=cfg.use_dora))
            if self.trains_text_encoder:
                # DoRA stays on the denoiser: diffusers cannot reload DoRA magnitudes into transformers' text
                # encoders (they come back re-initialised), so text-encoder adapters are plain LoRA.
                for te in self.text_encoders().values():
                    text_encoder_lora.attach(te, self._lora_config(TEXT_ENCODER_TARGETS[cfg.targets], dora=False), ADAPTER)
        for module in self.lora_modules().values():
            for p in module.parameters():
                if p.requires_grad:
                    p.data = p.data.float()  # fp32 master weights for the small trainable part
        if cfg.gradient_checkpointing:
            from trainer.memory.modes import enable_checkpointing

            enable_checkpointing(self.denoiser)
            if self.trains_text_encoder:
                for te in self.text_encoders().values():
                    te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _lora_config(self, targets: list[str], *, dora: bool) -> LoraConfig:
        # "gaussian" init (A ~ N(0, 1/r), B = 0) as in diffusers' LoRA training scripts.
        return LoraConfig(r=self.config.rank, lora_alpha=self.config.alpha, target_modules=targets,
                          init_lora_weights="gaussian", use_dora=dora)

    def param_groups(self) -> list[dict]:
        groups = [{"params": [p for p in self.denoiser.parameters() if p.requires_grad],
                   "lr": self.config.learning_rate, "name": self.denoiser_name}]
        if self.trains_text_encoder:
            for name, te in self.text_encoders().items():
                groups.append({"params": [p for p in te.parameters() if p.requires_grad],
                               "lr": self.config.effective_text_encoder_lr, "name": name})
        return groups

    def train_mode(self, on: bool) -> None:
        for module in self.lora_modules().values():
            module.train(on)

    def lora_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """peft-format LoRA tensors per component (``{"unet": {...lora_A.weight: …}}``), detached, on CPU."""
        return {name: {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(m).items()}
                for name, m in self.lora_modules().items()}

    def load_lora_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, module in self.lora_modules().items():
            tensors = {k: v.to(self.runtime.device) for k, v in state.get(name, {}).items()}
            result = set_peft_model_state_dict(module, tensors, adapter_name=ADAPTER)
            missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
            if missing:
                raise ValueError(f"LoRA state does not fit the {name}: unexpected keys {missing[:3]}")

    def adapter_metadata(self) -> dict[str, dict]:
        """peft ``LoraConfig`` per component, stored in the diffusers file so alpha/DoRA survive a reload."""
        return {name: m.peft_config[ADAPTER].to_dict() for name, m in self.lora_modules().items()}

    @contextmanager
    def lora_strength(self, strength: float):
        """Temporarily scale (or, at 0, switch off) the trained adapter everywhere — for the strength grid."""
        layers = [m for mod in self.lora_modules().values() for m in mod.modules() if isinstance(m, BaseTunerLayer)]
        try:
            for layer in layers:
                if strength == 0:
                    layer.enable_adapters(False)
                else:
                    layer.set_scale(ADAPTER, strength)
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
                layer.set_scale(ADAPTER, 1.0)

    # ------------------------------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior of ``pixels`` ([-1, 1], NCHW) as scaled latent mean and std (sampled per step)."""
        vae = self.vae
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        scale = vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((dist.mean.float() - shift) * scale), (dist.std.float() * scale)

    @abstractmethod
    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning for a batch of captions; differentiable when the text encoder is trained."""

    def extras_for(self, original_size: tuple[int, int], crop: tuple[int, int],
                   target_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Per-image extra conditioning cached with the latents (SDXL's size/crop ids); (h, w) / (top, left)."""
        return {}

    # ------------------------------------------------------------------------------------------ training
    @abstractmethod
    def loss(self, batch: Batch, text: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """Sample latents/noise/timesteps from ``gen``, run the denoiser, return the scalar loss."""

    def randn(self, shape, gen: torch.Generator) -> torch.Tensor:
        """Noise drawn on the CPU generator (device-independent, checkpointable), then moved."""
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(self.runtime.device)

    def rand(self, shape, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=gen, dtype=torch.float32).to(self.runtime.device)

    def sample_latents(self, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        return batch.latent_mean + batch.latent_std * self.randn(batch.latent_mean.shape, gen)

    def autocast(self):
        return torch.autocast(self.runtime.device.type, dtype=self.runtime.weight_dtype,
                              enabled=self.runtime.autocast)

    # ------------------------------------------------------------------------------------------ sampling
    @abstractmethod
    def pipeline_kwargs(self, text: dict[str, torch.Tensor], negative: dict[str, torch.Tensor]) -> dict:
        """Pipeline ``__call__`` kwargs that pass pre-computed embeddings for one prompt."""

    @torch.no_grad()
    def sample(self, text: dict[str, torch.Tensor], negative: dict[str, torch.Tensor], *, seed: int,
               size: int, steps: int, guidance: float | None):
        """One image from the live pipeline (adapter active) with pre-computed prompt embeddings.

        No autocast here: peft runs the fp32 LoRA branch in fp32 and casts back, and the pipelines handle their
        own VAE upcasting, exactly as at generation time.
        """
        self.train_mode(False)
        gen = torch.Generator("cpu").manual_seed(seed)
        out = self.pipe(**self.pipeline_kwargs(text, negative), height=size, width=size,
                        num_inference_steps=steps, generator=gen, output_type="pil",
                        guidance_scale=self.default_sample_guidance if guidance is None else guidance)
        return out.images[0]
