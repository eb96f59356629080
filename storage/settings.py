"""Runtime settings (env prefix ``ATELIER_``, optional ``.env``), validated once at start-up."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.vocabulary import FAMILIES

# Base-model family: an Element trained on one family only works with that family (Family.SD15 == "sd15", …).
Family = StrEnum("Family", [(name.upper(), name) for name in FAMILIES])


class BaseModelSpec(BaseModel):
    """A named base model: ``source`` is a hub id, a local directory, or ``builtin:<tiny-name>``."""

    family: Family
    source: str
    trainable: bool = True
    # Architecture file the memory planner uses (trainer/memory/archs); "" → by name, source and family.
    arch: str = ""
    # Elements trained on a base are only compatible with bases of the same *lineage*
    # (Flux-dev LoRAs do not transfer to Schnell even though both are "flux").
    lineage: str = ""
    description: str = ""

    @property
    def builtin(self) -> bool:
        """One of the tiny offline models built from config (tests, demo); trained with presets sized for them."""
        return self.source.startswith("builtin:")

    @model_validator(mode="after")
    def _default_lineage(self) -> BaseModelSpec:
        if not self.lineage:
            self.lineage = self.family.value
        return self


def default_base_models() -> dict[str, BaseModelSpec]:
    return {
        "flux-dev": BaseModelSpec(family=Family.FLUX, source="black-forest-labs/FLUX.1-dev", lineage="flux-dev",
                                  description="FLUX.1 [dev] — the default, best quality"),
        "flux-schnell": BaseModelSpec(family=Family.FLUX, source="black-forest-labs/FLUX.1-schnell",
                                      trainable=False, lineage="flux-schnell",
                                      description="FLUX.1 [schnell] — fast, generation only"),
        "sdxl": BaseModelSpec(family=Family.SDXL, source="stabilityai/stable-diffusion-xl-base-1.0",
                              description="Stable Diffusion XL 1.0"),
        "sd15": BaseModelSpec(family=Family.SD15, source="stable-diffusion-v1-5/stable-diffusion-v1-5",
                              description="Stable Diffusion 1.5"),
        "tiny-flux": BaseModelSpec(family=Family.FLUX, source="builtin:tiny-flux", lineage="tiny-flux",
                                   description="tiny offline Flux (tests/demo)"),
        "tiny-sdxl": BaseModelSpec(family=Family.SDXL, source="builtin:tiny-sdxl", lineage="tiny-sdxl",
                                   description="tiny offline SDXL (tests/demo)"),
        "tiny-sd15": BaseModelSpec(family=Family.SD15, source="builtin:tiny-sd15", lineage="tiny-sd15",
                                   description="tiny offline SD1.5 (tests/demo)"),
    }


class ImageLimits(BaseModel):
    """How many images a dataset may have to train on a family (guides: 10–50 Flux-dev, ≤40 SDXL)."""

    min_images: int = Field(10, ge=1)
    max_images: dict[Family, int] = Field(
        default_factory=lambda: {Family.FLUX: 50, Family.SDXL: 40, Family.SD15: 40}
    )

    def max_for(self, family: Family | str) -> int:
        return self.max_images[Family(family)]


class Settings(BaseSettings):
    """Everything configurable. Build once with :func:`load_settings` and pass it in."""

    model_config = SettingsConfigDict(
        env_prefix="ATELIER_", env_file=".env", env_file_encoding="utf-8", env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path("atelier-data")
    # URLs may carry credentials: held as secrets so no printout or log shows them (read the resolved_* values).
    database_url: SecretStr | None = None
    blob_url: SecretStr | None = None
    # fsspec storage options for blob_url, e.g. {"endpoint_url": "http://minio:9000"} for an S3-compatible server.
    blob_options: dict[str, Any] = Field(default_factory=dict)
    redis_url: SecretStr | None = None

    # Discord
    discord_token: SecretStr | None = None
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    dev_guild: int | None = None
    # How often the bot announces timed-out DM upload sessions and purges expired confirmations/menu picks.
    bot_housekeeping_seconds: float = Field(30.0, gt=0)

    # Uploads / ingest
    max_upload_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0)
    min_image_side: int = Field(256, gt=0)
    small_image_policy: Literal["warn", "refuse"] = "warn"
    near_duplicate_distance: int = Field(4, ge=0, le=64)
    max_zip_bytes: int = Field(200 * 1024 * 1024, gt=0)
    max_zip_entries: int = Field(500, gt=0)
    max_zip_uncompressed_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    # Stored images: at most this many pixels on the long side (training never uses more), JPEG uploads stay JPEG.
    max_stored_image_side: int = Field(2048, ge=256)
    # Adds, imports, exports and contact sheets running at once in one process (each is bounded in memory).
    max_concurrent_heavy_tasks: int = Field(2, ge=1)
    # Bytes of stored images one member may hold across all their datasets.
    member_storage_bytes: int = Field(2 * 1024**3, gt=0)
    image_limits: ImageLimits = Field(default_factory=ImageLimits)

    # Quotas
    train_slots_per_period: int = Field(5, ge=0)
    quota_period_days: int = Field(30, gt=0)
    admin_user_ids: list[str] = Field(default_factory=list)
    generation_cooldown_seconds: float = Field(3.0, ge=0)
    max_active_trainings: int = Field(1, ge=1)  # queued + running training jobs per member
    max_queued_generations: int = Field(8, ge=1)  # queued + running generation jobs per member

    # Models
    base_models: dict[str, BaseModelSpec] = Field(default_factory=default_base_models)
    default_base_model: str = "flux-dev"
    models_dir: Path | None = None  # where built-in tiny models are materialised; default <data_dir>/models
    # GPU memory a run may plan for (GB); None → the detected GPU's memory (no GPU: runs are not refused).
    gpu_memory_gb: float | None = Field(None, gt=0)

    # Jobs
    # Per-job folders with training checkpoints; put it on shared storage so another machine's worker can resume.
    work_dir: Path | None = None
    # Where training checkpoints are mirrored so a worker on another machine resumes a crashed run (any fsspec
    # URL); unset: ``<blob_url>/checkpoints`` when the blob store is remote, none (work dir only) when it is local.
    checkpoint_url: SecretStr | None = None  # may carry credentials, like the other URLs
    checkpoint_options: dict[str, Any] = Field(default_factory=dict)  # fsspec options for checkpoint_url
    train_timeout_seconds: int = Field(6 * 3600, gt=0)
    generate_timeout_seconds: int = Field(300, gt=0)
    max_attempts: int = Field(3, ge=1)
    stale_heartbeat_seconds: int = Field(120, gt=0)
    # Worker cron: delete blobs no row (or unfinished job) refers to and temp files older than the grace period.
    sweep_interval_minutes: int = Field(60, ge=1, le=1440)
    sweep_grace_seconds: int = Field(6 * 3600, ge=60)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _check_default_base(self) -> Settings:
        if self.default_base_model not in self.base_models:
            raise ValueError(
                f"default_base_model {self.default_base_model!r} is not one of {sorted(self.base_models)}"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        return _plain(self.database_url) or f"sqlite+aiosqlite:///{(self.data_dir / 'atelier.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        return _plain(self.blob_url) or str((self.data_dir / "blobs").resolve())

    @property
    def resolved_redis_url(self) -> str | None:
        """The configured Redis URL, or None for the embedded one."""
        return _plain(self.redis_url) or None

    @property
    def temp_dir(self) -> Path:
        """Scratch files (exports being built); the worker's sweep removes stale ones."""
        return self.data_dir / "tmp"

    @property
    def checkpoint_store(self) -> tuple[str, dict[str, Any]] | None:
        """(fsspec URL, storage options) where checkpoints are mirrored, or None to keep them in the work dir."""
        if self.checkpoint_url:
            return _plain(self.checkpoint_url), dict(self.checkpoint_options)
        blob_url = _plain(self.blob_url)
        if "://" in blob_url and not blob_url.startswith("file://"):
            return f"{blob_url.rstrip('/')}/checkpoints", dict(self.blob_options)
        return None

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    def base_model(self, name: str) -> BaseModelSpec:
        return self.base_models[name]


def _plain(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


class SettingsError(Exception):
    """Invalid configuration; the message names the environment variable to fix."""


def load_settings(**overrides: object) -> Settings:
    """Build settings from env/.env (+ overrides), turning validation errors into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p != "__root__"]
            var = "ATELIER_" + "__".join(loc).upper() if loc else "ATELIER_* settings"
            lines.append(f"{var}: {err['msg']}")
        raise SettingsError("invalid settings — " + "; ".join(lines)) from None
