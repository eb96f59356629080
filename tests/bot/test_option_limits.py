"""The slash commands' option ranges, as Discord receives them at sync, are the core's own limits: what Discord
lets a member type is what the use case accepts (each limit is defined once, in storage or trainer)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from storage.datasets import MAX_UPLOAD_MINUTES
from storage.names import (
    MAX_CAPTION_CHARS,
    MAX_DATASET_DESCRIPTION,
    MAX_ELEMENT_DESCRIPTION,
    MAX_NAME,
    TRIGGER_MAX,
    TRIGGER_MIN,
)
from storage.quotas import MAX_SLOTS
from trainer.config import (
    MAX_GROUP_NAME,
    MAX_GROUP_TRIGGER,
    MAX_REPEATS,
    RESOLUTION_STEP,
    TrainingConfig,
    field_bounds,
)
from trainer.prompting import MAX_COUNT, MAX_GUIDANCE, MAX_LORAS, MAX_PROMPT, MAX_STEPS, MAX_STRENGTH


def _options(emu: Any, *path: str) -> dict[str, dict[str, Any]]:
    node = emu.command(path[0])
    for name in path[1:]:
        node = next(o for o in node["options"] if o["name"] == name)
    return {o["name"]: o for o in node["options"]}


def _range(opt: dict[str, Any]) -> tuple[Any, Any]:
    return (opt.get("min_value", opt.get("min_length")), opt.get("max_value", opt.get("max_length")))


async def test_synced_option_ranges_are_the_core_limits(bot_harness, bot_settings) -> None:
    async with bot_harness(None, bot_settings) as (emu, _bot):
        train = _options(emu, "element", "train")
        assert _range(train["name"]) == (1, MAX_NAME)
        assert _range(train["trigger"]) == (TRIGGER_MIN, TRIGGER_MAX)
        assert _range(train["description"]) == (0, MAX_ELEMENT_DESCRIPTION)
        for field in ("epochs", "learning_rate", "rank", "resolution"):
            assert _range(train[field]) == field_bounds(field), field
        assert f"{field_bounds('rank')[1]:g}" in train["rank"]["description"]
        assert f"multiple of {RESOLUTION_STEP}" in train["resolution"]["description"]

        gen = _options(emu, "generate")
        assert [n for n in gen if n.startswith("element")] == [f"element{i + 1}" for i in range(MAX_LORAS)]
        assert f"up to {MAX_LORAS} Elements" in emu.command("generate")["description"]
        assert _range(gen["prompt"]) == (1, MAX_PROMPT) and _range(gen["negative"]) == (0, MAX_PROMPT)
        assert _range(gen["count"]) == (1, MAX_COUNT) and _range(gen["steps"]) == (1, MAX_STEPS)
        assert _range(gen["guidance"]) == (0, MAX_GUIDANCE) and _range(gen["strength1"]) == (0, MAX_STRENGTH)

        assert _range(_options(emu, "dataset", "create")["description"]) == (0, MAX_DATASET_DESCRIPTION)
        assert _range(_options(emu, "dataset", "caption")["text"]) == (1, MAX_CAPTION_CHARS)
        assert _range(_options(emu, "dataset", "upload")["minutes"]) == (1, MAX_UPLOAD_MINUTES)
        assert _range(_options(emu, "admin", "quota")["slots"]) == (0, MAX_SLOTS)
        group = _options(emu, "dataset", "group")
        assert _range(group["group"]) == (1, MAX_GROUP_NAME) and _range(group["trigger"]) == (1, MAX_GROUP_TRIGGER)
        assert _range(group["repeats"]) == (1, MAX_REPEATS)


def test_field_bounds_read_the_config_definition() -> None:
    assert field_bounds("epochs") == (1, 500) and field_bounds("learning_rate") == (0, 10)  # ge/le and gt/le
    with pytest.raises(ValueError, match="no lower and upper bound"):
        field_bounds("lr_warmup_steps")  # ge=0 only
    with pytest.raises(ValidationError):
        TrainingConfig.for_request("style", "sd15", 20, "ohwx", epochs=int(field_bounds("epochs")[1]) + 1)
