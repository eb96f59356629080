"""Fair share of one GPU between a long training run and short generation requests in the same worker.

Policy (one worker process = one GPU):

* Generation has priority: while a generation runs, the worker's training subprocesses are paused. Nothing is
  killed or reloaded — a paused child keeps its model and optimizer state in (GPU) memory and carries on at full
  speed the moment the generation ends. Two ways to pause (``mode``):

  - ``"signal"`` (default on POSIX): ``SIGSTOP`` the child at once and ``SIGCONT`` it afterwards. The generation
    starts immediately; whatever GPU kernels the child had queued finish, then the device is the generation's.
  - ``"step"``: create the child's ``pause`` file; the child blocks at its next step boundary
    (``TrainControl.pause_point``, writing a ``paused`` file while it waits). The step in flight finishes
    alongside the generation's first moments (``settle=True`` waits for it to end first, at most ``max_wait`` s).

* Training is never starved: when generations keep coming and have held the training for ``starve_after``
  seconds, the next generation runs without pausing it (both share the device for that one generation), and the
  one after pauses it again. A stretch of holds ends once the training has run freely for at least as long as it
  was last held (it is getting half the device or more). Under a constant stream of generations training still
  gets about one generation's worth of time every ``starve_after`` seconds. (Counted in held time, not in steps:
  a step that slips in between two back-to-back generations must not reset the count.)
* ``enabled=False`` turns the policy off (generation and training simply compete): the benchmark's baseline.

GPU memory (one GPU, never two copies of a base model on it): a paused training keeps its memory, so a
generation only gets what the training's plan leaves — ``budget_gb`` (ATELIER_GPU_MEMORY_GB or the detected GPU)
minus the planned peak of every running training (:meth:`FairShare.free_gb`). The worker releases its resident
generation pipelines when a training starts; a generation during the training is planned into the memory that is
left (trainer.memory.planner picks the fastest mode that fits: a leaner denoiser with components taking turns on
the GPU, or block swap with the weights in CPU memory), and when not even that fits it **waits** for the training
to end (:meth:`FairShare.plan_generation`). After the training, the next generation reloads its base in the fastest
mode; the lean copy is released before the new one loads (``trainer.pipeline_cache``). Without a known budget
(no GPU) nothing is accounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from trainer.api import BaseModelRef, GenerationRequest
from trainer.memory.planner import MemoryPlan
from worker.child_protocol import PAUSE_FILE, PAUSED_FILE

if TYPE_CHECKING:
    from trainer.generate import Generator  # imports torch

Mode = Literal["signal", "step"]
DEFAULT_MODE: Mode = "signal" if hasattr(signal, "SIGSTOP") else "step"


@dataclass
class TrainingChild:
    """What the fair-share policy needs to know about a running training subprocess."""

    control_dir: Path
    pid: int | None = None
    step: int = 0
    training: bool = False  # in the step loop (pause points are only reached there)
    alive: bool = True
    stopped: bool = False  # held with SIGSTOP right now
    held_since: float | None = None  # start of the current stretch of back-to-back holds
    released_at: float = 0.0  # when the last hold ended
    last_hold: float = 0.0  # how long the last hold lasted
    held_total: float = 0.0  # seconds held in all (not counted against the training's time limit)
    gpu_gb: float = 0.0  # the training's planned peak GPU memory (kept while paused)

    def stepped(self, step: int, training: bool) -> None:
        """A progress event from the child (every training step, and each phase change)."""
        self.step, self.training = step, training

    def starving(self, now: float, starve_after: float) -> bool:
        """Whether the next hold should be skipped; starts or ends the stretch of holds as a side effect."""
        if self.held_since is not None and now - self.released_at >= self.last_hold:
            self.held_since = None  # it ran freely at least as long as it was last held
        if self.held_since is not None and now - self.held_since >= starve_after:
            self.held_since = None
            return True
        if self.held_since is None:
            self.held_since = now
        return False

    def paused(self) -> bool:
        return self.stopped or (self.control_dir / PAUSED_FILE).exists()

    def resume(self) -> None:
        """Undo any pause (also before terminating the child: a stopped process ignores SIGTERM)."""
        if self.stopped and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
        self.stopped = False
        (self.control_dir / PAUSE_FILE).unlink(missing_ok=True)


@dataclass
class FairShare:
    enabled: bool = True
    mode: Mode = DEFAULT_MODE
    settle: bool = False
    max_wait: float = 10.0
    starve_after: float = 2.0
    poll: float = 0.005
    budget_gb: float | None = None  # GPU memory of this worker's GPU (None: unknown, nothing accounted)
    children: dict[int, TrainingChild] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def register(self, job_id: int, control_dir: Path, gpu_gb: float = 0.0) -> TrainingChild:
        child = TrainingChild(control_dir, gpu_gb=gpu_gb)
        self.children[job_id] = child
        return child

    def free_gb(self) -> float | None:
        """GPU memory a generation may plan for now: the budget less every running training's planned peak."""
        if self.budget_gb is None:
            return None
        return max(0.0, self.budget_gb - sum(c.gpu_gb for c in self.children.values() if c.alive))

    async def plan_generation(self, generator: Generator, base: BaseModelRef, request: GenerationRequest,
                              on_wait: Callable[[], Awaitable[None]] | None = None, poll: float = 0.2
                              ) -> MemoryPlan:
        """The generation's memory plan in the memory the running trainings leave; when nothing fits, wait
        (calling ``on_wait`` once) until trainings end and it does."""
        plan = generator.memory_plan(base, request, self.free_gb())
        if plan is None and on_wait is not None:
            await on_wait()
        while plan is None:
            await asyncio.sleep(poll)
            plan = generator.memory_plan(base, request, self.free_gb())
        return plan

    def unregister(self, job_id: int) -> None:
        child = self.children.pop(job_id, None)
        if child is not None:
            child.resume()
            child.alive = False

    def _pause(self, c: TrainingChild) -> None:
        if self.mode == "signal" and c.pid is not None:
            try:
                os.kill(c.pid, signal.SIGSTOP)
                c.stopped = True
                return
            except ProcessLookupError:
                return
        with contextlib.suppress(FileNotFoundError):
            (c.control_dir / PAUSE_FILE).touch()

    async def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        # The child signals through files (it is another process): poll them, briefly.
        while time.monotonic() < deadline and not ready():  # noqa: ASYNC110
            await asyncio.sleep(self.poll)

    @contextlib.asynccontextmanager
    async def gpu_for_generation(self) -> AsyncIterator[list[TrainingChild]]:
        """Hold while generating: this worker's training subprocesses are paused meanwhile (yields those held)."""
        async with self.lock:
            now = time.monotonic()
            children = [c for c in self.children.values() if c.alive] if self.enabled else []
            paused = [c for c in children if not c.starving(now, self.starve_after)]
            for c in paused:
                self._pause(c)
            started = time.monotonic()
            if self.settle:
                await self._wait(lambda: all(not c.alive or not c.training or c.paused() for c in paused),
                                 started + self.max_wait)
            try:
                yield paused
            finally:
                ended = time.monotonic()
                for c in paused:
                    c.resume()
                    c.released_at, c.last_hold = ended, ended - started
                    c.held_total += ended - started
