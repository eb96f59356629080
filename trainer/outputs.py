"""Human-facing outputs of a run: sample images, the loss-curve PNG, the epoch × strength grid and element.json.

Pictures are drawn with Pillow only (no plotting dependency).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

GRID_CELL = 256  # grid cells are downscaled to this many pixels so a 1024 px base gives a shareable PNG
MAX_GRID_ROWS = 4


def save_png(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path


def write_json(data: dict, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def render_samples(sample: Callable[[int, int], Image.Image], prompt_count: int, out_dir: Path,
                   epoch: int, seed: int) -> list[Path]:
    """``sample(prompt_index, seed)`` → image for each sample prompt, saved as samples/epoch-N/sample-K.png."""
    paths = []
    for k in range(prompt_count):
        img = sample(k, seed + k)
        paths.append(save_png(img, out_dir / "samples" / f"epoch-{epoch}" / f"sample-{k}.png"))
    return paths


def grid_epochs(saved: list[int]) -> list[int]:
    """At most :data:`MAX_GRID_ROWS` saved epochs, evenly spread, always including the last."""
    if len(saved) <= MAX_GRID_ROWS:
        return list(saved)
    picks = {saved[round(i * (len(saved) - 1) / (MAX_GRID_ROWS - 1))] for i in range(MAX_GRID_ROWS)}
    return sorted(picks)


def draw_grid(cells: dict[tuple[int, float], Image.Image], epochs: list[int], strengths: list[float],
              title: str) -> Image.Image:
    """Rows = epochs, columns = strengths, with labels on the left and the top."""
    size = max(128, min(GRID_CELL, max(img.width for img in cells.values())))  # small bases upscaled: labels fit
    label_w, head_h, pad = 90, 40, 4
    width = label_w + len(strengths) * (size + pad)
    height = head_h + len(epochs) * (size + pad)
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(14), _font(12)
    draw.text((pad, pad), title[:80], fill=(20, 20, 20), font=small)
    for c, s in enumerate(strengths):
        draw.text((label_w + c * (size + pad) + 4, 20), f"strength {s:g}", fill=(20, 20, 20), font=small)
    for r, e in enumerate(epochs):
        y = head_h + r * (size + pad)
        draw.text((pad, y + size // 2 - 8), f"epoch {e}", fill=(20, 20, 20), font=font)
        for c, s in enumerate(strengths):
            img = cells[(e, s)].convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            canvas.paste(img, (label_w + c * (size + pad), y))
    return canvas


def draw_loss_curve(losses: list[float], steps_per_epoch: int, path: Path, *, title: str = "training loss") -> Path:
    """Raw per-step loss (light) with an exponential moving average (dark) and epoch boundaries."""
    w, h, left, right, top, bottom = 720, 360, 60, 16, 30, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = _font(12)
    draw.text((left, 8), title, fill=(20, 20, 20), font=font)
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        draw.text((left, h // 2), "no steps recorded", fill=(120, 120, 120), font=font)
        return save_png(img, path)
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = len(losses)
    pw, ph = w - left - right, h - top - bottom

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + pw * (i / max(1, n - 1)), top + ph * (1 - (v - lo) / (hi - lo))

    draw.rectangle((left, top, left + pw, top + ph), outline=(180, 180, 180))
    for e in range(steps_per_epoch, n, max(1, steps_per_epoch)):
        x = xy(e, lo)[0]
        draw.line((x, top, x, top + ph), fill=(225, 225, 235))
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        y = xy(0, v)[1]
        draw.text((4, y - 6), f"{v:.3g}", fill=(90, 90, 90), font=font)
    draw.text((left, top + ph + 8), "step 1", fill=(90, 90, 90), font=font)
    draw.text((left + pw - 60, top + ph + 8), f"step {n}", fill=(90, 90, 90), font=font)
    raw = [xy(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
    if len(raw) > 1:
        draw.line(raw, fill=(170, 200, 240), width=1)
    ema, smooth = None, []
    alpha = 2 / (1 + max(2, min(50, n // 10)))
    for i, v in enumerate(losses):
        if math.isfinite(v):
            ema = v if ema is None else alpha * v + (1 - alpha) * ema
            smooth.append(xy(i, ema))
    if len(smooth) > 1:
        draw.line(smooth, fill=(20, 70, 160), width=2)
    return save_png(img, path)


# ---------------------------------------------------------------------------------------------- final bundle
MODELSPEC_ARCH = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora",
                  "flux": "flux-1-dev/lora"}
MODELSPEC_IMPL = {"sd15": "diffusers", "sdxl": "https://github.com/Stability-AI/generative-models",
                  "flux": "https://github.com/black-forest-labs/flux"}


def modelspec(config, base, title: str, finished: str) -> dict[str, str]:
    """Stability AI's ``modelspec.*`` keys (sai_model_spec 1.0.0) as kohya's ``sai_model_spec.py`` writes them."""
    arch = MODELSPEC_ARCH[config.family]
    if config.family == "flux" and "schnell" in f"{base.name} {base.source}".lower():
        arch = "flux-1-schnell/lora"
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": arch,
            "modelspec.implementation": MODELSPEC_IMPL[config.family], "modelspec.title": title,
            "modelspec.resolution": f"{config.resolution}x{config.resolution}", "modelspec.date": finished,
            "modelspec.trigger_phrase": config.trigger}


def _group_dirs(samples, config) -> list[tuple[str, int, int, dict[str, int]]] | None:
    """(group, repeats, images, tag frequency) per image group, for kohya's per-folder metadata."""
    from trainer.data import tag_frequency

    if not config.groups:
        return None
    names = sorted({s.group for s in samples}, key=lambda g: (g == "", g))
    out = []
    for name in names:
        members = [s for s in samples if s.group == name]
        out.append((name or "ungrouped", config.repeats_for(name), len({s.image for s in members}),
                    tag_frequency(members, config)))
    return out


