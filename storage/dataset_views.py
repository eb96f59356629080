"""Plain data going into and out of the dataset use cases (no ORM objects leave storage)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from storage.dataset_groups import GroupInfo, group_infos
from storage.db.models import Dataset, DatasetImage

# on_progress(done, total): called as files are processed (decoded, then stored).
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class IncomingFile:
    """One uploaded file. ``filename`` is shown back to people only; it never becomes a path."""

    filename: str
    data: bytes
    caption: str | None = None


@dataclass(frozen=True)
class LazyFile:
    """A file read only when its turn to be decoded comes (a zip entry): ``read`` returns its bytes or raises
    :class:`storage.errors.InvalidInput` saying why it cannot be read."""

    filename: str
    read: Callable[[], bytes]
    caption: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    index: int  # 1-based position shown to people ("#3"); compacted when images are removed
    blob_hash: str
    width: int
    height: int
    byte_size: int
    phash: str
    caption: str
    source: str
    original_name: str
    created_at: datetime
    group: str = ""  # image group in a multi-concept dataset ("" = none)

    @property
    def label(self) -> str:
        return f"#{self.index} ({self.original_name})" if self.original_name else f"#{self.index}"


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    description: str
    image_count: int
    created_at: datetime
    updated_at: datetime
    images: list[ImageInfo] | None = None  # filled by get(); None in listings
    groups: list[GroupInfo] = field(default_factory=list)  # named image groups (counts filled by get())


@dataclass(frozen=True)
class FileResult:
    filename: str
    status: Literal["added", "refused"]
    index: int | None = None  # position in the dataset when added
    reason: str = ""  # a sentence a person understands, when refused
    hint: str = ""  # what to do about it
    warnings: list[str] = field(default_factory=list)
    code: str = ""  # short machine code for refusals: format|bomb|animated|duplicate|near_duplicate|full|...

    @property
    def added(self) -> bool:
        return self.status == "added"


@dataclass(frozen=True)
class AddReport:
    dataset: str
    files: list[FileResult]
    image_count: int  # images in the dataset after the add

    @property
    def added(self) -> list[FileResult]:
        return [f for f in self.files if f.added]

    @property
    def refused(self) -> list[FileResult]:
        return [f for f in self.files if not f.added]


def image_info(img: DatasetImage) -> ImageInfo:
    return ImageInfo(index=img.position, blob_hash=img.blob_hash, width=img.width, height=img.height,
                     byte_size=img.byte_size, phash=img.phash, caption=img.caption, source=img.source,
                     original_name=img.original_name, created_at=img.created_at, group=img.group_name or "")


def dataset_info(ds: Dataset, count: int, images: list[DatasetImage] | None = None) -> DatasetInfo:
    return DatasetInfo(id=ds.id, name=ds.name, description=ds.description, image_count=count,
                       created_at=ds.created_at, updated_at=ds.updated_at,
                       images=None if images is None else [image_info(i) for i in images],
                       groups=group_infos(ds.groups or {}, [i.group_name for i in images or []]))


@dataclass(frozen=True)
class TimedOutUpload:
    """A DM upload session that ran out of time (for the front end to tell its owner)."""

    owner_external_id: str
    dataset: str
    image_count: int
    expired_at: datetime
