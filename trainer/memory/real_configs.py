"""The real base models' architecture configs (as in their ``config.json`` on the hub), for the memory planner.

Only the fields that differ from the library defaults are listed; ``scripts/write_arch_files.py`` builds each
component on the meta device from these, counts its parameters and writes ``trainer/memory/archs/<base>.json``.
"""

from __future__ import annotations

CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 768, "hidden_act": "quick_gelu"}
OPENCLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
                 "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 1280, "hidden_act": "gelu"}
T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24, "vocab_size": 32128,
          "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32, "is_encoder_decoder": False}
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
          "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}
SD15_UNET = {"attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
             "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 64}
SDXL_UNET = {"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
             "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
             "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
             "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True}
FLUX_TRANSFORMER = {"attention_head_dim": 128, "guidance_embeds": True, "in_channels": 64,
                    "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 19,
                    "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768,
                    "axes_dims_rope": [16, 56, 56]}
FLUX_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 16,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159,
            "use_quant_conv": False, "use_post_quant_conv": False}


def _c(cls: str, config: dict) -> dict:
    return {"class": cls, "config": config}


REAL_ARCHS: dict[str, dict] = {
    "sd15": {"family": "sd15", "text_tokens": 77, "vae_downscale": 8, "components": {
        "denoiser": _c("UNet2DConditionModel", SD15_UNET),
        "text_encoder": _c("CLIPTextModel", CLIP_L),
        "vae": _c("AutoencoderKL", SD_VAE)}},
    "sdxl": {"family": "sdxl", "text_tokens": 77, "vae_downscale": 8, "components": {
        "denoiser": _c("UNet2DConditionModel", SDXL_UNET),
        "text_encoder": _c("CLIPTextModel", CLIP_L),
        "text_encoder_2": _c("CLIPTextModelWithProjection", OPENCLIP_BIGG),
        "vae": _c("AutoencoderKL", {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025,
                                    "force_upcast": True})}},
    "flux-dev": {"family": "flux", "text_tokens": 512, "vae_downscale": 8, "components": {
        "denoiser": _c("FluxTransformer2DModel", FLUX_TRANSFORMER),
        "text_encoder": _c("CLIPTextModel", CLIP_L),
        "text_encoder_2": _c("T5EncoderModel", T5_XXL),
        "vae": _c("AutoencoderKL", FLUX_VAE)}},
    "flux-schnell": {"family": "flux", "text_tokens": 256, "vae_downscale": 8, "components": {
        "denoiser": _c("FluxTransformer2DModel", {**FLUX_TRANSFORMER, "guidance_embeds": False}),
        "text_encoder": _c("CLIPTextModel", CLIP_L),
        "text_encoder_2": _c("T5EncoderModel", T5_XXL),
        "vae": _c("AutoencoderKL", FLUX_VAE)}},
}
