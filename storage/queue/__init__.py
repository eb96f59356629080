"""The queue side of jobs: arq enqueueing, the embedded Redis, the notifications outbox, job transitions."""
