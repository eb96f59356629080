"""The offline demo: the whole train → export → generate path on the tiny built-in SD1.5, no network, no Discord.

A synthetic dataset with one distinctive look (orange shapes on dark teal) trains a tiny Element for a few epochs;
the same prompt and seeds are then generated at strengths 0, 0.5 and 1.0 and laid out in a labelled grid, so the
Element's effect is visible at a glance. Takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.api import BaseModelRef, GenerationRequest, LoraRef, ProgressEvent

DEMO_BASE = BaseModelRef(name="tiny-sd15", family="sd15", source="builtin:tiny-sd15")
DEMO_SCHEME = "orange-on-teal"
DEMO_TRIGGER = "zxq"
DEMO_PROMPT = "shapes"
DEMO_STRENGTHS = (0.0, 0.5, 1.0)
DEMO_SEEDS = (100, 101, 102, 103)
CELL = 160  # tiny 64 px images are upscaled (nearest) so the grid is readable


def demo_config():
    """A short seeded run (480 steps at 64 px, ≈35 s on 2 cores) that visibly learns the demo's colour scheme."""
    from trainer.config import TrainingConfig

    return TrainingConfig(
        family="sd15", category="style", trigger=DEMO_TRIGGER, epochs=8, repeats=6, batch_size=1,
        learning_rate=2e-3, rank=8, alpha=8, resolution=64, bucketing=False, mixed_precision="no", seed=0,
        sample_prompts=[f"{DEMO_TRIGGER}, {DEMO_PROMPT}"], sample_steps=6, grid=True,
        grid_strengths=list(DEMO_STRENGTHS), save_every_n_epochs=4, lr_scheduler="constant",
    )


def _draw_grid(examples: list, rows: list[tuple[str, list]], columns: list[str], title: str):
    """Title, a strip of training examples, then one row per seed with one column per strength."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    label_w, pad, small = 120, 6, CELL // 2
    top = 30 + small + 40  # title, examples strip, column headers
    width = label_w + max(len(columns) * (CELL + pad), len(examples) * (small + pad))
    height = top + len(rows) * (CELL + pad)
    canvas = Image.new("RGB", (width, height), (248, 248, 248))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill=(20, 20, 20), font=font)
    draw.text((pad, 30 + small // 2 - 8), "training images", fill=(20, 20, 20), font=font)
    for k, img in enumerate(examples):
        canvas.paste(img.convert("RGB").resize((small, small), Image.Resampling.NEAREST),
                     (label_w + k * (small + pad), 30))
    for c, name in enumerate(columns):
        draw.text((label_w + c * (CELL + pad) + 4, top - 22), name, fill=(20, 20, 20), font=font)
    for r, (label, images) in enumerate(rows):
        y = top + r * (CELL + pad)
        draw.text((pad, y + CELL // 2 - 8), label, fill=(20, 20, 20), font=font)
        for c, img in enumerate(images):
            canvas.paste(img.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST),
                         (label_w + c * (CELL + pad), y))
    return canvas


def run_demo(out_dir: Path, models_dir: Path, progress: Callable[[ProgressEvent], None] | None = None) -> dict:
    """Train a tiny Element on a synthetic dataset and render a strength grid.

    Returns paths: ``grid`` (the labelled PNG), ``dataset`` (folder of training images), ``train_dir`` (the
    export bundle: ``lora_diffusers``, ``lora_kohya``, ``element_json``, ``loss_curve``, ``train_grid``) and
    ``images`` (strength → generated PNGs).
    """
    from PIL import Image

    from trainer.generate import Generator
    from trainer.synthetic import make_dataset
    from trainer.train import train_lora

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = make_dataset(out_dir / "dataset", count=10, scheme=DEMO_SCHEME, size=64, seed=3, caption=DEMO_PROMPT)
    result = train_lora(demo_config(), DEMO_BASE, items, out_dir / "element", models_dir=Path(models_dir),
                        on_progress=progress, element_name="demo-element", category="style")

    gen = Generator(Path(models_dir), max_pipelines=1, device="cpu")
    images: dict[float, list[Path]] = {}
    columns: dict[float, list] = {}
    try:
        for strength in DEMO_STRENGTHS:
            lora = LoraRef(key="demo", path=result.lora_diffusers, trigger=DEMO_TRIGGER, strength=strength)
            columns[strength] = []
            for seed in DEMO_SEEDS:
                res = gen.generate(DEMO_BASE, GenerationRequest(prompt=DEMO_PROMPT, loras=[lora], seed=seed,
                                                                steps=6, width=64, height=64))
                columns[strength].append(res.images[0])
            folder = out_dir / "generated" / f"strength-{strength:g}"
            folder.mkdir(parents=True, exist_ok=True)
            images[strength] = []
            for seed, img in zip(DEMO_SEEDS, columns[strength], strict=True):
                img.save(folder / f"seed-{seed}.png")
                images[strength].append(folder / f"seed-{seed}.png")
    finally:
        gen.close()

    examples = [Image.open(i.image_path) for i in items[:6]]
    rows = [(f"seed {seed}", [columns[s][k] for s in DEMO_STRENGTHS]) for k, seed in enumerate(DEMO_SEEDS)]
    grid = _draw_grid(examples, rows, [f"strength {s:g}" for s in DEMO_STRENGTHS],
                      f'"{DEMO_TRIGGER}, {DEMO_PROMPT}" on tiny-sd15, trained {result.steps} steps')
    grid_path = out_dir / "demo_grid.png"
    tmp = grid_path.with_name(".demo_grid.tmp.png")
    grid.save(tmp)
    tmp.replace(grid_path)
    return {
        "grid": grid_path, "dataset": out_dir / "dataset", "train_dir": result.out_dir,
        "lora_diffusers": result.lora_diffusers, "lora_kohya": result.lora_kohya,
        "element_json": result.element_json, "loss_curve": result.loss_curve_png, "train_grid": result.grid_png,
        "images": images, "steps": result.steps, "final_loss": result.final_loss,
    }
