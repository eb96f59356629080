"""No secrets in output: URLs with credentials are held as secrets by the settings and masked in every printout
and log line — including `atelier worker --check`, in its ok and its FAIL lines."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.queue.embedded_redis import find_redis_server
from storage.redact import MaskingFilter, install_log_masking, mask_urls
from storage.settings import load_settings
from tests.worker.conftest import ROOT


def test_mask_urls_hides_passwords_and_tokens_only() -> None:
    assert mask_urls("cannot reach redis://:hunter2@10.0.0.5:6379/0: refused") == \
        "cannot reach redis://:***@10.0.0.5:6379/0: refused"
    assert mask_urls("postgresql+asyncpg://atelier:s3cr%40t@db/atelier") == "postgresql+asyncpg://atelier:***@db/atelier"
    assert mask_urls("https://ghp_token123@github.com/x") == "https://***@github.com/x"
    assert mask_urls("redis://localhost:6379/0 and s3://bucket/prefix") == "redis://localhost:6379/0 and s3://bucket/prefix"


def test_settings_hold_urls_as_secrets(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, redis_url="redis://:hunter2@h:1/0",
                      database_url="postgresql+asyncpg://u:dbpass@h/x", blob_url="s3://KEY:SECRET@bucket/p")
    for shown in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2" not in shown and "dbpass" not in shown and "SECRET" not in shown
    assert s.resolved_redis_url == "redis://:hunter2@h:1/0"  # the code that connects still gets the value
    assert s.resolved_database_url.endswith("u:dbpass@h/x")


def test_log_lines_are_masked_with_arguments_and_tracebacks() -> None:
    logger = logging.getLogger("atelier.test.secrets")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_log_masking(logger)
        assert any(isinstance(f, MaskingFilter) for f in handler.filters)
        logger.warning("connecting to %s", "redis://:hunter2@h:1/0")
        try:
            raise ConnectionError("refused: postgresql://u:dbpass@h/x")
        except ConnectionError:
            logger.exception("database down")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "redis://:***@h:1/0" in text and "postgresql://u:***@h/x" in text
    assert "hunter2" not in text and "dbpass" not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_worker_check_masks_the_redis_url_in_ok_and_fail_lines(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--requirepass", "hunter2", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        env.update(ATELIER_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
        for url, verdict in ((f"redis://:hunter2@127.0.0.1:{port}/0", "ok"),
                             (f"redis://:hunter2@127.0.0.1:{_free_port()}/0", "FAIL")):
            proc = subprocess.run([sys.executable, "-m", "cli.main", "worker", "--check"], cwd=tmp_path,
                                  env={**env, "ATELIER_REDIS_URL": url}, capture_output=True, text=True, timeout=180)
            line = next(ln for ln in proc.stdout.splitlines() if "redis:" in ln)
            assert line.startswith(verdict) and "redis://:***@127.0.0.1" in line, proc.stdout
            assert "hunter2" not in proc.stdout + proc.stderr
    finally:
        server.terminate()
        server.wait(10)
