"""Measure the peak memory of one training step and one generation step of a real-size architecture.

Used by ``scripts/write_arch_files.py`` (calibrating the planner's activation figures once) and by
``bench/bench_memory.py`` (checking the planner against fresh measurements). On CUDA the figure is
``torch.cuda.max_memory_allocated``; elsewhere the models run on the **meta** device (no memory, no arithmetic:
a full-size step takes seconds) and the figure is :class:`~trainer.memory.tracker.PeakTracker`'s peak of live tensor
bytes. On meta no autocast applies, so activations feeding the fp32 LoRA branch are counted in fp32 (CUDA's
autocast keeps a bf16 copy): the meta figure errs on the high side.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.memory.build import build_component
from trainer.memory.tracker import PeakTracker

SD_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
MEASURABLE_MODES = ("bf16", "fp8")  # int8/NF4 (bitsandbytes) and block swap need a CUDA device


@dataclass
class Shape:
    resolution: int
    batch: int = 1


@contextlib.contextmanager
def _flash_sdpa_on_meta():
    """On meta, ``scaled_dot_product_attention`` falls back to the math kernel (a full attention matrix); route it
    to the memory-efficient CPU flash kernel, the kind of kernel CUDA runs, so meta counts what a GPU holds."""
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if query.device.type == "meta" and attn_mask is None:
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, dropout_p, is_causal, scale=scale)[0]
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kw)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def reduced(arch: dict, double: int | None = None, single: int | None = None) -> dict:
    """``arch`` with a Flux transformer of ``double``/``single`` blocks (full width): the bench's reduced depth."""
    if double is None:
        return arch
    comp = dict(arch["components"]["denoiser"])
    comp["config"] = {**comp["config"], "num_layers": double, "num_single_layers": single}
    return {**arch, "components": {**arch["components"], "denoiser": comp}}


def build_denoiser(arch: dict, mode: str, device, *, lora_rank: int | None = None) -> torch.nn.Module:
    """The frozen denoiser in ``mode`` with a fp32 LoRA of ``lora_rank``, in the trainer's order."""
    from peft import LoraConfig

    from trainer.families.flux import FLUX_TARGETS
    from trainer.memory.modes import apply_storage_mode

    if mode not in MEASURABLE_MODES:
        raise ValueError(f"mode {mode!r} cannot be measured here; measurable: {', '.join(MEASURABLE_MODES)}")
    spec = arch["components"]["denoiser"]
    model = build_component(spec["class"], spec["config"], device=device, dtype=torch.bfloat16)
    model.requires_grad_(False)
    apply_storage_mode(model, mode, torch.bfloat16)
    if lora_rank:
        targets = FLUX_TARGETS if arch["family"] == "flux" else SD_TARGETS
        model.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=targets,
                                     init_lora_weights="gaussian"))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return model


def _inputs(arch: dict, model, shape: Shape, device, *, cfg_batch: int = 1) -> tuple[dict, torch.Tensor]:
    """Denoiser kwargs for one step and the target (same shape as the prediction)."""
    b = shape.batch * cfg_batch
    lat = shape.resolution // arch["vae_downscale"]
    bf = torch.bfloat16
    if arch["family"] == "flux":
        tokens = (lat // 2) ** 2
        txt = arch["text_tokens"]
        cfg = model.config
        kw = dict(hidden_states=torch.randn(b, tokens, cfg.in_channels, device=device, dtype=bf),
                  encoder_hidden_states=torch.randn(b, txt, cfg.joint_attention_dim, device=device, dtype=bf),
                  pooled_projections=torch.randn(b, cfg.pooled_projection_dim, device=device, dtype=bf),
                  timestep=torch.full((b,), 0.5, device=device, dtype=bf),
                  img_ids=torch.zeros(tokens, 3, device=device, dtype=bf),
                  txt_ids=torch.zeros(txt, 3, device=device, dtype=bf), return_dict=False)
        if cfg.guidance_embeds:
            kw["guidance"] = torch.full((b,), 1.0, device=device, dtype=bf)
        return kw, torch.randn(b, tokens, cfg.in_channels, device=device)
    cfg = model.config
    kw = dict(sample=torch.randn(b, cfg.in_channels, lat, lat, device=device, dtype=bf),
              timestep=torch.full((b,), 500, device=device, dtype=torch.long),
              encoder_hidden_states=torch.randn(b, arch["text_tokens"], cfg.cross_attention_dim, device=device,
                                                dtype=bf), return_dict=False)
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(b, pooled, device=device, dtype=bf),
                                   "time_ids": torch.zeros(b, 6, device=device, dtype=bf)}
    return kw, torch.randn(b, cfg.out_channels, lat, lat, device=device)


class _Peak:
    """Peak bytes of a block: CUDA allocator statistics on a GPU, tracked tensor bytes elsewhere."""

    def __init__(self, device, *preexisting) -> None:
        self.device = torch.device(device)
        self.pre = preexisting
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._tracker = PeakTracker(*self.pre)
            self._tracker.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._tracker.__exit__(*exc)
            self.peak = self._tracker.peak
        return False


def train_step_peak(arch: dict, mode: str, shape: Shape, *, rank: int = 16, checkpointing: bool = True,
                    device="meta", steps: int = 1, timings: list[float] | None = None) -> int:
    """Peak bytes of a LoRA training step (forward, backward, AdamW step) of the denoiser; with ``steps`` > 1
    and a ``timings`` list, the steps per second of those steps are appended to it (GPU throughput check)."""
    model = build_denoiser(arch, mode, device, lora_rank=rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if checkpointing:
        from trainer.memory.modes import enable_checkpointing

        enable_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    kw, target = _inputs(arch, model, shape, device)
    def step() -> None:
        pred = model(**kw)[0]
        F.mse_loss(pred.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with _flash_sdpa_on_meta():
        step()  # untracked: creates the optimizer state a steady-state step holds
        state = [t for s in optimizer.state.values() for t in s.values()]
        with _Peak(device, model.parameters(), model.buffers(), kw.values(), [target], state) as peak:
            started = time.perf_counter()
            for _ in range(steps):
                step()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
    if timings is not None:
        timings.append(steps / elapsed)
    return peak.peak


@torch.no_grad()
def generate_step_peak(arch: dict, mode: str, shape: Shape, *, device="meta") -> int:
    """Peak bytes of one denoising step (SD: conditional + unconditional batch; Flux-dev: guidance-distilled)."""
    model = build_denoiser(arch, mode, device)
    model.eval()
    kw, _ = _inputs(arch, model, shape, device, cfg_batch=1 if arch["family"] == "flux" else 2)
    with _flash_sdpa_on_meta(), _Peak(device, model.parameters(), model.buffers(), kw.values()) as peak:
        model(**kw)
    return peak.peak


@torch.no_grad()
def vae_decode_peak(arch: dict, shape: Shape, *, tiled: bool = False, device="meta") -> int:
    """Peak bytes of decoding one latent to pixels with the VAE in bf16 (weights included)."""
    spec = arch["components"]["vae"]
    vae = build_component(spec["class"], spec["config"], device=device, dtype=torch.bfloat16)
    if tiled:
        vae.enable_tiling()
    lat = shape.resolution // arch["vae_downscale"]
    z = torch.randn(shape.batch, vae.config.latent_channels, lat, lat, device=device, dtype=torch.bfloat16)
    with _flash_sdpa_on_meta(), _Peak(device, vae.parameters(), vae.buffers(), [z]) as peak:
        vae.decode(z)
    return peak.peak
