"""Fair share, at the protocol level: a real subprocess driving the child's FileControl between "steps",
paused by SIGSTOP or at its step boundary (the full path with the real trainer is in
test_worker_training_control)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from tests.worker.conftest import ROOT
from worker.fairshare import FairShare

CHILD = """
import os, sys, time
from pathlib import Path
from worker.train_child import FileControl
control = FileControl(Path(sys.argv[1]), os.getppid())
step = 0
while not control.cancelled():
    control.pause_point()
    time.sleep(0.02)  # one "training step"
    step += 1
    print(step, flush=True)
"""


async def until(check, what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # noqa: ASYNC110 — state fed by the reader task and another process
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["signal", "step"])
async def test_generation_pauses_training_without_starving_it(tmp_path: Path, mode: str) -> None:
    control = tmp_path / "control"
    control.mkdir()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(control), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE)
    share = FairShare(starve_after=0.5, mode=mode)  # type: ignore[arg-type]
    child = share.register(1, control)
    child.pid = proc.pid

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            child.stepped(int(line), True)

    reader = asyncio.create_task(read())
    try:
        while child.step < 3:  # noqa: ASYNC110 — fed by the reader task
            await asyncio.sleep(0.01)
        async with share.gpu_for_generation():
            # "step" mode: the step in flight ends, then the child blocks (waits are generous: CI machines lag)
            await until(child.paused, "the child to pause")
            assert child.stopped == (mode == "signal")
            await asyncio.sleep(0.05)  # lines printed before the pause are still in the pipe: let the reader drain
            held = child.step
            await asyncio.sleep(0.3)
            assert child.step == held, "no training step while generating"
        await until(lambda: child.step > held and not child.paused(), "training to continue after the generation")

        # Back-to-back generations: after starve_after of holds, one generation runs alongside the training.
        # Judged by the policy's decision (paused or not) and by the steps each kind of generation saw; a paused
        # one may still see the step in flight and one already in the pipe when it began (a loaded machine lags).
        paused, running = [], []
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            async with share.gpu_for_generation() as held_children:
                before, was_paused = child.step, child in held_children
                await asyncio.sleep(0.15)
                (paused if was_paused else running).append(child.step - before)
        assert running and any(n > 0 for n in running), f"training was starved: {paused=} {running=}"
        assert len(paused) > len(running), f"most generations should still have priority: {paused=} {running=}"
        assert all(n <= 2 for n in paused), f"training stepped during paused generations: {paused=}"
    finally:
        (control / "cancel").touch()
        await asyncio.wait_for(proc.wait(), 10)
        reader.cancel()
        share.unregister(1)
