"""Text-encoder LoRAs go through peft directly: trained, saved, exported (kohya) and loaded for generation without
transformers' adapter mixin, so they work whichever transformers release is installed (see
``test_ml_stack_combinations.py`` for the same test under another transformers + peft pair)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.loading import load_pipeline
from trainer.lora_io import load_lora_into
from trainer.synthetic import make_dataset
from trainer.train import train_lora

from .conftest import tiny_ref
from .helpers_train import fast_config, generate, lora_deltas

pytestmark = pytest.mark.slow  # trains a text-encoder LoRA per family

TEXT_ENCODERS = {"sd15": ["text_encoder"], "sdxl": ["text_encoder", "text_encoder_2"]}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_text_encoder_lora_trains_exports_and_loads(family, models_dir, tmp_path):
    items = make_dataset(tmp_path / "data", count=4, size=64, caption="shapes, teal background")
    config = fast_config(family, len(items), epochs=1, train_text_encoder=True)
    result = train_lora(config, tiny_ref(family), items, tmp_path / "out", models_dir=models_dir,
                        element_name="Teal", category="character")

    base = generate(load_pipeline(tiny_ref(family), models_dir, device="cpu"))
    for path in (result.lora_diffusers, result.lora_kohya):
        pipe = load_pipeline(tiny_ref(family), models_dir, device="cpu")
        assert load_lora_into(pipe, path, "element") > 0
        deltas = lora_deltas(pipe, "element")
        for te in TEXT_ENCODERS[family]:
            te_deltas = [d for name, d in deltas.items() if name.startswith(f"{te}.")]
            assert te_deltas, f"{path.name}: no LoRA layer in the {te}"
            assert any(np.abs(d).max() > 0 for d in te_deltas), f"{path.name}: the {te} adapter is all zeros"
        assert pipe.get_list_adapters()[TEXT_ENCODERS[family][0]] == ["element"]
        assert np.abs(generate(pipe) - base).mean() > 1e-4
        # Two Elements share a text encoder; switching and deleting them goes through diffusers' peft calls.
        assert load_lora_into(pipe, path, "second") > 0
        assert sorted(pipe.get_list_adapters()[TEXT_ENCODERS[family][0]]) == ["element", "second"]
        pipe.set_adapters(["element", "second"], adapter_weights=[0.5, 0.5])
        pipe.delete_adapters("second")
        assert pipe.get_list_adapters()[TEXT_ENCODERS[family][0]] == ["element"]
