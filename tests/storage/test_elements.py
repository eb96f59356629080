"""Element use cases: reservation rules, finishing, sharing, browsing, generation checks, export."""

from __future__ import annotations

import pytest

from storage.db.models import ElementStatus, Visibility
from storage.errors import Conflict, FamilyMismatch, InvalidInput, NotFound
from tests.storage.conftest import ready_element


async def _reserve(services, actor, name: str, trigger: str, base_model: str = "flux-dev"):
    async with services.db.transaction() as session:
        element = await services.elements.reserve(
            session, actor, name=name, trigger=trigger, category="character", base_model=base_model,
            dataset_id=None, manifest=[], config={}, description="")
        return element.id


async def test_names_and_triggers_are_unique_per_owner_after_normalisation(services, alice, bob) -> None:
    await _reserve(services, alice, "Cat Lady", "catlady")
    with pytest.raises(Conflict, match="named"):
        await _reserve(services, alice, "ＣＡＴ\u200b LADY", "other")  # NFKC + zero-width + case
    with pytest.raises(Conflict, match="trigger word"):
        await _reserve(services, alice, "Another", "CATLADY")
    await _reserve(services, bob, "Cat Lady", "catlady")  # other owners are independent
    for bad in ("cat lady", "cat_lady", "ab", "1234", "cat-lady"):
        with pytest.raises(InvalidInput):
            await _reserve(services, alice, f"n-{bad}", bad)
    with pytest.raises(InvalidInput, match="cannot be used for training"):
        await _reserve(services, alice, "Fast", "fasttrig", base_model="flux-schnell")
    with pytest.raises(InvalidInput, match="Unknown base model"):
        await _reserve(services, alice, "Nope", "nopetrig", base_model="sd3")


async def test_a_failed_element_can_be_replaced(services, alice) -> None:
    first = await _reserve(services, alice, "Retry", "retrytrig")
    with pytest.raises(Conflict):
        await _reserve(services, alice, "Retry", "retrytrig")
    async with services.db.transaction() as session:
        assert await services.elements.mark_failed(session, first) is True
        assert await services.elements.mark_failed(session, first) is False
    second = await _reserve(services, alice, "retry", "RetryTrig")
    assert second != first
    assert [e.id for e in await services.elements.list_own(alice)] == [second]


async def test_finish_is_written_once_and_never_downgraded(services, alice) -> None:
    element_id = await _reserve(services, alice, "Once", "oncetrig")
    assert (await services.elements.get(alice, "once")).status == ElementStatus.TRAINING
    w1, w2 = await services.blobs.put_bytes(b"weights-1"), await services.blobs.put_bytes(b"weights-2")
    async with services.db.transaction() as session:
        await services.elements.finish(session, element_id, weights_blob=w1, kohya_blob=None, metadata_blob=None,
                                       artifacts={}, recommended_strength=0.7)
    async with services.db.transaction() as session:
        await services.elements.finish(session, element_id, weights_blob=w2, kohya_blob=None, metadata_blob=None,
                                       artifacts={}, recommended_strength=0.1)
        assert await services.elements.mark_failed(session, element_id) is False
    info = await services.elements.get(alice, "once")
    assert (info.status, info.weights_blob, info.recommended_strength) == ("ready", w1, 0.7)
    # Finishing an Element deleted meanwhile keeps nothing: its new files are collected.
    gone = await _reserve(services, alice, "Gone", "gonetrig")
    async with services.db.transaction() as session:
        await services.elements.mark_failed(session, gone)
    await services.elements.delete(alice, "gone")
    async with services.db.transaction() as session:
        assert await services.elements.finish(session, gone, weights_blob=w2, kohya_blob=None, metadata_blob=None,
                                              artifacts={}, recommended_strength=1) is None
    await services.datasets.gc_blobs()
    assert not await services.blobs.exists(w2) and await services.blobs.exists(w1)


async def test_share_rules(services, alice) -> None:
    await _reserve(services, alice, "Busy", "busytrig")
    with pytest.raises(Conflict, match="not ready"):
        await services.elements.share(alice, "busy", "public")
    with pytest.raises(Conflict, match="still training"):
        await services.elements.delete(alice, "busy")
    el = await ready_element(services, alice, "Done", "donetrig")
    with pytest.raises(InvalidInput, match="visibility"):
        await services.elements.share(alice, "done", "everyone")
    with pytest.raises(InvalidInput, match="server"):
        await services.elements.share(alice.in_guild(None), "done", "server")
    shared = await services.elements.share(alice, "done", Visibility.SERVER)
    assert (shared.visibility, shared.guild_id) == ("server", "g1")
    back = await services.elements.share(alice, f"#{el.id}", "private")
    assert (back.visibility, back.guild_id) == ("private", None)


