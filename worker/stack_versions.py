"""The installed ML stack compared with the set Atelier was tested with (``requirements/``).

The tested set is the lock (``requirements/worker.lock``, made by ``scripts/lock.sh``) plus the torch pin
(``requirements/torch.txt``; torch itself is installed separately so a GPU box can take a CUDA build). A worker
checks at start and ``atelier worker --check`` reports: a transformers or peft release nobody tested is how a
working install breaks overnight.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The packages whose releases change training or generation behaviour.
ML_STACK = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "tokenizers",
            "huggingface-hub", "numpy", "bitsandbytes", "torchao")
REQUIREMENTS_ENV = "ATELIER_REQUIREMENTS_DIR"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)")


@dataclass(frozen=True)
class Mismatch:
    package: str
    installed: str | None  # None: not installed
    tested: str

    def __str__(self) -> str:
        have = f"{self.package} {self.installed}" if self.installed else f"{self.package} is not installed"
        return f"{have} (tested: {self.tested}) — install it with: pip install '{self.package}=={self.tested}'"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_dir() -> Path:
    """``$ATELIER_REQUIREMENTS_DIR`` (set in the Docker images), else the source tree's ``requirements/``."""
    env = os.environ.get(REQUIREMENTS_ENV, "").strip()
    return Path(env) if env else Path(__file__).resolve().parents[1] / "requirements"


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements/lock file (hash and comment lines skipped)."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def locked_versions(directory: Path | None = None) -> dict[str, str]:
    """The tested versions of the ML stack; empty when no lock is found (e.g. a plain ``pip install atelier``)."""
    directory = directory or requirements_dir()
    pins: dict[str, str] = {}
    for name in ("worker.lock", "torch.txt"):
        path = directory / name
        if path.is_file():
            pins.update(read_pins(path))
    return {name: pins[name] for name in ML_STACK if name in pins}


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> str:
    return version.split("+", 1)[0]  # torch 2.13.0+cu128 is the tested 2.13.0


def mismatches(tested: dict[str, str] | None = None) -> list[Mismatch]:
    """Each ML-stack package whose installed release differs from the tested one."""
    tested = locked_versions() if tested is None else tested
    found = []
    for name, version in tested.items():
        have = _installed(name)
        if have is None or _release(have) != _release(version):
            found.append(Mismatch(name, have, version))
    return found


def stack_report() -> tuple[bool, str]:
    """(ok, one line) for ``atelier worker --check`` and the worker's start-up log."""
    tested = locked_versions()
    if not tested:
        return True, f"no lock found in {requirements_dir()} (set {REQUIREMENTS_ENV}); versions not compared"
    wrong = mismatches(tested)
    if wrong:
        return False, "outside the tested set: " + "; ".join(str(m) for m in wrong)
    return True, "the tested set: " + ", ".join(f"{n} {v}" for n, v in tested.items() if n in ML_STACK[:5])
