"""Gradient accumulation (one optimizer step per N batches), an EMA of the LoRA weights, and checkpoints every N
steps that resume from the middle of an epoch with exactly the losses and weights of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from trainer.api import TrainingCancelled
from trainer.checkpoint import checkpoints_dir, latest_checkpoint
from trainer.export import read_diffusers_lora
from trainer.train import run_fingerprint

from .conftest import tiny_ref
from .helpers_train import ScriptedControl, fast_config, single_thread, train_recording  # noqa: F401

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # trains several short runs
FAMILY = "flux"  # no text encoder to train: independent of the text-encoder adapter path


def _train(config, items, out_dir, models_dir, control=None):
    result, events = train_recording(FAMILY, config, items, out_dir, models_dir, control)
    return result, [e for e in events if e.phase == "training"]


def _config(n, **kw):
    return fast_config(FAMILY, n, epochs=2, grid=False, sample_prompts=[], strength_sweep=False, **kw)


def test_accumulation_steps_the_optimizer_every_n_batches(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=3, size=64)
    config = _config(3, gradient_accumulation_steps=2, lr_scheduler="cosine")
    _, steps = _train(config, items, tmp_path / "acc", models_dir)
    lrs = [e.lr for e in steps]
    # 3 batches per epoch → optimizer steps after batches 2 and 3 (an epoch never carries gradients over).
    assert len(lrs) == 6 and lrs[0] == lrs[1] and lrs[2] != lrs[1] and lrs[3] != lrs[2] and lrs[4] == lrs[3]


def test_ema_exports_the_averaged_weights(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=3, size=64)
    plain, plain_steps = _train(_config(3), items, tmp_path / "plain", models_dir)
    ema, ema_steps = _train(_config(3, ema_decay=0.5), items, tmp_path / "ema", models_dir)
    assert [e.loss for e in ema_steps] == [e.loss for e in plain_steps], "EMA never changes the training itself"
    a = read_diffusers_lora(plain.lora_diffusers)["transformer"]
    b = read_diffusers_lora(ema.lora_diffusers)["transformer"]
    ups = [k for k in a if k.endswith("lora_B.weight")]
    assert all(torch.isfinite(b[k]).all() for k in ups)
    assert any(not torch.allclose(a[k], b[k]) for k in ups), "the averaged weights are exported"


def test_mid_epoch_checkpoint_resumes_exactly(models_dir, tmp_path, make_dataset):
    items = make_dataset(count=4, size=64)
    config = _config(4, gradient_accumulation_steps=2, ema_decay=0.9, save_every_n_steps=2,
                     shuffle_captions=True, caption_dropout=0.3)
    full, full_steps = _train(config, items, tmp_path / "full", models_dir)

    control = ScriptedControl(cancel_after_steps=3)  # in epoch 1, one batch past the step-2 checkpoint
    with pytest.raises(TrainingCancelled):
        _train(config, items, tmp_path / "cut", models_dir, control)
    ckpt = latest_checkpoint(tmp_path / "cut", run_fingerprint(config, tiny_ref(FAMILY), items))
    assert (ckpt.state.epoch, ckpt.state.epoch_step, ckpt.state.global_step) == (0, 2, 2)
    assert [p.name for p in checkpoints_dir(tmp_path / "cut").iterdir()] == ["epoch-0-step-2"]
    assert ckpt.ema is not None and len(ckpt.ema["shadow_params"]) > 0

    resumed, steps = _train(config, items, tmp_path / "cut", models_dir)
    assert [e.step for e in steps] == list(range(3, full.steps + 1)), "continues after the checkpoint"
    expected = {e.step: e.loss for e in full_steps}
    for e in steps:
        assert e.loss == pytest.approx(expected[e.step], rel=1e-5, abs=1e-6)
    a = read_diffusers_lora(full.lora_diffusers)["transformer"]
    b = read_diffusers_lora(resumed.lora_diffusers)["transformer"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
    # Epoch ends replace the mid-epoch checkpoints: one resume point remains.
    assert [p.name for p in checkpoints_dir(tmp_path / "cut").iterdir()] == ["epoch-2"]
