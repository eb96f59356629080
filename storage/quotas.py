"""Training slots: N per user per rolling period, consumed atomically with the job row, refunded at most once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.actors import Actor
from storage.db.engine import Database
from storage.db.models import QuotaCharge, User, utcnow
from storage.errors import Forbidden, InvalidInput, QuotaExceeded
from storage.settings import Settings
from storage.users import UserService

MAX_SLOTS = 10_000  # training slots per period an admin can give one member


@dataclass(frozen=True)
class QuotaInfo:
    limit: int | None  # None = unlimited (admins)
    used: int
    remaining: int | None
    resets_at: datetime | None  # when the oldest slot in use frees; None when nothing is in use
    period_days: int = 30

    @property
    def unlimited(self) -> bool:
        return self.limit is None


def _when(dt: datetime, now: datetime) -> str:
    days = (dt - now).total_seconds() / 86400
    span = f"in {days:.0f} days" if days >= 1.5 else f"in {max(1, round(days * 24))} hours"
    return f"{dt:%Y-%m-%d %H:%M} UTC ({span})"


class QuotaService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.settings.quota_period_days)

    async def remaining(self, actor: Actor) -> QuotaInfo:
        async with self.db.read() as session:
            return await self.info_in(session, actor)

    async def info_in(self, session: AsyncSession, actor: Actor, *, now: datetime | None = None) -> QuotaInfo:
        now = now or utcnow()
        user = await session.get(User, actor.user_id)
        used, oldest = (await session.execute(
            select(func.count(QuotaCharge.id), func.min(QuotaCharge.charged_at)).where(
                QuotaCharge.user_id == actor.user_id, QuotaCharge.refunded_at.is_(None),
                QuotaCharge.charged_at > now - self.period)
        )).one()
        resets_at = oldest + self.period if oldest is not None else None
        if actor.is_admin or (user is not None and user.is_admin):
            return QuotaInfo(None, used, None, resets_at, self.settings.quota_period_days)
        limit = self._limit(user)
        return QuotaInfo(limit, used, max(0, limit - used), resets_at, self.settings.quota_period_days)

    def _limit(self, user: User | None) -> int:
        if user is not None and user.train_slots_override is not None:
            return user.train_slots_override
        return self.settings.train_slots_per_period

    @staticmethod
    async def lock_member(session: AsyncSession, actor: Actor) -> None:
        """Serialise this member's quota-checked writes until the transaction ends.

        PostgreSQL: the user row is locked FOR NO KEY UPDATE — it does not conflict with the KEY SHARE lock that
        inserting a job row (a foreign key to users) takes, where FOR UPDATE deadlocks. SQLite: the IMMEDIATE
        write transaction already serialises all writers.
        """
        await session.execute(select(User.id).where(User.id == actor.user_id).with_for_update(key_share=True))

    async def charge(self, session: AsyncSession, actor: Actor, job_id: int | None, *, kind: str = "train") -> QuotaInfo:
        """Consume one slot for ``job_id`` inside the caller's transaction, or raise :class:`QuotaExceeded`.

        Atomic under concurrency: on PostgreSQL the user row is locked (FOR NO KEY UPDATE) so concurrent charges
        for one user run one after another; on SQLite the IMMEDIATE write transaction already serialises them.
        """
        await self.lock_member(session, actor)
        now = utcnow()
        info = await self.info_in(session, actor, now=now)
        if info.limit is not None and info.used >= info.limit:
            if info.limit == 0:
                raise QuotaExceeded("Training is not enabled for your account.",
                                    "Ask a server admin to give you training slots.")
            hint = f"The next slot frees on {_when(info.resets_at, now)}." if info.resets_at else ""
            raise QuotaExceeded(
                f"You have used all {info.limit} training slots of this {self.settings.quota_period_days}-day period.",
                hint,
            )
        session.add(QuotaCharge(user_id=actor.user_id, job_id=job_id, kind=kind, charged_at=now))
        await session.flush()
        return QuotaInfo(info.limit, info.used + 1,
                         None if info.limit is None else info.limit - info.used - 1,
                         info.resets_at or now + self.period, self.settings.quota_period_days)

    async def refund_in(self, session: AsyncSession, job_id: int, reason: str) -> bool:
        """Give the slot of ``job_id`` back (system failure, cancel before start). True only the first time."""
        result = await session.execute(
            update(QuotaCharge)
            .where(QuotaCharge.job_id == job_id, QuotaCharge.refunded_at.is_(None))
            .values(refunded_at=utcnow(), refund_reason=reason[:64])
        )
        return result.rowcount == 1

    async def refund(self, job_id: int, reason: str) -> bool:
        async with self.db.transaction() as session:
            return await self.refund_in(session, job_id, reason)

    async def set_limit(self, admin: Actor, target_external_id: str, slots: int | None) -> QuotaInfo:
        """Admin only: give ``target`` ``slots`` per period (None = back to the default)."""
        if not admin.is_admin:
            raise Forbidden("Only Atelier admins can change training quotas.")
        if slots is not None and not 0 <= slots <= MAX_SLOTS:
            raise InvalidInput(f"{slots} is not a valid number of slots.",
                               f"Use 0–{MAX_SLOTS}, or reset to the default.")

        target = await UserService(self.db, self.settings).ensure(target_external_id)
        async with self.db.transaction() as session:
            await session.execute(update(User).where(User.id == target.user_id).values(train_slots_override=slots))
            return await self.info_in(session, target)
