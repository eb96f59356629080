"""``atelier train … --plan``: steps, time and the GPU memory plan against ATELIER_GPU_MEMORY_GB; runs that fit
in no mode are refused with what they need — and nothing is queued or charged either way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import noise_png


def _cli(data_dir: Path):
    runner = CliRunner()

    def invoke(*args: str, budget: float | None = None):
        env = {"ATELIER_DATA_DIR": str(data_dir)}
        if budget is not None:
            env["ATELIER_GPU_MEMORY_GB"] = str(budget)
        result = runner.invoke(app, ["--json", *args], env=env)
        return result.exit_code, json.loads(result.stdout)

    return invoke


def _clean_env(mp: pytest.MonkeyPatch, cwd: Path) -> None:
    mp.chdir(cwd)
    for var in [v for v in os.environ if v.startswith("ATELIER_")]:
        mp.delenv(var)


@pytest.fixture(scope="module")
def plan_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset "DS" of twelve 512 px images for the module: a plan reads it and writes nothing (each test
    checks that nothing was queued)."""
    root = tmp_path_factory.mktemp("plan")
    pics = root / "pics"
    pics.mkdir()
    paths = []
    for seed in range(12):
        p = pics / f"img{seed}.png"
        p.write_bytes(noise_png(seed, size=512))
        paths.append(str(p))
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp, root)
        invoke = _cli(root / "data")
        assert invoke("dataset", "create", "DS")[0] == 0
        assert invoke("dataset", "add", "DS", *paths)[0] == 0
    return root / "data"


@pytest.fixture
def plan_cli(plan_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _clean_env(monkeypatch, tmp_path)
    return _cli(plan_data_dir)


@pytest.mark.parametrize(("base", "budget"), [("flux-dev", 24), ("sdxl", 12), ("sd15", 8)])
def test_plan_fits_the_budget(plan_cli, base: str, budget: float) -> None:
    code, data = plan_cli("train", "DS", "--base", base, "--plan", budget=budget)
    assert code == 0, data
    plan = data["plan"]
    memory = plan["memory"]
    assert memory["budget_gb"] == budget and memory["peak_gb"] <= budget
    assert memory["mode"] in ("bf16", "fp8", "int8", "nf4")
    assert plan["steps"] > 0 and plan["estimate_seconds"] > 0
    assert set(memory["phases"]) == {"caching", "step", "sampling"}
    assert max(memory["phases"].values()) == memory["peak_gb"]
    # Nothing was queued or charged by a plan.
    code, jobs = plan_cli("jobs", "list")
    assert code == 0 and jobs["jobs"] == []


def test_flux_dev_in_6_gb_is_refused_with_what_it_needs(plan_cli) -> None:
    code, data = plan_cli("train", "DS", "--base", "flux-dev", "--plan", budget=6)
    assert code == 1 and data["ok"] is False
    message = data["error"]["message"]
    assert "GB" in message and "6 GB" in message
    needs = float(message.split("needs about ")[1].split(" GB")[0])
    assert needs > 6
    assert "resolution" in data["error"]["hint"] or "sd15" in data["error"]["hint"]
    # The same request, queued, is refused before anything is written.
    code, data = plan_cli("train", "DS", "--base", "flux-dev", "--name", "X", "--trigger", "zqxx", "--queue",
                          budget=6)
    assert code == 1 and "GPU memory" in data["error"]["message"]
    code, jobs = plan_cli("jobs", "list")
    assert jobs["jobs"] == []


def test_an_explicit_mode_is_kept_or_refused(plan_cli) -> None:
    code, data = plan_cli("train", "DS", "--base", "flux-dev", "--plan", "--memory-mode", "nf4", budget=24)
    assert code == 0 and data["plan"]["memory"]["mode"] == "nf4"
    code, data = plan_cli("train", "DS", "--base", "flux-dev", "--plan", "--memory-mode", "bf16", budget=24)
    assert code == 1 and "use memory_mode auto" in data["error"]["hint"]
    code, data = plan_cli("train", "DS", "--base", "flux-dev", "--plan", "--memory-mode", "offload", budget=24)
    assert code == 1 and "memory_mode" in data["error"]["message"]  # block swap is for generation only


def test_worker_check_prints_the_gpu_and_its_budget(plan_cli) -> None:
    code, report = plan_cli("worker", "--check", "--json", budget=24)
    ok, detail = report["gpu memory"]
    assert ok and "budget 24 GB (ATELIER_GPU_MEMORY_GB)" in detail
    assert detail.startswith(("no NVIDIA GPU", "nvidia-smi")) or " GB;" in detail  # the GPU, or why there is none
