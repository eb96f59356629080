"""Per-member disk quota: the bytes of stored images across all of a member's datasets.

Counted from the rows (``DatasetImage.byte_size``), so it is exact, cheap and the same on every machine. A picture
in two datasets counts twice: each dataset can be exported and deleted on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db.models import Dataset, DatasetImage
from storage.wording import human_bytes


@dataclass(frozen=True)
class StorageUse:
    used: int
    limit: int | None  # None: unlimited (admins)

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    def text(self) -> str:
        """``"12.3 MB of 2.0 GB"`` (or ``"12.3 MB (no limit)"``)."""
        return f"{human_bytes(self.used)} of {human_bytes(self.limit)}" if self.limit is not None else \
            f"{human_bytes(self.used)} (no limit)"


async def member_bytes(session: AsyncSession, user_id: int) -> int:
    return int(await session.scalar(
        select(func.coalesce(func.sum(DatasetImage.byte_size), 0))
        .join(Dataset, Dataset.id == DatasetImage.dataset_id).where(Dataset.owner_id == user_id)) or 0)


def full_reason(use: StorageUse) -> tuple[str, str]:
    """(reason, hint) for an image that does not fit the member's storage."""
    return (f"Your storage is full: your datasets hold {use.text()}.",
            "Delete images or datasets you no longer need (/dataset remove, /dataset delete), then add it again.")
