"""The job commands as a person runs them: `atelier train`/`generate` in-process, `atelier run` with its
embedded Redis and `--queue --wait`, `atelier jobs`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.worker.conftest import ROOT, settings_env, wait_for

pytestmark = pytest.mark.slow  # trains and generates through the CLI and a worker


async def _cli(env: dict[str, str], *args: str, limit: float = 420) -> tuple[int, Any, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli.main", *args, cwd=ROOT, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), limit)
    text = stdout.decode()
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    return proc.returncode, data, stderr.decode()


async def test_train_and_generate_in_process(services, make_dataset, settings, tmp_path: Path) -> None:
    local = await services.users.local_actor("local")
    await make_dataset(local, "shapes", count=3)
    env = settings_env(settings)
    rc, data, err = await _cli(env, "train", "shapes", "--name", "Ink", "--trigger", "zqxink", "--category",
                               "style", "--base", "tiny-sd15", "--epochs", "1", "--resolution", "32", "--repeats",
                               "1", "--sample-steps", "2", "--set", "grid_strengths=[0.0, 1.0]",
                               "--precision", "no", "--json")
    assert rc == 0, err
    assert data["ok"] and data["job"]["status"] == "succeeded" and data["element"]["status"] == "ready"

    out_dir = tmp_path / "images"
    rc, data, err = await _cli(env, "generate", "a cat", "--element", "Ink:0.8", "--count", "2", "--seed", "3",
                               "--aspect", "3:4", "--out", str(out_dir), "--json")
    assert rc == 0, err
    files = [Path(f) for f in data["files"]]
    assert len(files) == 2 and all(f.parent == out_dir.resolve() for f in files)
    assert Image.open(files[0]).size == (48, 64)
    assert data["job"]["result"]["seeds"] == [3, 4]

    rc, data, err = await _cli(env, "jobs", "list", "--json")
    assert rc == 0 and [j["kind"] for j in data["jobs"]] == ["generate", "train"], err

    rc, _, err = await _cli(env, "generate", "a cat", "--element", "Nope", "--out", str(out_dir))
    assert rc == 1 and "No Element" in err and "Traceback" not in err


async def test_run_without_discord_serves_the_queue_with_embedded_redis(services, make_dataset, settings,
                                                                        tmp_path: Path) -> None:
    env = settings_env(settings)
    env.pop("ATELIER_REDIS_URL")  # the single-box case: an embedded Redis in the data dir
    log = open(tmp_path / "run.log", "wb")  # noqa: ASYNC230, SIM115 — closed below
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--queues", "generate"], cwd=ROOT,  # noqa: ASYNC220
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url_file = settings.data_dir / "redis" / "url"
        await wait_for(url_file.exists, 120, "the embedded Redis")
        out_dir = tmp_path / "queued"
        rc, data, err = await _cli(env, "generate", "a red cube", "--queue", "--wait", "--out", str(out_dir),
                                   "--json")
        assert rc == 0, err + (tmp_path / "run.log").read_text()
        assert data["job"]["status"] == "succeeded" and len(data["files"]) == 1
        job_id = data["job"]["id"]
        rc, data, err = await _cli(env, "jobs", "show", str(job_id), "--json")
        assert rc == 0 and data["job"]["attempt"] == 1
        rc, data, err = await _cli(env, "jobs", "cancel", str(job_id))
        assert rc == 1 and "already finished" in err
        # The notification outbox prints to the console when there is no Discord.
        await wait_for(lambda: "image(s)" in (tmp_path / "run.log").read_text(), 30, "the console notification")
    finally:
        server.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(server.wait, 60)
        log.close()
    output = (tmp_path / "run.log").read_text()
    assert rc == 0, output
    assert "No ATELIER_DISCORD_TOKEN" in output and "Traceback" not in output
    assert not (settings.data_dir / "redis" / "url").exists(), "the embedded Redis was shut down"
