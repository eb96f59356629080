"""The installed ML stack against the tested set: the repository's locks parse, a release outside them is named
with what to install instead, and `atelier worker --check` reports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from worker.stack_versions import ML_STACK, Mismatch, locked_versions, mismatches, read_pins, stack_report

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_locks_pin_the_ml_stack() -> None:
    tested = locked_versions(ROOT / "requirements")
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors"):
        assert name in tested, f"{name} is not pinned in requirements/"
    assert set(tested) <= set(ML_STACK)
    pins = read_pins(ROOT / "requirements" / "worker.lock")
    assert "torch" not in pins  # the installer picks torch's build; requirements/torch.txt pins its release


def test_this_environment_is_the_tested_set() -> None:
    """The suite runs on what the lock says (a test run on anything else would not prove the lock)."""
    assert mismatches(locked_versions(ROOT / "requirements")) == []
    ok, line = stack_report()
    assert ok and "transformers" in line


def test_a_release_outside_the_tested_set_is_named_with_the_fix(tmp_path: Path) -> None:
    installed = metadata.version("peft")
    found = mismatches({"peft": "0.0.1", "torch": metadata.version("torch").split("+")[0] + "+cu128",
                        "bitsandbytes-not-a-package": "1.0"})
    assert Mismatch("peft", installed, "0.0.1") in found
    assert all(m.package != "torch" for m in found)  # a CUDA build of the tested release is the tested release
    text = str(next(m for m in found if m.package == "peft"))
    assert f"peft {installed}" in text and "pip install 'peft==0.0.1'" in text
    assert "is not installed" in str(next(m for m in found if m.package == "bitsandbytes-not-a-package"))


@pytest.mark.slow
def test_worker_check_reports_the_stack(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements"
    requirements.mkdir()
    (requirements / "worker.lock").write_text("peft==0.0.1 \\\n    --hash=sha256:00\ndiffusers==" +
                                              metadata.version("diffusers") + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(ATELIER_DATA_DIR=str(tmp_path / "data"), ATELIER_REQUIREMENTS_DIR=str(requirements))
    proc = subprocess.run([sys.executable, "-m", "cli.main", "worker", "--check", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    ok, detail = report["ML stack"]
    assert proc.returncode == 1 and ok is False
    assert "peft" in detail and "pip install 'peft==0.0.1'" in detail and "diffusers" not in detail
