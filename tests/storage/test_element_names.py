"""Typed Element names resolve own → shared in this server → public; ties list creators and ids."""

from __future__ import annotations

import pytest

from storage.db.models import Visibility
from storage.errors import Ambiguous, Forbidden, NotFound
from tests.storage.conftest import ready_element


async def test_a_public_element_is_found_by_its_typed_name(services, alice, bob) -> None:
    el = await ready_element(services, alice, "Orangeel", "orangeel", visibility=Visibility.PUBLIC)
    found = await services.elements.get(bob, "orangeel")  # what the issue saw fail: typed, not picked
    assert found.id == el.id and not found.is_own
    async with services.db.transaction() as session:
        resolved = await services.elements.resolve_for_generation(session, bob, [("ORANGEEL", None)], "flux-dev")
    assert [r.element_id for r in resolved] == [el.id]
    with pytest.raises(Forbidden):  # usable, never changeable by name either
        await services.elements.delete(bob, "orangeel")


async def test_own_beats_server_beats_public(services, alice, bob) -> None:
    carol = await services.users.ensure("discord:1003", "Carol", guild_id="g1")
    public = await ready_element(services, carol, "Ink", "inkcarol", visibility=Visibility.PUBLIC)
    server = await ready_element(services, alice, "Ink", "inkalice", visibility=Visibility.SERVER, guild_id="g1")
    assert (await services.elements.get(bob, "ink")).id == server.id  # this server's before public
    assert (await services.elements.get(bob.in_guild("g2"), "ink")).id == public.id  # elsewhere: only public
    own = await ready_element(services, bob, "Ink", "inkbob")
    assert (await services.elements.get(bob, "ink")).id == own.id  # own first, even private
    assert (await services.elements.get(alice, "ink")).id == server.id  # alice's own


async def test_several_equally_close_matches_list_creators_and_ids(services, alice, bob) -> None:
    carol = await services.users.ensure("discord:1003", "Carol", guild_id="g1")
    a = await ready_element(services, alice, "Fog", "fogalice", visibility=Visibility.PUBLIC)
    c = await ready_element(services, carol, "Fog", "fogcarol", visibility=Visibility.PUBLIC)
    with pytest.raises(Ambiguous) as err:
        await services.elements.get(bob, "fog")
    assert f"#{a.id} by Alice" in err.value.message and f"#{c.id} by Carol" in err.value.message
    assert "#" in err.value.hint
    assert (await services.elements.get(bob, f"#{c.id}")).id == c.id  # the id always works
    with pytest.raises(NotFound, match="No Element “mist”"):
        await services.elements.get(bob, "mist")
