"""The product's vocabulary, defined once and torch-free: Element categories and base-model families.

Imported at module top by trainer, storage (its ``Category`` / ``Family`` enums are built from these), bot (command
choices) and the CLI, so a new category or family is added here and nowhere else.
"""

from __future__ import annotations

from typing import Literal, get_args

CategoryName = Literal["style", "character", "object", "concept"]
FamilyName = Literal["flux", "sdxl", "sd15"]

CATEGORIES: tuple[str, ...] = get_args(CategoryName)
FAMILIES: tuple[str, ...] = get_args(FamilyName)