def write_bundle(*, family, pipeline_cls, config, base, items, samples, out_dir: Path, state, name: str,
                 element_name: str, category: str, grid_cells: dict | None, total_steps: int, resumed_from: int,
                 steps_per_epoch: int, sweep=None):
    """Final files: diffusers + kohya LoRA, loss curve, grid, element.json → a :class:`TrainResult`."""
    import torch

    from trainer.api import TrainResult
    from trainer.data import dataset_hash, tag_frequency
    from trainer.export import (
        cast_lora,
        kohya_flux,
        kohya_metadata,
        kohya_sd,
        save_diffusers_lora,
        save_kohya_lora,
    )

    save_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[config.save_precision]
    notes = list(family.runtime.notes) + (list(sweep.notes) if sweep else [])
    strength = sweep.default_strength if sweep and sweep.default_strength is not None else config.recommended_strength
    strength_range = sweep.range if sweep else None
    lora = family.lora_state()
    data_hash = dataset_hash(items)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    common = {
        "atelier_trigger_word": config.trigger, "atelier_family": config.family, "atelier_category": category,
        "atelier_element_name": element_name, "atelier_base_model": base.name,
        "atelier_recommended_strength": str(strength),
        **({"atelier_strength_range": json.dumps(list(strength_range))} if strength_range else {}),
    }
    diffusers_path = save_diffusers_lora(pipeline_cls, out_dir / f"{name}.safetensors",
                                         cast_lora(lora, save_dtype), family.adapter_metadata(), common)
    if config.family == "flux":
        kohya = kohya_flux(lora, config.alpha, family.denoiser, notes)
    else:
        kohya = kohya_sd(config.family, lora, config.alpha, family.denoiser.config)
    meta = kohya_metadata(
        family=config.family, base_name=base.name, rank=config.rank, alpha=config.alpha, use_dora=config.use_dora,
        output_name=name, tag_frequency=tag_frequency(samples, config), dataset_hash=data_hash,
        image_count=len(items), repeats=config.repeats, trigger=config.trigger,
        groups=_group_dirs(samples, config),
        extra={**common, "ss_num_epochs": str(config.epochs), "ss_steps": str(state.global_step),
               "ss_learning_rate": str(config.learning_rate), "ss_unet_lr": str(config.learning_rate),
               "ss_text_encoder_lr": str(config.effective_text_encoder_lr if family.trains_text_encoder else 0),
               "ss_resolution": f"({config.resolution}, {config.resolution})", "ss_seed": str(config.seed),
               "ss_optimizer": config.optimizer, "ss_lr_scheduler": config.lr_scheduler,
               "ss_min_snr_gamma": str(config.min_snr_gamma), "ss_noise_offset": str(config.noise_offset),
               "ss_caption_dropout_rate": str(config.caption_dropout), "ss_keep_tokens": str(config.keep_tokens),
               "ss_shuffle_caption": str(config.shuffle_captions), "ss_mixed_precision": config.mixed_precision,
               "ss_training_finished_at": finished,
               **modelspec(config, base, name, finished)},
    )
    kohya_path = save_kohya_lora(out_dir / f"{name}_kohya.safetensors", kohya, meta, save_dtype)
    loss_png = draw_loss_curve(state.losses, steps_per_epoch, out_dir / "loss_curve.png",
                               title=f"{name}: loss per step ({state.global_step} steps)")
    grid_png = None
    if grid_cells and grid_cells["cells"]:
        grid = draw_grid(grid_cells["cells"], grid_cells["epochs"], grid_cells["strengths"],
                         f"{name} - {grid_cells['prompt']}")
        grid_png = save_png(grid, out_dir / "grid.png")
    final_loss = state.losses[-1] if state.losses else None
    element = {
        "format": 1, "name": element_name or name, "trigger": config.trigger, "family": config.family,
        "base_model": {"name": base.name, "family": base.family, "source": base.source},
        "category": category, "recommended_strength": strength,
        "strength_range": list(strength_range) if strength_range else None,
        "strength_sweep": sweep.as_dict() if sweep else None,
        "sample_prompts": config.resolved_sample_prompts(),
        "files": {"diffusers": diffusers_path.name, "kohya": kohya_path.name, "loss_curve": loss_png.name,
                  "grid": grid_png.name if grid_png else None,
                  "epochs": {str(k): v for k, v in sorted(state.epoch_weights.items())},
                  "samples": {str(k): v for k, v in sorted(state.samples.items())}},
        "training": {"epochs": config.epochs, "steps": state.global_step, "total_steps": total_steps,
                     "final_loss": final_loss, "image_count": len(items), "dataset_hash": data_hash,
                     "seconds": round(state.elapsed_seconds, 2), "device": family.runtime.device.type,
                     "precision": str(family.runtime.weight_dtype).removeprefix("torch."),
                     "resumed_from_epoch": resumed_from, "finished_at": finished},
        "config": config.model_dump(mode="json"),
        "notes": notes,
    }
    element_json = write_json(element, out_dir / "element.json")
    return TrainResult(
        out_dir=out_dir, epochs=config.epochs, steps=state.global_step, final_loss=final_loss,
        lora_diffusers=diffusers_path, lora_kohya=kohya_path, element_json=element_json,
        loss_curve_png=loss_png, grid_png=grid_png,
        samples={e: [out_dir / p for p in ps] for e, ps in sorted(state.samples.items())},
        epoch_weights={e: out_dir / p for e, p in sorted(state.epoch_weights.items())},
        recommended_strength=strength, resumed_from_epoch=resumed_from, strength_range=strength_range,
    )
