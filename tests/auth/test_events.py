"""The authenticated user is the actor of the events a request causes."""

from __future__ import annotations

import uuid

import pytest

from tests.auth.conftest import push_image, start_registry
from tests.events.conftest import read_events
from tests.fixtures.images import make_image


async def test_events_name_the_authenticated_user_as_actor(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    site = f"auth{uuid.uuid4().hex[:8]}"
    image = make_image((512,), seed=91)
    # Basic, then the token flow: bob's client logs in whichever way the registry asks.
    for mode in ((), ("--auth-token",)):
        registry = start_registry(tmp_path_factory, "--nats", nats_url, "--site", site, *mode)
        try:
            await push_image(registry, "bob", "team/actor", "v1", image)
        finally:
            registry.stop()
    # Per push: one event per blob and one for the manifest.
    events = await read_events(nats_url, site, expected=2 * (len(image.blobs) + 1))
    assert len(events) == 2 * (len(image.blobs) + 1)
    assert {received.event.actor.name for received in events} == {"bob"}
