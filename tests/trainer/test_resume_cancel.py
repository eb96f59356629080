"""Cancel between steps, resume from the last epoch checkpoint, refuse a foreign checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.api import TrainingCancelled
from trainer.checkpoint import CheckpointMismatch, checkpoints_dir, latest_checkpoint
from trainer.train import run_fingerprint

from .conftest import tiny_ref
from .helpers_train import ScriptedControl, fast_config, single_thread, train_recording  # noqa: F401

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # trains, cancels and resumes

# SD1.5 exercises the most state: UNet + text-encoder LoRA, two param groups, cosine-with-restarts, min-SNR.
FAMILY = "sd15"


def _train(config, items, out_dir, models_dir, control=None):
    return train_recording(FAMILY, config, items, out_dir, models_dir, control)


def _losses(events):
    return [(e.step, e.loss) for e in events if e.phase == "training"]


def test_cancel_after_epoch_one_then_resume_finishes_only_the_rest(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=3, size=64)
    config = fast_config(FAMILY, len(items), epochs=3, grid=False, sample_every_n_epochs=1,
                         shuffle_captions=True, caption_dropout=0.3)
    per_epoch = 3

    full, full_events = _train(config, items, tmp_path / "full", models_dir)
    assert full.steps == 3 * per_epoch and full.resumed_from_epoch == 0

    control = ScriptedControl(cancel_after_steps=per_epoch + 1)  # one step into epoch 2
    with pytest.raises(TrainingCancelled):
        _train(config, items, tmp_path / "cut", models_dir, control)
    assert control.steps_seen == per_epoch + 1, "no step ran after cancelled() turned true"
    assert control.cancel_checks_after_cancel == 1
    # Before each of the 4 steps, before epoch 1's samples, and before the refused step.
    assert control.pause_points == per_epoch + 3

    # The last complete checkpoint is epoch 1, and it is usable on its own.
    ckpt = latest_checkpoint(tmp_path / "cut", run_fingerprint(config, tiny_ref(FAMILY), items))
    assert ckpt.state.epoch == 1 and ckpt.state.global_step == per_epoch
    assert [p.name for p in checkpoints_dir(tmp_path / "cut").iterdir()] == ["epoch-1"]
    assert set(ckpt.lora) == {"unet", "text_encoder"}
    assert all(torch.isfinite(t).all() for sd in ckpt.lora.values() for t in sd.values())
    assert ckpt.optimizer["state"] and len(ckpt.optimizer["param_groups"]) == 2
    assert not (tmp_path / "cut" / "element.json").exists()

    resumed, events = _train(config, items, tmp_path / "cut", models_dir)
    assert resumed.resumed_from_epoch == 1
    assert resumed.steps == full.steps
    trained_now = _losses(events)
    assert [s for s, _ in trained_now] == list(range(per_epoch + 1, 3 * per_epoch + 1)), "only epochs 2–3 ran"
    # Same batches, noise and optimizer state as the uninterrupted run → the same losses.
    expected = dict(_losses(full_events))
    for step, loss in trained_now:
        assert loss == pytest.approx(expected[step], rel=1e-5, abs=1e-6)
    assert sorted(resumed.samples) == [1, 2, 3] and sorted(resumed.epoch_weights) == [1, 2, 3]
    element = json.loads(resumed.element_json.read_text())
    assert element["training"]["resumed_from_epoch"] == 1 and element["training"]["steps"] == full.steps

    # Re-running a finished folder trains nothing and re-exports.
    again, again_events = _train(config, items, tmp_path / "cut", models_dir)
    assert again.resumed_from_epoch == 3 and _losses(again_events) == [] and again.lora_kohya.exists()


def test_cancel_before_first_epoch_leaves_no_checkpoint(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=2, size=64)
    config = fast_config(FAMILY, len(items), epochs=2, grid=False, sample_prompts=[])
    control = ScriptedControl(cancel_after_steps=1)
    with pytest.raises(TrainingCancelled, match="step 1 of 4"):
        _train(config, items, tmp_path / "out", models_dir, control)
    assert latest_checkpoint(tmp_path / "out", run_fingerprint(config, tiny_ref(FAMILY), items)) is None
    result, events = _train(config, items, tmp_path / "out", models_dir)
    assert result.resumed_from_epoch == 0 and [s for s, _ in _losses(events)] == [1, 2, 3, 4]


def test_foreign_checkpoint_is_refused(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=2, size=64)
    config = fast_config(FAMILY, len(items), epochs=2, grid=False, sample_prompts=[])
    with pytest.raises(TrainingCancelled):
        _train(config, items, tmp_path / "out", models_dir, ScriptedControl(cancel_after_steps=3))
    changed = config.model_copy(update={"rank": config.rank * 2})
    with pytest.raises(CheckpointMismatch, match="different training"):
        _train(changed, items, tmp_path / "out", models_dir)
    # Output-only settings may change between attempts.
    relabelled = config.model_copy(update={"output_name": "renamed", "grid": False, "sample_steps": 3})
    result, _ = _train(relabelled, items, tmp_path / "out", models_dir)
    assert result.resumed_from_epoch == 1 and result.lora_diffusers.name == "renamed.safetensors"
