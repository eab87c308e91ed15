"""Rule matching and challenge parsing: pure functions, checked on their own."""

from __future__ import annotations

from nimbus.oci.referrers import referrers_tag
from nimbus.oci.transport import parse_www_authenticate
from replicator.rules import Rule, first_match


def test_rule_globs_tags_and_actions() -> None:
    rule = Rule(include=["team/*", "base"], exclude=["team/secret*"], tag_pattern="v*")
    assert rule.matches("team/app", "v1.2", "push")
    assert rule.matches("team/a/b", "v1", "push")  # `*` crosses `/`
    assert rule.matches("base", "", "push")  # pushes by digest follow the repository globs
    assert not rule.matches("team/secret-x", "v1", "push")
    assert not rule.matches("other/app", "v1", "push")
    assert not rule.matches("team/app", "dev", "push")
    assert not rule.matches("team/app", "v1", "delete")  # deletes only when asked
    assert Rule(actions=["push", "delete"]).matches("any/thing", "x", "delete")
    assert not Rule(enabled=False).matches("any", "x", "push")


def test_first_match_defaults_to_every_push() -> None:
    assert first_match([], "any/repo", "latest", "push") is not None
    assert first_match([], "any/repo", "latest", "delete") is None
    rules = [Rule(include=["a/*"]), Rule(include=["b/*"], actions=["delete"])]
    assert first_match(rules, "b/x", "t", "delete") is rules[1]
    assert first_match(rules, "b/x", "t", "push") is None


def test_www_authenticate_challenges() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull,push"'
    )
    (challenge,) = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:team/app:pull,push",
    }
    basic = parse_www_authenticate('Basic realm="Registry Realm", charset=UTF-8')
    assert basic[0].scheme == "basic" and basic[0].params["realm"] == "Registry Realm"
    assert basic[0].params["charset"] == "UTF-8"
    escaped = parse_www_authenticate(r'Bearer realm="a\"b"')
    assert escaped[0].params["realm"] == 'a"b'


def test_referrers_tag_schema() -> None:
    digest = "sha256:" + "ab" * 32
    assert referrers_tag(digest) == "sha256-" + "ab" * 32
