"""Worker tunables that are not user settings (those live in storage.settings.Settings)."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from storage.settings import Settings

KNOWN_QUEUES = ("train", "generate")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerOptions:
    """How one worker process behaves.

    ``work_dir`` holds per-job folders (``jobs/<id>/``: the training spec, control files and the trainer's
    output with its epoch checkpoints). It is deterministic per job, so a job re-run after a crash resumes from
    its last checkpoint — on another machine too when the folder is on shared storage.
    """

    queues: tuple[str, ...] = KNOWN_QUEUES
    worker_id: str = field(default_factory=default_worker_id)
    work_dir: Path | None = None
    poll_delay: float = 0.05  # arq polls Redis this often: the floor of job start latency
    heartbeat_seconds: float | None = None  # default: a quarter of Settings.stale_heartbeat_seconds, ≤ 5 s
    progress_interval: float = 1.0  # job row progress writes; phase/epoch changes and the last step always
    publish_interval: float = 0.2  # live messages to followers, same rule
    reconcile_seconds: int = 10
    cancel_grace_seconds: float = 10.0
    child_argv: tuple[str, ...] = (sys.executable, "-m", "worker.train_child")
    max_pipelines: int = 2
    max_adapters: int = 8
    fair_share: bool = True  # pause training while a generation runs (worker.fairshare)
    fair_share_mode: str = "signal"  # "signal" (SIGSTOP/SIGCONT, immediate) or "step" (at the next step boundary)
    fair_share_max_wait: float = 10.0

    def __post_init__(self) -> None:
        unknown = [q for q in self.queues if q not in KNOWN_QUEUES]
        if unknown or not self.queues:
            raise ValueError(f"unknown queue(s) {', '.join(unknown) or '(none)'}: use train, generate or both")
        if self.fair_share_mode not in ("signal", "step"):
            raise ValueError("fair_share_mode must be 'signal' or 'step'")
        if not 1 <= self.reconcile_seconds <= 60:
            raise ValueError("reconcile_seconds must be between 1 and 60")

    def resolved_work_dir(self, settings: Settings) -> Path:
        return (self.work_dir or settings.work_dir or settings.data_dir / "work").resolve()

    def heartbeat(self, settings: Settings) -> float:
        if self.heartbeat_seconds is not None:
            return self.heartbeat_seconds
        return max(0.2, min(5.0, settings.stale_heartbeat_seconds / 4))
