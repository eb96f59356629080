"""The arq side of jobs: queue names, the msgpack serializer, and the enqueuer.

Redis carries only ids. The database row is the truth: a row is committed first, then enqueued under a
deterministic arq job id (:func:`arq_job_id` = kind + row id + dispatch number), so enqueueing the same dispatch twice
is a no-op while arq still holds it, and the reconciler can tell whether a queued row is missing from Redis.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import msgpack
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import health_check_key_suffix, in_progress_key_prefix, job_key_prefix

TRAIN_QUEUE = "atelier:train"
GENERATE_QUEUE = "atelier:generate"
QUEUES = {"train": TRAIN_QUEUE, "generate": GENERATE_QUEUE}
FUNCTIONS = {"train": "run_train_job", "generate": "run_generate_job"}


def serialize(obj: Any) -> bytes:
    """arq's job/result serializer: msgpack, never pickle."""
    return msgpack.packb(obj, use_bin_type=True, default=_fallback)


def deserialize(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _fallback(obj: Any) -> Any:
    # arq stores exceptions as results; keep their text rather than failing the serialisation.
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise TypeError(f"cannot serialize {type(obj).__name__} for arq")


def redis_settings(url: str, *, retries: int = 10) -> RedisSettings:
    """arq connection settings from a URL: ``redis://host:port/db``, ``rediss://…``, ``unix:///path.sock?db=N``."""
    try:
        rs = RedisSettings.from_dsn(url)
    except RuntimeError:
        raise ValueError(f"invalid Redis URL {url!r}: use redis://host:port/db or unix:///path/redis.sock") from None
    rs.conn_retries = retries
    rs.conn_retry_delay = 1
    return rs


def job_channel(job_id: int) -> str:
    """Redis pub/sub channel on which a worker publishes a job's live progress (JSON messages)."""
    return f"atelier:job:{job_id}"


def arq_job_id(kind: str, job_id: int, dispatch: int) -> str:
    return f"atelier:{kind}:{job_id}:{dispatch}"


async def connect(url: str, *, retries: int = 10) -> ArqRedis:
    """An arq Redis pool with the msgpack serializer (retries the first connection ``retries`` times, 1 s apart)."""
    return await create_pool(redis_settings(url, retries=retries), job_serializer=serialize,
                             job_deserializer=deserialize, default_queue_name=TRAIN_QUEUE)


class Enqueuer:
    """Puts committed job rows on their arq queue. Only ids travel: ``(job_id, dispatch)``."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    @classmethod
    async def connect(cls, url: str) -> Enqueuer:
        return cls(await connect(url))

    async def aclose(self) -> None:
        await self.redis.aclose(close_connection_pool=True)

    async def enqueue(self, job: Any) -> bool:
        """Enqueue a committed ``Job`` row (or any object with kind/id/attempts); True if newly added.

        Call only after the row's transaction committed: the worker re-reads the row by id.
        """
        kind, dispatch = str(job.kind), int(job.attempts)
        queued = await self.redis.enqueue_job(
            FUNCTIONS[kind], int(job.id), dispatch,
            _job_id=arq_job_id(kind, int(job.id), dispatch), _queue_name=QUEUES[kind],
        )
        return queued is not None

    async def present(self, kind: str, job_id: int, dispatch: int) -> bool:
        """Whether arq still holds this dispatch (queued, deferred or running)."""
        arq_id = arq_job_id(kind, job_id, dispatch)
        found = await self.redis.exists(job_key_prefix + arq_id, in_progress_key_prefix + arq_id)
        return bool(found)

    async def workers_alive(self, kind: str) -> bool:
        """Whether some worker serves ``kind`` (arq refreshes a health-check key every 30 s while it runs)."""
        return bool(await self.redis.exists(QUEUES[kind] + health_check_key_suffix))

    async def depth(self, kind: str) -> int:
        return int(await self.redis.zcard(QUEUES[kind]))

    async def publish(self, job_id: int, message: dict[str, Any]) -> None:
        await self.redis.publish(job_channel(job_id), json.dumps(message, default=str))

    async def subscribe(self, job_id: int) -> AsyncGenerator[dict[str, Any], None]:
        """Live messages a worker publishes for ``job_id`` (progress, status); ends when the caller stops."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(job_channel(job_id))
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    yield {}
                    continue
                try:
                    yield json.loads(msg["data"])
                except (ValueError, TypeError):
                    continue
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
