"""The words a job run ends with, and why a worker stops a training child (shared by the worker, CLI and tests)."""

from __future__ import annotations

from typing import Literal

# skipped: another dispatch already ran it; retrying: failed, queued again; lost: another worker owns it now.
Outcome = Literal["skipped", "succeeded", "failed", "cancelled", "retrying", "lost"]
StopReason = Literal["cancel", "timeout", "lost", "shutdown"]  # shutdown: the worker stops, the job is handed back
