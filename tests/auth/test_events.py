"""The authenticated user is the actor of the events a request causes."""

from __future__ import annotations

import uuid

import pytest

from tests.auth.clients import basic, get_token, push_image_http
from tests.auth.conftest import USERS, start_registry
from tests.events.conftest import read_events
from tests.fixtures.images import make_image


async def test_events_name_the_authenticated_user_as_actor(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    site = f"auth{uuid.uuid4().hex[:8]}"
    image = make_image((512,), seed=91)
    for mode in ((), ("--auth-token",)):
        registry = start_registry(tmp_path_factory, "--nats", nats_url, "--site", site, *mode)
        try:
            if mode:
                scope = "repository:team/actor:pull,push"
                token = get_token(registry, [scope], "bob", USERS["bob"]).json()["token"]
                authorization = f"Bearer {token}"
            else:
                authorization = basic("bob", USERS["bob"])
            reply = push_image_http(registry, "team/actor", "v1", image, authorization)
            assert reply.status == 201
        finally:
            registry.stop()
    # Per push: one event per blob and one for the manifest.
    events = await read_events(nats_url, site, expected=2 * (len(image.blobs) + 1))
    assert len(events) == 2 * (len(image.blobs) + 1)
    assert {received.event.actor.name for received in events} == {"bob"}