async def test_browse_filters_pages_and_orders_by_usage(services, alice, bob) -> None:
    made = []
    for i, base in enumerate(["flux-dev", "flux-dev", "sdxl", "flux-dev"]):
        made.append(await ready_element(services, alice, f"Style {i}", f"stylez{i}", base_model=base,
                                        visibility=Visibility.PUBLIC))
    await ready_element(services, alice, "Hidden", "hiddentrig")
    async with services.db.transaction() as session:
        await services.elements.record_usage(session, [made[3].id, made[3].id, made[1].id])
    page = await services.elements.browse(bob, per_page=2)
    assert page.total == 4 and page.pages == 2 and page.has_next
    assert [e.name for e in page.items][:1] == ["Style 3"]
    flux = await services.elements.browse(bob, base_model="flux-dev")
    assert {e.name for e in flux.items} == {"Style 0", "Style 1", "Style 3"}
    assert (await services.elements.browse(bob, base_model="flux-schnell")).total == 0  # other lineage
    assert [e.name for e in (await services.elements.browse(bob, query="STYLE 2")).items] == ["Style 2"]
    assert (await services.elements.browse(bob, query="100%")).total == 0  # wildcards are literal
    assert (await services.elements.browse(bob, page=5)).items == []


async def test_autocomplete_lists_own_then_shared_with_family(services, alice, bob) -> None:
    await ready_element(services, alice, "Alpha", "alphatrig", visibility=Visibility.PUBLIC)
    await ready_element(services, bob, "Alpine", "alpinetrig")
    await ready_element(services, bob, "Beta", "betatrig", base_model="sdxl")
    choices = await services.elements.autocomplete(bob, "al", base_model="flux-dev")
    assert choices[0] == ("Alpine · flux-dev", "Alpine")
    assert choices[1][1].startswith("#") and "Alice" in choices[1][0]
    assert await services.elements.autocomplete(bob, "beta", base_model="flux-dev") == []
    assert [v for _, v in await services.elements.autocomplete(bob, "beta")] == ["Beta"]


async def test_resolve_for_generation_checks_everything(services, alice, bob) -> None:
    dev = await ready_element(services, alice, "DevStyle", "devstyle", strength=0.9)
    xl = await ready_element(services, alice, "XlStyle", "xlstyle", base_model="sdxl")
    await _reserve(services, alice, "Training", "trainingtrig")
    extra = [await ready_element(services, alice, f"E{i}", f"extra{i}x") for i in range(4)]
    async with services.db.transaction() as session:
        r = await services.elements.resolve_for_generation(session, alice, [("devstyle", None)], "flux-dev")
        assert (r[0].strength, r[0].trigger_word, r[0].is_own) == (0.9, "devstyle", True)
        with pytest.raises(FamilyMismatch) as err:
            await services.elements.resolve_for_generation(session, alice, [("devstyle", None)], "flux-schnell")
        assert "flux-dev" in err.value.message and "flux-schnell" in err.value.message
        assert "flux-dev" in err.value.hint
        with pytest.raises(FamilyMismatch, match="sdxl"):
            await services.elements.resolve_for_generation(session, alice, [(f"#{xl.id}", None)], "flux-dev")
        with pytest.raises(Conflict, match="still training"):
            await services.elements.resolve_for_generation(session, alice, [("training", None)], "flux-dev")
        with pytest.raises(InvalidInput, match="At most 4"):
            await services.elements.resolve_for_generation(
                session, alice, [(e.name, None) for e in extra] + [("devstyle", None)], "flux-dev")
        with pytest.raises(InvalidInput, match="twice"):
            await services.elements.resolve_for_generation(
                session, alice, [("devstyle", None), (f"#{dev.id}", None)], "flux-dev")
        with pytest.raises(InvalidInput, match="out of range"):
            await services.elements.resolve_for_generation(session, alice, [("devstyle", 2.5)], "flux-dev")
        with pytest.raises(InvalidInput, match="Unknown base model"):
            await services.elements.resolve_for_generation(session, alice, [("devstyle", None)], "nope")
        with pytest.raises(NotFound):
            await services.elements.resolve_for_generation(session, bob, [("devstyle", None)], "flux-dev")
        two = await services.elements.resolve_for_generation(
            session, alice, [("devstyle", 1.2), ("E0", 0.6)], "flux-dev")
    warnings = services.elements.strength_warnings(two)
    assert any("above 1" in w for w in warnings) and any("combined" in w for w in warnings)


async def test_delete_and_export(services, alice) -> None:
    el = await ready_element(services, alice, "Bye Bye", "byebye")
    bundle = await services.elements.export(alice, "bye bye")
    assert bundle.filename == "bye-bye_flux-dev.safetensors"
    assert bundle.json_filename == "bye-bye_flux-dev.element.json"
    assert bundle.kohya == await services.blobs.get_bytes(el.kohya_blob)
    await services.elements.delete(alice, "BYE BYE")
    for h in (el.weights_blob, el.kohya_blob, el.metadata_blob, el.artifacts["grid"]):
        assert not await services.blobs.exists(h)
    with pytest.raises(NotFound):
        await services.elements.get(alice, f"#{el.id}")
    with pytest.raises(Conflict, match="no exported weights"):
        await _reserve(services, alice, "Later", "latertrig")
        await services.elements.export(alice, "later")


async def test_autocomplete_own_only_and_unready(services, alice, bob) -> None:
    await ready_element(services, bob, "Shared", "sharedtrig", visibility=Visibility.PUBLIC)
    await _reserve(services, alice, "Cooking", "cookingtrig")
    assert await services.elements.autocomplete(alice, "", own_only=True) == []
    assert [v for _, v in await services.elements.autocomplete(alice, "", ready_only=False, own_only=True)] == [
        "Cooking"]
    assert len(await services.elements.autocomplete(alice, "", ready_only=False)) == 2
