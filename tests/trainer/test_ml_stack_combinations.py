"""The text-encoder LoRA test under the transformers + peft pair that broke Atelier before text encoders went
through peft directly: transformers 5.24.0 demands a peft that PyPI does not have (≥ 0.22), with peft 0.21.2.

The pair is installed (without dependencies) into a folder put first on the path of a subprocess that runs
``test_text_encoder_lora.py``; when it is already the installed pair, no overlay is needed. Skipped only when the
pair cannot be installed (no package index reachable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMBINATION = {"transformers": "5.24.0", "peft": "0.21.2"}


def _overlay(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A folder holding the pair, or None when the installed packages already are the pair."""
    if all(metadata.version(name) == version for name, version in COMBINATION.items()):
        return None
    target = tmp_path_factory.mktemp("stack-overlay")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           *(f"{n}=={v}" for n, v in COMBINATION.items())], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"cannot install {COMBINATION}: {proc.stderr.strip()[-300:]}")
    return target


@pytest.mark.slow
def test_text_encoder_lora_with_transformers_5_24_and_peft_0_21(tmp_path_factory: pytest.TempPathFactory) -> None:
    overlay = _overlay(tmp_path_factory)
    env = dict(os.environ)
    paths = [str(overlay)] if overlay else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), env.get("PYTHONPATH", "")])
    check = ("from importlib import metadata; import transformers, peft; "
             "print(transformers.__version__, peft.__version__)")
    versions = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
    assert versions.stdout.split() == list(COMBINATION.values())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/trainer/test_text_encoder_lora.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
