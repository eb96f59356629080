"""Flux-dev: CLIP pooled + T5 conditioning, 2×2-packed latents with position ids, rectified-flow matching
(target = noise − latents) with shifted-sigmoid timestep sampling, guidance embedding when the transformer has one.
Text encoders are never trained (the config refuses it)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainer.families.base import Batch, TrainFamily

# "attention": every attention projection (double blocks' image and text streams; "attn.to_*" also hits the
# single blocks' attention).
FLUX_ATTENTION_TARGETS = [
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
]
# "full" = kohya's lora_flux.py: every Linear of the double and single blocks except the modulation layers (which
# kohya excludes by default). That is diffusers' train_dreambooth_lora_flux.py default ``--lora_layers`` plus the
# single blocks' MLP input ``proj_mlp`` (completing the fused ``linear1`` = q|k|v|mlp) and, added per block in
# :attr:`FluxFamily.denoiser_targets`, their output projection ``proj_out`` (kohya ``linear2``) — named by block
# index because the transformer's final layer is also called ``proj_out``.
FLUX_TARGETS = [
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    "proj_mlp",
]


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H/2·W/2, 4C): Flux sees 2×2 latent patches as tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents` for a latent of height ``h`` and width ``w``."""
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """Per-token (0, row, col) position ids of a packed ``h``×``w`` latent."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device, dtype)


class FluxFamily(TrainFamily):
    name = "flux"
    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    default_sample_guidance = 3.5  # FluxPipeline's default for dev (guidance-distilled, no CFG pass)

    @property
    def denoiser_targets(self) -> list[str]:
        if self.config.targets == "attention":
            return FLUX_ATTENTION_TARGETS
        singles = len(getattr(self.denoiser, "single_transformer_blocks", []))
        return [*FLUX_TARGETS, *(f"single_transformer_blocks.{i}.proj_out" for i in range(singles))]

    @property
    def max_sequence_length(self) -> int:
        return min(self.config.max_sequence_length, self.pipe.tokenizer_2.model_max_length)

    def encode_text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        dev = self.runtime.device
        tok, tok2 = self.pipe.tokenizer, self.pipe.tokenizer_2
        clip_ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids.to(dev)
        t5_ids = tok2(captions, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                      return_tensors="pt").input_ids.to(dev)
        with self.autocast():
            pooled = self.pipe.text_encoder(clip_ids, output_hidden_states=False).pooler_output
            hidden = self.pipe.text_encoder_2(t5_ids, output_hidden_states=False)[0]
        return {"prompt_embeds": hidden, "pooled": pooled}

    def shift_for(self, h: int, w: int) -> float:
        """Timestep shift for an ``h``×``w`` latent: ``config.flux_shift`` when set, else exp(μ) with μ from
        FluxPipeline's own ``calculate_shift`` over the packed sequence length and the base's scheduler config —
        the shift the pipeline applies at that resolution at inference (3.1582 at 1024², less for smaller)."""
        if self.config.flux_shift is not None:
            return self.config.flux_shift
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sched = self.pipe.scheduler.config
        mu = calculate_shift((h // 2) * (w // 2), sched.get("base_image_seq_len", 256),
                             sched.get("max_image_seq_len", 4096), sched.get("base_shift", 0.5),
                             sched.get("max_shift", 1.15))
        return math.exp(mu)

    def sample_sigmas(self, bsz: int, gen: torch.Generator, shift: float = 1.0) -> torch.Tensor:
        cfg = self.config
        if cfg.flux_timestep_sampling == "uniform":
            return self.rand((bsz,), gen)
        # Logit-normal ("sigmoid", SD3 paper) — optionally shifted toward high noise like kohya's
        # ``--timestep_sampling shift``: σ' = sσ / (1 + (s−1)σ), the same map the Flux scheduler applies.
        sigma = torch.sigmoid(self.randn((bsz,), gen))
        if cfg.flux_timestep_sampling == "shift":
            sigma = shift * sigma / (1 + (shift - 1) * sigma)
        return sigma

    def loss(self, batch: Batch, text: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        latents = self.sample_latents(batch, gen)
        b, _, h, w = latents.shape
        noise = self.randn(latents.shape, gen)
        sigma = self.sample_sigmas(b, gen, self.shift_for(h, w))
        s = sigma.view(b, 1, 1, 1)
        noisy = (1 - s) * latents + s * noise
        dtype = self.runtime.weight_dtype
        transformer = self.denoiser
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.config.flux_guidance, device=self.runtime.device, dtype=dtype)
        prompt_embeds = text["prompt_embeds"]
        txt_ids = torch.zeros(prompt_embeds.shape[1], 3, device=self.runtime.device, dtype=dtype)
        with self.autocast():
            pred = transformer(
                hidden_states=pack_latents(noisy).to(dtype), timestep=sigma.to(dtype), guidance=guidance,
                pooled_projections=text["pooled"], encoder_hidden_states=prompt_embeds,
                txt_ids=txt_ids, img_ids=image_ids(h, w, self.runtime.device, dtype), return_dict=False,
            )[0]
        target = noise - latents  # rectified flow: the velocity from data to noise
        return F.mse_loss(unpack_latents(pred.float(), h, w), target.float())

    def pipeline_kwargs(self, text, negative) -> dict:
        return {"prompt_embeds": text["prompt_embeds"], "pooled_prompt_embeds": text["pooled"],
                "max_sequence_length": self.max_sequence_length}
