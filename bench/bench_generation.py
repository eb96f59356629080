"""Generation-engine benchmarks, measured side by side in one run; prints figures and ratios.

(c) Switching between two Elements already resident in a pipeline vs loading one from disk
    (targets: switch ≤ 20 ms and ≥ 5x faster than a load).
(d) ``Generator.generate`` vs a plain diffusers pipeline call with the same settings on the same pipeline
    (target: overhead ≤ 5 %). Calls are interleaved so background load hits both sides alike.

    python bench/bench_generation.py                      # tiny-sd15, CPU, 64 px, 4 steps
    python bench/bench_generation.py --family sdxl --size 64 --steps 8 --rounds 20
    python bench/bench_generation.py --source /models/sdxl --family sdxl --size 1024 --steps 20   # a real model
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.api import BaseModelRef, GenerationRequest, LoraRef  # noqa: E402
from trainer.generate import Generator  # noqa: E402
from trainer.lora_io import load_lora_into  # noqa: E402
from trainer.tiny import BUILTIN_FAMILIES  # noqa: E402


def make_lora(pipe, family: str, out: Path, seed: int) -> Path:
    """A perturbed-weights LoRA for ``pipe``'s denoiser (no training needed to time loading/switching)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    denoiser = pipe.transformer if family == "flux" else pipe.unet
    name = f"bench_src_{seed}"
    denoiser.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                         adapter_name=name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in denoiser.named_parameters():
            if "lora_B" in pname and name in pname:
                param.copy_(torch.randn(param.shape, generator=gen).to(param) * 0.1)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser, adapter_name=name))
    denoiser.delete_adapters(name)
    key = "transformer_lora_layers" if family == "flux" else "unet_lora_layers"
    type(pipe).save_lora_weights(out.parent, **{key: layers}, weight_name=out.name, safe_serialization=True)
    return out


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_switch(gen: Generator, base: BaseModelRef, a: LoraRef, b: LoraRef, rounds: int) -> None:
    entry = gen.pipeline(base)
    entry.activate([a], gen.max_adapters)
    entry.activate([b], gen.max_adapters)  # both resident now
    switch, load = [], []
    for i in range(rounds):
        target = a if i % 2 == 0 else b
        t = time.perf_counter()
        entry.activate([target], gen.max_adapters)
        switch.append(time.perf_counter() - t)

        t = time.perf_counter()
        load_lora_into(entry.pipe, target.path, "bench_cold")
        entry.pipe.set_adapters(["bench_cold"], adapter_weights=[1.0])
        load.append(time.perf_counter() - t)
        entry.pipe.delete_adapters("bench_cold")
        entry._active = None  # we changed the active set behind the cache's back
    s, ld = median_ms(switch), median_ms(load)
    ok = s <= 20 and ld / s >= 5
    print(f"(c) switch resident Element: {s:7.2f} ms   load from disk: {ld:7.2f} ms   "
          f"load/switch = {ld / s:5.1f}x   [{'OK' if ok else 'MISSED'}: target <=20 ms and >=5x]")


def bench_overhead(gen: Generator, base: BaseModelRef, lora: LoraRef, size: int, steps: int, guidance: float,
                   rounds: int) -> None:
    entry = gen.pipeline(base)
    request = GenerationRequest(prompt="a bench shape", loras=[lora], seed=1, steps=steps, guidance=guidance,
                                width=size, height=size)
    used = gen.generate(base, request)  # warm-up; also fixes the exact prompt the engine uses

    def plain():
        entry.pipe(prompt=used.prompt, num_inference_steps=steps, guidance_scale=guidance, width=size,
                   height=size, num_images_per_prompt=1, generator=[torch.Generator().manual_seed(1)])

    plain()
    engine_t, plain_t = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        gen.generate(base, request)
        engine_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        plain()
        plain_t.append(time.perf_counter() - t)
    e, p = median_ms(engine_t), median_ms(plain_t)
    overhead = (e / p - 1) * 100
    print(f"(d) Generator.generate: {e:8.1f} ms   plain pipeline call: {p:8.1f} ms   "
          f"overhead = {overhead:+5.1f} %   [{'OK' if overhead <= 5 else 'MISSED'}: target <=5 %]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["sd15", "sdxl", "flux"], default="sd15")
    parser.add_argument("--source", default=None, help="local diffusers folder / hub id (default: tiny built-in)")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    tiny = {v: k for k, v in BUILTIN_FAMILIES.items()}[args.family]
    base = BaseModelRef(name=args.source or tiny, family=args.family, source=args.source or f"builtin:{tiny}")
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir or Path(tmp) / "models"
        gen = Generator(models_dir, device=args.device)
        entry = gen.pipeline(base)
        print(f"base {base.source} ({args.family}) on {entry.pipe.device}, {args.size}px, {args.steps} steps, "
              f"torch threads {torch.get_num_threads()}")
        a = LoraRef("bench-a", make_lora(entry.pipe, args.family, Path(tmp) / "a.safetensors", 1), "benchx")
        b = LoraRef("bench-b", make_lora(entry.pipe, args.family, Path(tmp) / "b.safetensors", 2), "benchx")
        bench_switch(gen, base, a, b, args.rounds * 2)
        bench_overhead(gen, base, a, args.size, args.steps, args.guidance, args.rounds)
        gen.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
