"""Access rules: who may pull, push and delete in which repositories.

Rules only grant (there is no deny): a caller's actions on a repository are the union of every
rule whose globs match the repository and whose users, groups or `anonymous` match the caller
(an anonymous rule matches everyone).
In a glob `*` matches within one path component and `**` across components, so `team/*` is
`team/app` but not `team/app/debug`, and `team/**` is both. With no rules at all, every
authenticated user may do everything and anonymous callers nothing (as `registry:2` does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from registry.auth.scopes import REPOSITORY_ACTIONS, WILDCARD

ANY_USER = "*"
_RULE_KEYS = frozenset({"repositories", "actions", "users", "groups", "anonymous"})


class AccessConfigError(ValueError):
    """An access rule or group definition cannot be used; the message says which and why."""


def glob_to_regex(glob: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            parts.append(".*")
            i += 2
        elif glob[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(parts))


@dataclass(frozen=True)
class AccessRule:
    repositories: tuple[str, ...]
    actions: frozenset[str]
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    anonymous: bool = False
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        patterns = tuple(glob_to_regex(g) for g in self.repositories)
        object.__setattr__(self, "_patterns", patterns)

    def matches_repository(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self._patterns)

    def applies_to(self, user: str | None, user_groups: frozenset[str]) -> bool:
        # What anonymous callers may do, logged-in users may do too.
        if self.anonymous or user is None:
            return self.anonymous
        return ANY_USER in self.users or user in self.users or bool(self.groups & user_groups)


class AccessPolicy:
    def __init__(
        self, rules: Sequence[AccessRule], groups: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.rules = tuple(rules)
        memberships: dict[str, set[str]] = {}
        for group, members in (groups or {}).items():
            for member in members:
                memberships.setdefault(member, set()).add(group)
        self._groups = {user: frozenset(g) for user, g in memberships.items()}

    @property
    def open(self) -> bool:
        """No rules configured: authentication alone grants everything."""
        return not self.rules

    @property
    def allows_anonymous(self) -> bool:
        return any(rule.anonymous for rule in self.rules)

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        """What ``user`` (None: anonymous) may do in ``repository``."""
        if self.open:
            return REPOSITORY_ACTIONS if user is not None else frozenset()
        user_groups = self._groups.get(user, frozenset()) if user is not None else frozenset()
        granted: set[str] = set()
        for rule in self.rules:
            if rule.applies_to(user, user_groups) and rule.matches_repository(repository):
                granted |= rule.actions
        return frozenset(granted)

    def permits(self, user: str | None, repository: str, actions: Iterable[str]) -> bool:
        return set(actions) <= self.actions(user, repository)

    @classmethod
    def from_config(
        cls, rules: Sequence[Mapping[str, Any]], groups: Mapping[str, Any]
    ) -> AccessPolicy:
        """Parse the `auth.access` list and `auth.groups` mapping of the configuration."""
        if not isinstance(groups, Mapping):
            raise AccessConfigError("auth.groups: expected a mapping of group -> list of users")
        parsed_groups: dict[str, list[str]] = {}
        for group, members in groups.items():
            parsed_groups[str(group)] = _strings(members, f"auth.groups.{group}")
        if not isinstance(rules, list | tuple):
            raise AccessConfigError("auth.access: expected a list of rules")
        parsed = [_parse_rule(raw, i, parsed_groups) for i, raw in enumerate(rules)]
        return cls(parsed, parsed_groups)


def _strings(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise AccessConfigError(f"{key}: expected a list of non-empty strings")
    return list(value)


def _parse_rule(raw: Any, index: int, groups: Mapping[str, list[str]]) -> AccessRule:
    key = f"auth.access[{index}]"
    if not isinstance(raw, Mapping):
        raise AccessConfigError(f"{key}: expected a mapping with repositories and actions")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise AccessConfigError(f"{key}: unknown keys {sorted(unknown)}")
    repositories = _strings(raw.get("repositories"), f"{key}.repositories")
    actions = set(_strings(raw.get("actions"), f"{key}.actions"))
    if WILDCARD in actions:
        actions = set(REPOSITORY_ACTIONS)
    if not actions <= REPOSITORY_ACTIONS:
        bad = sorted(actions - REPOSITORY_ACTIONS)
        raise AccessConfigError(f"{key}.actions: unknown {bad}; use pull, push, delete or *")
    users = _strings(raw.get("users", []), f"{key}.users") if raw.get("users") else []
    rule_groups = _strings(raw.get("groups", []), f"{key}.groups") if raw.get("groups") else []
    missing = [g for g in rule_groups if g not in groups]
    if missing:
        raise AccessConfigError(f"{key}.groups: not defined in auth.groups: {missing}")
    anonymous = raw.get("anonymous", False)
    if not isinstance(anonymous, bool):
        raise AccessConfigError(f"{key}.anonymous: expected true or false")
    if anonymous and actions != {"pull"}:
        raise AccessConfigError(f"{key}: anonymous callers may only be granted pull")
    if not (users or rule_groups or anonymous):
        raise AccessConfigError(f"{key}: names no users, groups or anonymous")
    return AccessRule(
        repositories=tuple(repositories),
        actions=frozenset(actions),
        users=frozenset(users),
        groups=frozenset(rule_groups),
        anonymous=anonymous,
    )
