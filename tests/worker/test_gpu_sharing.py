"""One GPU shared safely, with a simulated 24 GB budget: the tiny Flux stands in for flux-dev (its planner figures
are the real model's), a "training" holds part of the budget, and the real Generator serves generations through
the worker's policy (FairShare.plan_generation). The base is never loaded a second time while a copy is resident;
a generation that fits nowhere next to the training waits for it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from trainer.api import BaseModelRef, GenerationRequest
from trainer.generate import Generator
from worker.fairshare import FairShare

FLUX_AS_DEV = BaseModelRef(name="tiny-flux", family="flux", source="builtin:tiny-flux", arch="flux-dev")
# Rendered at 64 px by the tiny model, planned with flux-dev's real weights (which dominate the figures).
REQUEST = GenerationRequest(prompt="a lighthouse", width=64, height=64, seed=1, steps=2)


@pytest.fixture
def generator(tmp_path_factory) -> Generator:
    gen = Generator(tmp_path_factory.mktemp("models"), device="cpu")
    loads: list[tuple[str, bool]] = []  # (mode, was another copy of the base resident when it loaded?)
    load = gen._cache._loader

    def spy(ref, mode):
        loads.append((mode, ref in gen._cache))
        return load(ref, mode)

    gen._cache._loader = spy
    gen.loads = loads  # type: ignore[attr-defined]
    yield gen
    gen.close()


def plan_size(gen: Generator, budget: float | None) -> str | None:
    plan = gen.memory_plan(FLUX_AS_DEV, REQUEST, budget)
    return plan.mode if plan else None


async def generate(share: FairShare, gen: Generator, on_wait=None) -> str:
    plan = await share.plan_generation(gen, FLUX_AS_DEV, REQUEST, on_wait=on_wait, poll=0.02)
    async with share.gpu_for_generation():
        await asyncio.to_thread(gen.generate, FLUX_AS_DEV, REQUEST, None, mode=plan.mode)
    return plan.mode


async def test_generation_shares_the_budget_or_waits_and_never_loads_a_second_copy(generator, tmp_path: Path):
    share = FairShare(budget_gb=24.0)
    # Alone on the GPU: the fastest mode that fits 24 GB (flux-dev in bf16 needs ~35 GB with T5 resident).
    assert await generate(share, generator) == "fp8"

    # A flux-dev training in its 24 GB plan (~14 GB + reserve) starts: the worker releases resident pipelines.
    share.register(1, tmp_path, gpu_gb=15.0)
    generator.close()
    assert share.free_gb() == pytest.approx(9.0)
    assert plan_size(generator, 9.0) == "offload"
    assert await generate(share, generator) == "offload"
    assert generator.modes() == {FLUX_AS_DEV: "offload"}

    # A training that leaves too little: the generation waits until it ends, then runs in the fast mode.
    share.unregister(1)
    share.register(2, tmp_path, gpu_gb=23.0)
    waited = asyncio.Event()

    async def on_wait() -> None:
        waited.set()

    task = asyncio.create_task(generate(share, generator, on_wait=on_wait))
    await asyncio.wait_for(waited.wait(), 10)
    await asyncio.sleep(0.2)
    assert not task.done(), "the generation must wait while the training holds the GPU"
    ended = time.monotonic()
    share.unregister(2)
    assert await asyncio.wait_for(task, 120) == "fp8"
    assert time.monotonic() >= ended

    assert [mode for mode, _ in generator.loads] == ["fp8", "offload", "fp8"]
    assert not any(other_copy for _, other_copy in generator.loads), "a second copy of the base was loaded"
    assert generator.modes() == {FLUX_AS_DEV: "fp8"}
    assert generator.stats["pipeline_evictions"] == 2  # closed at training start; offload copy before reload


def test_without_a_budget_nothing_is_accounted() -> None:
    share = FairShare()
    share.register(1, Path("."), gpu_gb=15.0)
    assert share.free_gb() is None
