"""The generation engine on real tiny diffusers pipelines: seeds, triggers, strengths, caches, hires."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.api import GenerationRequest, GenerationStopped, LoraRef
from trainer.generate import Generator
from trainer.lora_io import LoraFileError
from trainer.prompting import check_strengths, insert_triggers

from .conftest import tiny_ref

SD15 = tiny_ref("sd15")


def _px(result) -> list[np.ndarray]:
    return [np.asarray(img, dtype=np.float32) for img in result.images]


def _req(**kw) -> GenerationRequest:
    base = dict(prompt="a red square", seed=7, steps=2, width=32, height=32)
    return GenerationRequest(**{**base, **kw})


@pytest.fixture(scope="module")
def gen(models_dir) -> Generator:
    g = Generator(models_dir, max_pipelines=2, max_adapters=2, device="cpu")
    yield g
    g.close()


@pytest.mark.slow
def test_seed_is_deterministic_and_per_image(gen):
    a = gen.generate(SD15, _req(count=2))
    b = gen.generate(SD15, _req(count=2))
    assert a.seed == 7 and a.seeds == [7, 8] and (a.width, a.height) == (32, 32)
    assert all(np.array_equal(x, y) for x, y in zip(_px(a), _px(b), strict=True))
    assert not np.array_equal(_px(a)[0], _px(a)[1]), "each image has its own seed"
    single = gen.generate(SD15, _req(seed=8))
    assert np.abs(_px(single)[0] - _px(a)[1]).max() <= 2, "image i of a batch equals a single run at seed+i"


@pytest.mark.slow
def test_random_seed_is_returned_and_reproduces(gen):
    first = gen.generate(SD15, _req(seed=None))
    again = gen.generate(SD15, _req(seed=first.seed))
    assert isinstance(first.seed, int) and np.array_equal(_px(first)[0], _px(again)[0])


@pytest.mark.slow
def test_triggers_inserted_once(gen, lora_file):
    lora = LoraRef(key="el-1", path=lora_file("sd15", seed=1), trigger="zxq style")
    res = gen.generate(SD15, _req(prompt="a cat", loras=[lora]))
    assert res.prompt == "zxq style, a cat"
    res = gen.generate(SD15, _req(prompt="a cat in ZXQ Style", loras=[lora]))
    assert res.prompt == "a cat in ZXQ Style"


def test_insert_triggers_rules():
    assert insert_triggers("photo of zxqq", ["zxq"]) == "zxq, photo of zxqq", "whole words only"
    assert insert_triggers("", ["a", "A", "b"]) == "a, b"
    assert insert_triggers("a sks-dog", ["sks-dog", ""]) == "a sks-dog"


def test_strength_rules():
    assert check_strengths([1.0]) == [] and check_strengths([0.5, 0.5]) == []
    assert "above 1" in check_strengths([1.5])[0]
    assert "combined strength 1.3" in check_strengths([0.7, 0.6])[0]
    for bad in ([2.5], [-0.1], [float("nan")], [0.1] * 5):
        with pytest.raises(ValueError):
            check_strengths(bad)


@pytest.mark.slow
def test_strength_warnings_and_refusal_through_engine(gen, lora_file):
    a = LoraRef(key="el-1", path=lora_file("sd15", seed=1), trigger="zxq", strength=1.5)
    res = gen.generate(SD15, _req(loras=[a]))
    assert any("above 1" in w for w in res.warnings)
    with pytest.raises(ValueError, match="between 0 and 2"):
        gen.generate(SD15, _req(loras=[LoraRef(key="el-1", path=a.path, trigger="zxq", strength=2.5)]))


@pytest.mark.slow
def test_adapters_cached_switched_and_disabled(gen, lora_file):
    base = _px(gen.generate(SD15, _req()))[0]
    a = LoraRef(key="el-a", path=lora_file("sd15", seed=11), trigger="aa")
    b = LoraRef(key="el-b", path=lora_file("sd15", seed=12), trigger="aa")
    loads = gen.stats["adapter_loads"]
    out_a = _px(gen.generate(SD15, _req(prompt="aa", loras=[a])))[0]
    out_b = _px(gen.generate(SD15, _req(prompt="aa", loras=[b])))[0]
    out_a2 = _px(gen.generate(SD15, _req(prompt="aa", loras=[a])))[0]
    assert gen.stats["adapter_loads"] == loads + 2, "the second request with Element a did not reload it"
    assert np.array_equal(out_a, out_a2) and not np.array_equal(out_a, out_b)
    assert not np.array_equal(out_a, base)
    assert np.array_equal(_px(gen.generate(SD15, _req()))[0], base), "no LoRAs: adapters disabled"
    assert np.array_equal(_px(gen.generate(SD15, _req(prompt="aa", loras=[a])))[0], out_a), "re-enabled"
    mixed = gen.generate(SD15, _req(prompt="aa", loras=[a, LoraRef(b.key, b.path, "aa", 0.5)]))
    assert not np.array_equal(_px(mixed)[0], out_a)
    assert gen.stats["adapter_loads"] == loads + 2


@pytest.mark.slow
def test_adapter_lru_eviction(gen, lora_file):
    entry = gen.pipeline(SD15)
    refs = [LoraRef(key=f"ev-{i}", path=lora_file("sd15", seed=20 + i), trigger="t") for i in range(3)]
    evictions = gen.stats["adapter_evictions"]
    for ref in refs:
        gen.generate(SD15, _req(prompt="t", loras=[ref]))
    assert list(entry.adapters) == ["ev-1", "ev-2"]  # max_adapters=2
    assert gen.stats["adapter_evictions"] >= evictions + 1
    loaded = {n for names in entry.pipe.get_list_adapters().values() for n in names}
    assert loaded == {slot.name for slot in entry.adapters.values()}, "evicted adapters are deleted"


@pytest.mark.slow
def test_same_key_new_file_reloads(gen, lora_file):
    first = LoraRef(key="el-moved", path=lora_file("sd15", seed=31), trigger="t")
    second = LoraRef(key="el-moved", path=lora_file("sd15", seed=32), trigger="t")
    loads = gen.stats["adapter_loads"]
    x = _px(gen.generate(SD15, _req(prompt="t", loras=[first])))[0]
    y = _px(gen.generate(SD15, _req(prompt="t", loras=[second])))[0]
    assert gen.stats["adapter_loads"] == loads + 2 and not np.array_equal(x, y)


@pytest.mark.slow
def test_unsafe_or_empty_lora_files_are_refused(gen, tmp_path, lora_file):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(LoraFileError, match="only .safetensors"):
        gen.generate(SD15, _req(loras=[LoraRef(key="bad", path=bad, trigger="t")]))
    with pytest.raises(LoraFileError, match="different base model family"):
        gen.generate(SD15, _req(loras=[LoraRef(key="wrong", path=lora_file("flux", seed=1), trigger="t")]))
    assert "wrong" not in gen.pipeline(SD15).adapters


def test_request_validation(gen):
    for kw, msg in ((dict(count=5), "count"), (dict(steps=0), "steps"), (dict(prompt="  "), "prompt is empty"),
                    (dict(aspect="2:1"), "unknown aspect"), (dict(width=4096), "out of range")):
        with pytest.raises(ValueError, match=msg):
            gen.generate(SD15, _req(**kw))


@pytest.mark.slow
def test_aspect_preset_and_snapping(gen):
    res = gen.generate(SD15, _req(width=None, height=None, aspect="16:9"))
    assert (res.width, res.height) == (72, 40) == res.images[0].size
    res = gen.generate(SD15, _req(width=36, height=32))
    assert res.images[0].size == (32, 32) and "rounded" in res.warnings[0]


@pytest.mark.slow
def test_negative_prompt_used_by_sd_and_noted_for_flux(gen):
    plain = _px(gen.generate(SD15, _req(guidance=4.0)))[0]
    neg = _px(gen.generate(SD15, _req(guidance=4.0, negative_prompt="blue")))[0]
    assert not np.array_equal(plain, neg)
    res = gen.generate(tiny_ref("flux"), _req(negative_prompt="blue"))
    assert any("negative prompts are not used" in w for w in res.warnings)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_hires_doubles_size(gen, family):
    res = gen.generate(tiny_ref(family), _req(hires=True, count=2))
    assert (res.width, res.height) == (64, 64)
    assert [img.size for img in res.images] == [(64, 64), (64, 64)]


@pytest.mark.slow
@pytest.mark.parametrize("hires", [False, True])
def test_stop_ends_the_run_between_steps_and_the_pipeline_stays_usable(gen, hires):
    polls = []

    def stop() -> bool:  # asked after every denoising step: say stop at the second one
        polls.append(1)
        return len(polls) >= 2

    with pytest.raises(GenerationStopped):
        gen.generate(SD15, _req(steps=20, hires=hires, seed=3), stop=stop)
    assert len(polls) < 20, "the remaining steps were skipped (the hook is not asked again once interrupted)"
    after = gen.generate(SD15, _req(seed=3))
    again = gen.generate(SD15, _req(seed=3), stop=lambda: False)
    assert np.array_equal(_px(after)[0], _px(again)[0]), "a stopped run leaves nothing behind"


@pytest.mark.slow
def test_pipeline_lru_eviction(models_dir):
    g = Generator(models_dir, max_pipelines=2, device="cpu")
    sd15, sdxl, flux = tiny_ref("sd15"), tiny_ref("sdxl"), tiny_ref("flux")
    for ref in (sd15, sdxl, sd15, flux):
        g.generate(ref, _req())
    assert g.resident() == [sd15, flux], "sdxl was least recently used"
    assert g.stats["pipeline_loads"] == 3 and g.stats["pipeline_evictions"] == 1
    g.generate(flux, _req())
    assert g.stats["pipeline_loads"] == 3, "a resident pipeline is reused"
    g.close()
    assert g.resident() == [] and g.stats["pipeline_evictions"] == 3
