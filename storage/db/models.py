"""ORM models: the system of record. Every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from trainer.vocabulary import CATEGORIES


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; SQLite hands back naive ones, so re-attach UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use storage.db.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# Deterministic constraint names so Alembic autogenerate/batch migrations can find them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# SQLite reuses the largest rowid after a delete unless AUTOINCREMENT is set; ids appear in messages ("#12")
# and in arq job ids, so an id must never come back for a different row (PostgreSQL sequences never reuse).
_NO_ROWID_REUSE = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


# Built from the one list of categories (trainer.vocabulary): Category.STYLE == "style", …
Category = StrEnum("Category", [(name.upper(), name) for name in CATEGORIES])


class Visibility(StrEnum):
    PRIVATE = "private"
    SERVER = "server"
    PUBLIC = "public"


class ElementStatus(StrEnum):
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"


class ImageSource(StrEnum):
    UPLOAD = "upload"
    GENERATED = "generated"
    ZIP = "zip"


class JobKind(StrEnum):
    TRAIN = "train"
    GENERATE = "generate"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (_NO_ROWID_REUSE,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "discord:<snowflake>" or "local:<name>" — one namespace for every front end.
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    train_slots_override: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner_id", "name_key", name="uq_dataset_owner_name"), _NO_ROWID_REUSE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64))  # casefolded, for case-insensitive uniqueness
    description: Mapped[str] = mapped_column(Text, default="")
    # Multi-concept datasets: group name → {"trigger": str, "repeats": int | None}; images name their group.
    groups: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    images: Mapped[list[DatasetImage]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True,
        order_by="DatasetImage.position",
    )


class DatasetImage(Base):
    __tablename__ = "dataset_images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "blob_hash", name="uq_dataset_image_blob"),
        Index("ix_dataset_images_dataset_position", "dataset_id", "position"),
        _NO_ROWID_REUSE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # 1-based index shown to users; compacted on removal
    blob_hash: Mapped[str] = mapped_column(String(64), index=True)
    byte_size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    phash: Mapped[str] = mapped_column(String(32))
    caption: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16), default=ImageSource.UPLOAD.value)
    original_name: Mapped[str] = mapped_column(String(255), default="")  # display only, never a path
    group_name: Mapped[str] = mapped_column(String(40), default="")  # "" = in no group
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="images")


class Element(Base):
    __tablename__ = "elements"
    __table_args__ = (
        UniqueConstraint("owner_id", "name_key", name="uq_element_owner_name"),
        UniqueConstraint("owner_id", "trigger_key", name="uq_element_owner_trigger"),
        Index("ix_elements_visibility", "visibility", "status"),
        _NO_ROWID_REUSE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(16))
    base_family: Mapped[str] = mapped_column(String(8))
    base_model: Mapped[str] = mapped_column(String(64))
    trigger_word: Mapped[str] = mapped_column(String(40))
    trigger_key: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default=ElementStatus.TRAINING.value)
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.PRIVATE.value)
    guild_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # for visibility=server
    weights_blob: Mapped[str | None] = mapped_column(String(64), nullable=True)  # diffusers-format LoRA
    kohya_blob: Mapped[str | None] = mapped_column(String(64), nullable=True)  # A1111/ComfyUI-format LoRA
    metadata_blob: Mapped[str | None] = mapped_column(String(64), nullable=True)  # element.json
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # samples/loss curve/grid blob hashes
    recommended_strength: Mapped[float] = mapped_column(Float, default=0.8)
    # The strength range the post-training sweep found to work (None: not swept, e.g. trained before the sweep).
    strength_min: Mapped[float | None] = mapped_column(Float, nullable=True)
    strength_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    training_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Frozen at request time: [{"blob": sha256, "caption": str}], so deleting the dataset never breaks it.
    manifest: Mapped[list[Any]] = mapped_column(default=list)
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True
    )
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_kind", "status", "kind"), _NO_ROWID_REUSE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # person-readable reason
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)  # timeout|crash|invalid|...
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Where the request came from (guild/channel ids) so completion can be delivered without an interaction token.
    origin: Mapped[dict[str, Any]] = mapped_column(default=dict)
    element_id: Mapped[int | None] = mapped_column(
        ForeignKey("elements.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (_NO_ROWID_REUSE,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    base_model: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    # [{"element_id": int, "name": str, "owner": str, "strength": float}]
    elements: Mapped[list[Any]] = mapped_column(default=list)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # steps, guidance, size, count, hires
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    images: Mapped[list[Any]] = mapped_column(default=list)  # blob hashes
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """Outbox: written in the same transaction as the state change it reports; delivered exactly once."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_undelivered", "delivered_at", "id"), _NO_ROWID_REUSE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))  # training_queued|training_started|..._finished|...
    # Unique per state change (e.g. "job:12:finished") so a retried transition cannot write it twice.
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class QuotaCharge(Base):
    """One training slot consumed by one job; refunded at most once."""

    __tablename__ = "quota_charges"
    __table_args__ = (_NO_ROWID_REUSE,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, unique=True
    )
    kind: Mapped[str] = mapped_column(String(16), default="train")
    charged_at: Mapped[datetime] = mapped_column(default=utcnow)
    refunded_at: Mapped[datetime | None] = mapped_column(nullable=True)
    refund_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class GuildSettings(Base):
    """Per-server admin settings (checked in code, not only via Discord permissions)."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation_channels: Mapped[list[Any]] = mapped_column(default=list)  # empty = everywhere
    banned_words: Mapped[list[Any]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UploadSession(Base):
    """A DM upload session: images a user sends to the bot in DMs go into this dataset until it ends."""

    __tablename__ = "upload_sessions"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlobTombstone(Base):
    """A blob that lost a reference: written in the same transaction as the deleted row, so the file can be
    garbage-collected afterwards (rows first, then files) and a crash in between only leaves a tombstone."""

    __tablename__ = "blob_tombstones"

    blob_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BotState(Base):
    """Short-lived front-end state that must survive a bot restart: a training confirmation waiting for Start,
    the attachments of a message someone right-clicked, the hash of the last command sync. ``expires_at`` None
    = kept until replaced."""

    __tablename__ = "bot_state"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))  # who may use it (an external id); None = the bot
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
