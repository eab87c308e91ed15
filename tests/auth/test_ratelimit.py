"""Failed logins are rate-limited per client address: 429 TOOMANYREQUESTS, on every door."""

from __future__ import annotations

import aiohttp
import pytest

from tests.auth.conftest import USERS, RawClient, start_registry
from tests.auth.tokens import basic, get_token, post_form
from tests.registry.oci_client import OCIClient


async def test_failed_logins_are_rate_limited_per_client(
    tmp_path_factory: pytest.TempPathFactory, raw: RawClient
) -> None:
    registry = start_registry(tmp_path_factory, "--auth-token", login_attempts=3)
    try:
        client = raw(registry)
        for _ in range(3):
            guess = await client.authorized(basic("alice", "guess")).request("GET", "/v2/")
            assert guess.status == 401
        # Locked out: even the right password is refused now, so guessing learns nothing.
        alice = basic("alice", USERS["alice"])
        reply = await client.authorized(alice).request("GET", "/v2/")
        assert reply.status == 429
        assert reply.error_codes == ["TOOMANYREQUESTS"]
        assert 0 < int(reply.headers["Retry-After"]) <= 60
        token = await get_token(client, ["repository:alice/x:pull"], "alice", USERS["alice"])
        assert token.status == 429
        assert token.error_codes == ["TOOMANYREQUESTS"]
        form = await post_form(
            client, {"grant_type": "password", "username": "alice", "password": USERS["alice"]}
        )
        assert form.status == 429
        assert form.json()["error"] == "slow_down"
        # Requests without credentials are not logins: anonymous pulls still work.
        assert (await client.request("GET", "/v2/public/x/tags/list")).status == 404

        # Another client address (still loopback) is not affected.
        elsewhere = aiohttp.TCPConnector(force_close=True, local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(
            connector=elsewhere, timeout=aiohttp.ClientTimeout(total=10)
        ) as session:
            other = OCIClient(session, f"http://127.0.0.1:{registry.port}", alice)
            assert (await other.request("GET", "/v2/")).status == 200
    finally:
        registry.stop()
