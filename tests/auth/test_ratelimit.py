"""Failed logins are rate-limited per client address: 429 TOOMANYREQUESTS, on every door."""

from __future__ import annotations

from http.client import HTTPConnection

import pytest

from tests.auth.clients import basic, get_token, http, post_form
from tests.auth.conftest import USERS, start_registry


def test_failed_logins_are_rate_limited_per_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    registry = start_registry(tmp_path_factory, "--auth-token", login_attempts=3)
    try:
        url = f"{registry.url}/v2/"
        for _ in range(3):
            assert http("GET", url, authorization=basic("alice", "guess")).status == 401
        # Locked out: even the right password is refused now, so guessing learns nothing.
        reply = http("GET", url, authorization=basic("alice", USERS["alice"]))
        assert reply.status == 429
        assert reply.error_code == "TOOMANYREQUESTS"
        assert 0 < int(reply.headers["Retry-After"]) <= 60
        token = get_token(registry, ["repository:alice/x:pull"], "alice", USERS["alice"])
        assert token.status == 429
        assert token.error_code == "TOOMANYREQUESTS"
        form = post_form(
            f"{registry.url}/auth/token",
            {"grant_type": "password", "username": "alice", "password": USERS["alice"]},
        )
        assert form.status == 429
        assert form.json()["error"] == "slow_down"
        # Requests without credentials are not logins: anonymous pulls still work.
        assert http("GET", f"{registry.url}/v2/public/x/tags/list").status == 404

        # Another client address (still loopback) is not affected.
        conn = HTTPConnection(
            "127.0.0.1", registry.port, timeout=10, source_address=("127.0.0.2", 0)
        )
        try:
            conn.request("GET", "/v2/", headers={"Authorization": basic("alice", USERS["alice"])})
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    finally:
        registry.stop()
