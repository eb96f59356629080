"""Tiny offline base models (``builtin:tiny-sd15`` / ``tiny-sdxl`` / ``tiny-flux``) built from config.

No model hub is reachable in tests, CI or the offline demo, so these pipelines are built from config with fixed
seeds, their VAE replaced by the small fitted weights shipped in ``trainer/assets``, and saved once with
``save_pretrained`` into ``<models_dir>/<name>``. From then on they are loaded like any downloaded model
(``from_pretrained(<dir>)``), which keeps the real local-path code path exercised.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from trainer.api import FamilyName

BUILTIN_FAMILIES: dict[str, FamilyName] = {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl", "tiny-flux": "flux"}
ASSETS_DIR = Path(__file__).parent / "assets"
MARKER = "atelier_tiny.json"
# Bump when the architecture or build recipe changes so materialised folders are rebuilt.
RECIPE_VERSION = 2  # 2: tiny Flux has Flux-dev's guidance embedding
SEED = 1234


def vae_asset_path(kind: str) -> Path:
    return ASSETS_DIR / f"tiny_vae_{kind}.safetensors"


def vae_config(kind: str) -> dict:
    """AutoencoderKL kwargs for the tiny VAE of ``kind`` ("sd" or "flux"); 2x spatial downsampling."""
    common = dict(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        latent_channels=4, sample_size=64, mid_block_add_attention=False,  # fully convolutional: any size
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    if kind == "flux":
        return {**common, "use_quant_conv": False, "use_post_quant_conv": False,
                "scaling_factor": 1.0, "shift_factor": 0.0}
    if kind == "sd":
        return {**common, "scaling_factor": 1.0}
    raise ValueError(f"unknown tiny VAE kind {kind!r}")


def build_vae(kind: str):
    """The tiny VAE with the shipped fitted weights when present (random init before the fit script ran)."""
    from diffusers import AutoencoderKL
    from safetensors import safe_open
    from safetensors.torch import load_file

    config = vae_config(kind)
    asset = vae_asset_path(kind)
    if asset.exists():
        with safe_open(str(asset), framework="pt") as f:
            meta = f.metadata() or {}
        config["scaling_factor"] = float(meta.get("scaling_factor", config["scaling_factor"]))
        if "shift_factor" in config:
            config["shift_factor"] = float(meta.get("shift_factor", 0.0))
    vae = AutoencoderKL(**config)
    if asset.exists():
        vae.load_state_dict(load_file(str(asset)), strict=True)
    return vae


# Shipped fitted weights per built-in model (scripts/fit_tiny_vae.py, scripts/fit_tiny_denoiser.py).
MODEL_ASSETS: dict[str, tuple[str, ...]] = {
    "tiny-sd15": ("tiny_vae_sd", "tiny_unet_sd15"), "tiny-sdxl": ("tiny_vae_sd",), "tiny-flux": ("tiny_vae_flux",),
}


def _asset_digest(stem: str) -> str:
    asset = ASSETS_DIR / f"{stem}.safetensors"
    return hashlib.sha256(asset.read_bytes()).hexdigest()[:16] if asset.exists() else "random"


def load_asset_into(module, stem: str) -> bool:
    """Load ``assets/<stem>.safetensors`` into ``module`` (strict) if it is shipped; return whether it was."""
    from safetensors.torch import load_file

    asset = ASSETS_DIR / f"{stem}.safetensors"
    if not asset.exists():
        return False
    state = {k: v.float() for k, v in load_file(str(asset)).items()}  # shipped in fp16 to stay small
    module.load_state_dict(state, strict=True)
    return True


def sd15_unet_config() -> dict:
    """The tiny SD1.5 UNet (small enough to fit as a real denoiser on a CPU in minutes)."""
    return dict(
        block_out_channels=(16, 32), layers_per_block=2, norm_num_groups=8, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
    )


def _clip_tokenizer():
    """Byte-level CLIP tokenizer held in memory: every byte is a symbol, no merges, nothing downloaded."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    """Unigram T5 tokenizer over word-start marker + printable ASCII, held in memory."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    pieces += [("\u2581" + chr(c), -1.5) for c in range(33, 127)]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def _clip_text_config(tok, *, hidden: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=3, max_position_embeddings=77, projection_dim=hidden,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def _sd_scheduler(*, zero_snr: bool):
    """SD's noise schedule; "trailing" spacing starts sampling at t=999 even with 4 steps.

    ``zero_snr`` (tiny SD1.5): v-prediction with zero terminal SNR (Lin et al. 2024), under which a small model
    learns global colour quickly — with epsilon prediction a LoRA barely moves the mean colour in a few hundred
    steps. Tiny SDXL keeps the classic epsilon setup so both prediction types stay exercised.
    """
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction" if zero_snr else "epsilon", rescale_betas_zero_snr=zero_snr,
        timestep_spacing="trailing", steps_offset=1,
    )


