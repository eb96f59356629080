"""The embedded Redis: started in the data dir, shared by processes on one box, stopped by the last one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import redis.asyncio as aioredis

from storage.queue.embedded_redis import EmbeddedRedis, embedded_redis, find_redis_server, redis_for

ROOT = Path(__file__).resolve().parents[2]


async def _ping(url: str) -> bool:
    client = aioredis.from_url(url)
    try:
        return bool(await client.ping())
    except OSError:
        return False
    except Exception:  # noqa: BLE001 — any redis error means "not answering"
        return False
    finally:
        await client.aclose()


async def test_starts_in_data_dir_and_stops(tmp_path: Path) -> None:
    async with embedded_redis(tmp_path) as url:
        assert url.startswith("unix://") and url.endswith("redis.sock")
        assert Path(url.removeprefix("unix://")).parent == (tmp_path / "redis").resolve()
        client = aioredis.from_url(url)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        await client.aclose()
        assert (tmp_path / "redis" / "url").read_text() == url
    assert not await _ping(url)
    assert not (tmp_path / "redis" / "url").exists()
    assert (tmp_path / "redis" / "appendonly.aof").exists() or any((tmp_path / "redis").glob("appendonly*"))


async def test_second_process_joins_and_last_one_stops(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = await first.start()
    # Another process on the box joins the same server and leaves while we still use it.
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from storage.queue.embedded_redis import embedded_redis
        async def main():
            async with embedded_redis(Path({str(tmp_path)!r})) as url:
                print(url)
        asyncio.run(main())
    """)
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True,
                                  timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == url
    assert await _ping(url), "the joining process must not stop a server someone else still uses"
    await first.stop()
    assert not await _ping(url)


async def test_dead_users_do_not_keep_it_alive(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = await server.start()
    client = aioredis.from_url(url)
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    await client.sadd("atelier:embedded:users", dead.pid)  # a process that was SIGKILLed without cleaning up
    await client.aclose()
    await server.stop()
    assert not await _ping(url)


async def test_long_data_dir_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    async with embedded_redis(deep) as url:
        assert url.startswith("redis://127.0.0.1:")
        assert await _ping(url)
    assert not await _ping(url)


async def test_configured_url_is_used_as_is(tmp_path: Path) -> None:
    async with redis_for("redis://example.invalid:6379/3", tmp_path) as url:
        assert url == "redis://example.invalid:6379/3"
    assert not (tmp_path / "redis").exists()


def test_finds_a_server_binary() -> None:
    exe = find_redis_server()
    assert os.access(exe, os.X_OK)
