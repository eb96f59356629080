"""LoRA files: only safetensors, header checked, a load that patches nothing is refused and undone."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from trainer.loading import load_pipeline
from trainer.lora_io import LoraFileError, count_adapter_layers, load_lora_into, validate_lora_file

from .conftest import tiny_ref


@pytest.fixture(scope="module")
def sd15_pipe(models_dir):
    return load_pipeline(tiny_ref("sd15"), models_dir, device="cpu")


def _gen(pipe):
    return pipe("a red square", num_inference_steps=2, height=32, width=32, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


@pytest.mark.slow
def test_load_patches_layers_and_changes_output(sd15_pipe, lora_file):
    before = _gen(sd15_pipe)
    layers = load_lora_into(sd15_pipe, lora_file("sd15", seed=1), "one")
    try:
        assert layers == count_adapter_layers(sd15_pipe, "one") > 0
        sd15_pipe.set_adapters(["one"], adapter_weights=[1.0])
        assert abs(_gen(sd15_pipe) - before).max() > 1e-3
    finally:
        sd15_pipe.delete_adapters("one")
    assert abs(_gen(sd15_pipe) - before).max() < 1e-5, "deleting the adapter restores the base model"


@pytest.mark.slow
def test_same_name_twice_is_refused(sd15_pipe, lora_file):
    load_lora_into(sd15_pipe, lora_file("sd15", seed=1), "dup")
    try:
        with pytest.raises(LoraFileError, match="already loaded"):
            load_lora_into(sd15_pipe, lora_file("sd15", seed=2), "dup")
    finally:
        sd15_pipe.delete_adapters("dup")


@pytest.mark.slow
def test_zero_key_lora_is_refused_and_leaves_nothing(sd15_pipe, tmp_path):
    path = tmp_path / "nothing.safetensors"
    save_file({"unet.no_such_block.attn.to_q.lora_A.weight": torch.zeros(4, 32),
               "unet.no_such_block.attn.to_q.lora_B.weight": torch.zeros(32, 4)}, str(path))
    with pytest.raises(LoraFileError, match="matched no layer|could not be loaded"):
        load_lora_into(sd15_pipe, path, "ghost")
    assert count_adapter_layers(sd15_pipe, "ghost") == 0
    assert not any("ghost" in names for names in sd15_pipe.get_list_adapters().values())


@pytest.mark.slow
def test_lora_for_another_family_is_refused(sd15_pipe, lora_file):
    with pytest.raises(LoraFileError, match="different base model family"):
        load_lora_into(sd15_pipe, lora_file("flux", seed=1), "flux_one")
    assert not any("flux_one" in names for names in sd15_pipe.get_list_adapters().values())


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".ckpt", ".pkl", ""])
def test_non_safetensors_extensions_are_refused(tmp_path, suffix):
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps({"lora_A": [1, 2, 3]}))
    with pytest.raises(LoraFileError, match="only .safetensors"):
        validate_lora_file(path)


@pytest.mark.slow
def test_pickle_renamed_to_safetensors_is_refused(tmp_path, sd15_pipe):
    path = tmp_path / "renamed.safetensors"
    torch.save({"unet.x.lora_A.weight": torch.zeros(2, 2)}, path)  # a zip/pickle container
    with pytest.raises(LoraFileError, match="not a valid safetensors"):
        load_lora_into(sd15_pipe, path, "renamed")


def test_header_checks(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(LoraFileError, match="too short"):
        validate_lora_file(short)
    with pytest.raises(LoraFileError, match="does not exist"):
        validate_lora_file(tmp_path / "missing.safetensors")
    empty = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(empty))
    with pytest.raises(LoraFileError, match="no LoRA weights"):
        validate_lora_file(empty)
