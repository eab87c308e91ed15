"""Access rules, scopes and the auth configuration, in process (no server needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from nimbus.config import ConfigError, load
from registry.auth.access import AccessPolicy
from registry.auth.ratelimit import FailedLoginLimiter
from registry.auth.scopes import parse_scopes, route_access
from registry.cli import add_arguments, flags
from registry.config import RegistryConfig
from tests.auth.conftest import ACCESS, GROUPS


def test_globs_match_within_or_across_path_components() -> None:
    policy = AccessPolicy.from_config(ACCESS, GROUPS)
    assert policy.actions("alice", "alice/a/b/c") == {"pull", "push", "delete"}
    assert policy.actions("alice", "team/app") == {"pull"}
    assert policy.actions("alice", "team/app/debug") == set()  # `*` stays in one component
    assert policy.actions("bob", "team/app") == {"pull", "push"}  # through group devs
    assert policy.actions("bob", "public/x/y") == {"pull"}  # what anonymous may, users may
    assert policy.actions(None, "public/x/y") == {"pull"}
    assert policy.actions(None, "team/app") == set()
    assert policy.actions("carol", "alice/app") == set()
    assert policy.actions("mallory", "alicex/app") == set()
    # No rules at all: any authenticated user may do anything, anonymous nothing.
    open_policy = AccessPolicy.from_config([], {})
    assert open_policy.actions("anyone", "x") == {"pull", "push", "delete"}
    assert open_policy.actions(None, "x") == set()


def test_scopes_merge_and_skip_malformed() -> None:
    parsed = parse_scopes(
        ["repository:a/b:pull", "repository:a/b:push repository:c:pull,push", "junk", "x::"]
    )
    assert [(p.type, p.name, sorted(p.actions)) for p in parsed] == [
        ("repository", "a/b", ["pull", "push"]),
        ("repository", "c", ["pull", "push"]),
    ]
    assert parsed[0].scope == "repository:a/b:pull,push"


def test_routes_need_the_actions_distribution_asks_for() -> None:
    def needs(route: str, method: str, query: dict[str, str] | None = None) -> list[str]:
        access = route_access(route, method, "a/b", query or {})
        return [f"{n.name}:{','.join(sorted(n.actions))}" for n in access.needs]

    assert needs("manifest_get", "GET") == ["a/b:pull"]
    assert needs("blob_head", "HEAD") == ["a/b:pull"]
    assert needs("upload_patch", "PATCH") == ["a/b:push"]
    assert needs("manifest_put", "PUT") == ["a/b:push"]
    assert needs("manifest_delete", "DELETE") == ["a/b:delete"]
    # A route the table does not know is judged by its method, never left open.
    assert needs("something_new", "POST") == ["a/b:push"]
    assert needs("something_new", "DELETE") == ["a/b:delete"]
    mount = route_access("upload_start", "POST", "a/b", {"mount": "sha256:x", "from": "c/d"})
    assert mount.mount_source == "c/d"
    assert [r.scope for r in mount.challenge] == ["repository:a/b:pull,push", "repository:c/d:pull"]
    assert route_access("health", "GET", None, {}).public
    assert route_access(None, "GET", None, {}).public  # unmatched: a 404 either way


def test_failed_logins_leave_the_window() -> None:
    now = [1000.0]
    limiter = FailedLoginLimiter(attempts=2, window=60, max_clients=3, clock=lambda: now[0])
    limiter.failed("a")
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == 60
    now[0] += 30
    assert limiter.retry_after("a") == 30
    now[0] += 31
    assert limiter.retry_after("a") is None
    for client in ("b", "c", "d", "e"):  # bounded memory
        limiter.failed(client)
    assert len(limiter._failures) <= 3


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"access": [{"repositories": ["x"], "actions": ["pull"]}]}, "names no users"),
        ({"access": [{"repositories": ["x"], "users": ["a"], "actions": ["fly"]}]}, "unknown"),
        ({"access": [{"repositories": ["x"], "groups": ["g"], "actions": ["pull"]}]}, "groups"),
        (
            {"access": [{"repositories": ["x"], "anonymous": True, "actions": ["push"]}]},
            "only be granted pull",
        ),
        ({"access": [{"repository": ["x"], "users": ["a"], "actions": ["pull"]}]}, "unknown keys"),
        ({"token": {"certificate": "a.pem", "jwks": "b.json"}}, "not both"),
        ({"token": {"certificate": "a.pem"}}, "realm"),
        ({"token": {"enabled": True, "expiry": 0}}, "expiry"),
        ({"token": {"realm": "token.example"}}, "http(s) URL"),
    ],
)
def test_bad_auth_configuration_is_refused_with_the_key(
    tmp_path: Path, auth: dict[str, object], message: str
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"auth": auth}))
    with pytest.raises(ConfigError, match="auth") as info:
        load(RegistryConfig, str(path), env={})
    assert message in str(info.value)


def test_flags_turn_on_token_mode() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--htpasswd", "users", "--auth-token-realm", "https://auth.example/token"]
    )
    config = load(RegistryConfig, None, env={}, flags=flags(args))
    assert config.auth.enabled
    assert config.auth.htpasswd == "users"
    assert config.auth.token.active
    assert not config.auth.token.external
    assert not load(RegistryConfig, None, env={}).auth.enabled
