"""The global options of one ``atelier`` invocation; kept apart so that ``atelier --help`` imports nothing else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliState:
    """Global options, stored on the root context (``ctx.obj``) by ``cli.main``."""

    user: str = "local"
    json: bool = False
