"""Privacy in the core: another user's private things are "not found"; shared ones are usable, not changeable."""

from __future__ import annotations

import pytest

from storage.db.models import Visibility
from storage.errors import Forbidden, NotFound
from tests.conftest import noise_png
from tests.storage.conftest import add_seeds, ready_element


async def test_another_users_dataset_is_not_found_for_every_action(services, alice, bob) -> None:
    from storage.dataset_views import IncomingFile

    await services.datasets.create(alice, "secret")
    await add_seeds(services, alice, "secret", [1, 2])
    d = services.datasets
    attempts = {
        "get": d.get(bob, "secret"),
        "add": d.add_images(bob, "secret", [IncomingFile("x.png", noise_png(9))]),
        "lint": d.lint(bob, "secret"),
        "delete": d.delete(bob, "secret"),
        "rename": d.rename(bob, "secret", "mine"),
        "remove": d.remove_images(bob, "secret", [1]),
        "caption": d.set_caption(bob, "secret", 1, "x"),
        "export": d.export_zip(bob, "secret").__aenter__(),
        "sheet": d.contact_sheet(bob, "secret"),
        "session": d.start_upload_session(bob, "secret"),
    }
    for what, coro in attempts.items():
        with pytest.raises(NotFound) as err:
            await coro
        assert "secret" in str(err.value), what
    assert await d.list(bob) == []
    info = await d.get(alice, "secret")
    assert info.image_count == 2  # untouched
    # Bob may have his own dataset with the same name: names are per owner.
    await d.create(bob, "secret")
    await add_seeds(services, bob, "secret", [1])
    assert (await d.get(bob, "secret")).image_count == 1
    assert (await d.get(alice, "secret")).image_count == 2


async def test_private_element_is_invisible_to_others(services, alice, bob) -> None:
    el = await ready_element(services, alice, "Private", "privtrig")
    for ref in (f"#{el.id}", "Private"):
        with pytest.raises(NotFound):
            await services.elements.get(bob, ref)
        with pytest.raises(NotFound):
            await services.elements.share(bob, ref, "public")
        with pytest.raises(NotFound):
            await services.elements.delete(bob, ref)
        with pytest.raises(NotFound):
            await services.elements.export(bob, ref)
    async with services.db.transaction() as session:
        with pytest.raises(NotFound):
            await services.elements.resolve_for_generation(session, bob, [(f"#{el.id}", None)], "flux-dev")
    assert await services.elements.autocomplete(bob, "") == []
    assert (await services.elements.browse(bob)).total == 0


async def test_public_element_is_usable_but_not_changeable_by_others(services, alice, bob) -> None:
    el = await ready_element(services, alice, "Inkwash", "inkwash", visibility=Visibility.PUBLIC)
    seen = await services.elements.get(bob, f"#{el.id}")
    assert seen.owner_name == "Alice" and not seen.is_own
    assert (await services.elements.get(bob, "Inkwash")).id == el.id  # a typed name finds public ones too
    with pytest.raises(Forbidden):
        await services.elements.share(bob, f"#{el.id}", "private")
    with pytest.raises(Forbidden):
        await services.elements.delete(bob, f"#{el.id}")
    async with services.db.transaction() as session:
        resolved = await services.elements.resolve_for_generation(session, bob, [(f"#{el.id}", 0.5)], "flux-dev")
        await services.elements.record_usage(session, [r.element_id for r in resolved], exclude_owner_id=bob.user_id)
    assert resolved[0].strength == 0.5 and not resolved[0].is_own
    assert (await services.elements.get(alice, "inkwash")).usage_count == 1
    bundle = await services.elements.export(bob, f"#{el.id}")
    assert bundle.filename == "inkwash_flux-dev.safetensors"
    assert [v for _, v in await services.elements.autocomplete(bob, "ink")] == [f"#{el.id}"]


async def test_server_visibility_is_limited_to_that_server(services, alice, bob) -> None:
    el = await ready_element(services, alice, "Guildy", "guildy", visibility=Visibility.SERVER, guild_id="g1")
    assert (await services.elements.get(bob, f"#{el.id}")).visibility == "server"
    elsewhere = bob.in_guild("g2")
    with pytest.raises(NotFound):
        await services.elements.get(elsewhere, f"#{el.id}")
    with pytest.raises(NotFound):
        await services.elements.get(bob.in_guild(None), f"#{el.id}")
    assert (await services.elements.browse(elsewhere)).total == 0
    assert (await services.elements.browse(bob)).total == 1


async def test_admin_may_unshare_and_delete_for_moderation(services, alice) -> None:
    admin_services_settings = services.settings.model_copy(update={"admin_user_ids": ["9999"]})
    from storage.users import UserService

    admin = await UserService(services.db, admin_services_settings).ensure("discord:9999", "Mod")
    assert admin.is_admin
    el = await ready_element(services, alice, "Edgy", "edgy", visibility=Visibility.PUBLIC)
    with pytest.raises(Forbidden):
        await services.elements.share(admin, f"#{el.id}", "public")  # admins can't re-share others' work
    assert (await services.elements.share(admin, f"#{el.id}", "private")).visibility == "private"
    with pytest.raises(NotFound):  # now private: invisible even to the admin
        await services.elements.delete(admin, f"#{el.id}")
    await services.elements.share(alice, "edgy", "public")
    await services.elements.delete(admin, f"#{el.id}")
    with pytest.raises(NotFound):
        await services.elements.get(alice, "edgy")
