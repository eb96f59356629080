"""Stable Diffusion 1.5: one CLIP text encoder, DDPM noise, epsilon or v-prediction per the scheduler config."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from trainer.families.base import Batch, TrainFamily

# UNet targets per ``config.targets``. "attention": diffusers' train_dreambooth_lora default (attention
# projections only). "full": kohya's lora.py — every Linear and 1×1 Conv inside a Transformer2DModel, i.e. also
# proj_in/proj_out (1×1 convs on SD1.5, Linears on SDXL) and the GEGLU feed-forward.
SD_UNET_TARGETS = {"attention": ["to_q", "to_k", "to_v", "to_out.0"],
                   "full": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]}


class SD15Family(TrainFamily):
    name = "sd15"
    denoiser_name = "unet"
    text_encoder_names = ("text_encoder",)
    default_sample_guidance = 7.0

    def __init__(self, pipe, config, runtime) -> None:
        super().__init__(pipe, config, runtime)
        # The training noise schedule follows whatever the base's (inference) scheduler was configured with:
        # same betas and prediction type, so v-prediction bases train as v-prediction.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type

    @property
    def denoiser_targets(self) -> list[str]:
        return SD_UNET_TARGETS[self.config.targets]

    # ------------------------------------------------------------------------------------------ text
    def _tokens(self, tokenizer, captions: list[str]) -> torch.Tensor:
        return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(self.runtime.device)

    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        te = self.pipe.text_encoder
        with self.autocast():
            hidden = te(self._tokens(self.pipe.tokenizer, captions))[0]
        return {"prompt_embeds": hidden}

    def pipeline_kwargs(self, text, negative) -> dict:
        return {"prompt_embeds": text["prompt_embeds"], "negative_prompt_embeds": negative["prompt_embeds"]}

    # ------------------------------------------------------------------------------------------ training
    def unet_kwargs(self, batch: Batch, text: dict[str, torch.Tensor]) -> dict:
        return {"encoder_hidden_states": text["prompt_embeds"]}

    def loss(self, batch: Batch, text: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        cfg = self.config
        latents = self.sample_latents(batch, gen)
        bsz = latents.shape[0]
        noise = self.randn(latents.shape, gen)
        if cfg.noise_offset:
            # Offset noise (Guttenberg 2023): lets the model learn very dark/bright images.
            noise = noise + cfg.noise_offset * self.randn((bsz, latents.shape[1], 1, 1), gen)
        n_train = self.noise_scheduler.config.num_train_timesteps
        timesteps = (self.rand((bsz,), gen) * n_train).long().clamp_(max=n_train - 1)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"unsupported prediction type {self.prediction_type!r} in the base's scheduler")
        with self.autocast():
            pred = self.denoiser(noisy.to(self.runtime.weight_dtype), timesteps,
                                 **self.unet_kwargs(batch, text), return_dict=False)[0]
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if cfg.min_snr_gamma:
            # Min-SNR-γ (Hang et al. 2023): cap the weight of low-noise timesteps; v-pred uses snr+1.
            snr = compute_snr(self.noise_scheduler, timesteps)
            weight = torch.clamp(snr, max=cfg.min_snr_gamma)
            weight = weight / (snr + 1) if self.prediction_type == "v_prediction" else weight / snr
            per_sample = per_sample * weight
        return per_sample.mean()