def _build_sd15():
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tok = _clip_tokenizer()
    unet = UNet2DConditionModel(**sd15_unet_config())
    load_asset_into(unet, "tiny_unet_sd15")
    return StableDiffusionPipeline(
        vae=build_vae("sd"), text_encoder=CLIPTextModel(_clip_text_config(tok)), tokenizer=tok, unet=unet,
        scheduler=_sd_scheduler(zero_snr=True), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl():
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok, tok2 = _clip_tokenizer(), _clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80, cross_attention_dim=64,
    )
    return StableDiffusionXLPipeline(
        vae=build_vae("sd"), text_encoder=CLIPTextModel(_clip_text_config(tok)), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(tok2)), tokenizer_2=tok2, unet=unet,
        scheduler=_sd_scheduler(zero_snr=False), force_zeros_for_empty_prompt=True,
    )


def _build_flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tok, tok2 = _clip_tokenizer(), _t5_tokenizer()
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tok2), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
        pad_token_id=tok2.pad_token_id, eos_token_id=tok2.eos_token_id, decoder_start_token_id=0,
    ))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,  # as Flux-dev (the default base): training and sampling pass a guidance value
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler, vae=build_vae("flux"), text_encoder=CLIPTextModel(_clip_text_config(tok)),
        tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok2, transformer=transformer,
    )


_BUILDERS = {"tiny-sd15": _build_sd15, "tiny-sdxl": _build_sdxl, "tiny-flux": _build_flux}


def build_pipeline(name: str):
    """Build the named tiny pipeline in memory, deterministically (fixed seed, global RNG left untouched)."""
    import torch

    if name not in _BUILDERS:
        raise ValueError(f"unknown built-in model {name!r}; choose one of {sorted(_BUILDERS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return _BUILDERS[name]()


def _fingerprint(name: str) -> dict:
    return {"name": name, "recipe": RECIPE_VERSION, "assets": {s: _asset_digest(s) for s in MODEL_ASSETS[name]}}


def _is_current(target: Path, fingerprint: dict) -> bool:
    try:
        return json.loads((target / MARKER).read_text()) == fingerprint
    except (OSError, ValueError):
        return False


def ensure_builtin(name: str, models_dir: Path) -> Path:
    """Materialise the tiny pipeline ``name`` under ``models_dir/name`` once and return that folder.

    Built in a temporary sibling folder and renamed into place, so a reader never sees a half-written model and
    two processes racing both end up with one complete folder. A folder from an older recipe or VAE is replaced.
    """
    if name not in BUILTIN_FAMILIES:
        raise ValueError(f"unknown built-in model {name!r}; choose one of {sorted(BUILTIN_FAMILIES)}")
    models_dir = Path(models_dir)
    target = models_dir / name
    fingerprint = _fingerprint(name)
    if _is_current(target, fingerprint):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=models_dir))
    try:
        build_pipeline(name).save_pretrained(tmp, safe_serialization=True)
        (tmp / MARKER).write_text(json.dumps(fingerprint))
        if target.exists() and not _is_current(target, fingerprint):
            # Stale folder: move it aside first (rename is atomic), then drop it.
            stale = models_dir / f".{name}.stale-{uuid.uuid4().hex}"
            try:
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            except FileNotFoundError:
                pass  # another process moved it already
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_current(target, fingerprint):  # lost the race to a process writing something else
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
