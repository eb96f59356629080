"""The reconciler (an arq cron on every worker; arq's unique cron ids make one worker run each tick).

Redis is not the truth — the job rows are. Each run:
1. running rows whose heartbeat is older than ``stale_heartbeat_seconds`` (the worker crashed, was SIGKILLed or
   lost power): re-queued as a new attempt with one "retrying" notification — the next attempt resumes from the
   job's last checkpoint — or failed with exactly one notification when no attempts are left;
2. queued rows whose current dispatch Redis does not hold (Redis restarted, FLUSHALL, an enqueue that failed after
   the commit): enqueued again under the same deterministic arq id, so a row is never queued twice;
3. queued rows with no attempts left (defensive): failed with one notification.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from storage.db.models import utcnow
from worker.app import WorkerApp

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, app: WorkerApp) -> None:
        self.app = app

    async def run_once(self) -> dict[str, int]:
        t, enq = self.app.transitions, self.app.enqueuer
        stats = {"requeued_stale": 0, "stale_ended": 0, "reenqueued": 0, "failed_exhausted": 0}
        cutoff = utcnow() - timedelta(seconds=self.app.settings.stale_heartbeat_seconds)
        for job_id, attempt in await t.stale_running(cutoff):
            job = await t.recover_stale(job_id, attempt, cutoff)
            if job is not None:
                stats["requeued_stale"] += 1
                await self.app.enqueue(job)
            else:
                stats["stale_ended"] += 1
        if enq is None:
            return stats
        for job in await t.queued():
            if job.attempts >= job.max_attempts:
                stats["failed_exhausted"] += int(await t.fail_exhausted(job.id))
            elif not await enq.present(job.kind, job.id, job.attempts):
                if await enq.enqueue(job):
                    stats["reenqueued"] += 1
        if any(stats.values()):
            log.info("reconciler: %s", stats)
        return stats
