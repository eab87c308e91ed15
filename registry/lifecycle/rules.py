"""Lifecycle rules: immutable tags, quotas and retention, their validation and matching.

One parser serves the YAML (`lifecycle.policies`) and the gRPC admin API, so a rule refused in
one is refused the same way in the other, with a message naming the rule and field. In a
repository glob `*` matches within one path component and `**` across components (as in the
access rules); a tag glob has `*` and `?`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.auth.access import glob_to_regex
from registry.lifecycle.schedule import parse_schedule
from registry.lifecycle.values import PolicyError, parse_bytes, parse_duration

_REPO_GLOB_RE = re.compile(r"^[a-z0-9*?][a-z0-9._/*?-]*$")
_TAG_GLOB_RE = re.compile(r"^[A-Za-z0-9_*?][A-Za-z0-9._*?-]{0,127}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/*?-]{0,127}$")

_SECTIONS = ("immutable", "quotas", "retention")
_IMMUTABLE_KEYS = frozenset({"name", "pattern"})
_QUOTA_KEYS = frozenset({"name", "repositories", "bytes", "tags"})
_RETENTION_KEYS = frozenset(
    {
        "name",
        "repositories",
        "keep_last",
        "pushed_within",
        "pulled_within",
        "keep_tags",
        "untagged_older_than",
        "schedule",
    }
)


def _repo_glob(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _REPO_GLOB_RE.match(value) or "//" in value:
        raise PolicyError(
            f"{key}: {value!r} is not a repository glob (a-z, 0-9, '.', '_', '-', '/', '*', '?')"
        )
    if "***" in value:
        raise PolicyError(f"{key}: {value!r} is not a repository glob ('***')")
    return value


def _tag_glob(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _TAG_GLOB_RE.match(value):
        raise PolicyError(f"{key}: {value!r} is not a tag glob (A-Z, a-z, 0-9, '.', '_', '-', '*')")
    return value


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{key}: expected a whole number, got {value!r}")
    if value < 0:
        raise PolicyError(f"{key}: must not be negative, got {value}")
    return value


def _keys(raw: Any, allowed: frozenset[str], key: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{key}: expected a mapping, got {raw!r}")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise PolicyError(
            f"{key}.{unknown[0]}: unknown setting (known: {', '.join(sorted(allowed))})"
        )
    return raw


def _name(raw: Mapping[str, Any], default: str, key: str) -> str:
    value = raw.get("name", default)
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise PolicyError(f"{key}.name: {value!r} is not a rule name (letters, digits, . _ - : /)")
    return value


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    """Tags matching `repositories:tags` cannot be moved to another manifest or deleted."""

    name: str
    repositories: str
    tags: str
    _repo: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _tag: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_repo", glob_to_regex(self.repositories))
        object.__setattr__(self, "_tag", glob_to_regex(self.tags))

    @property
    def pattern(self) -> str:
        return f"{self.repositories}:{self.tags}"

    def matches(self, repository: str, tag: str) -> bool:
        return bool(self._repo.fullmatch(repository) and self._tag.fullmatch(tag))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pattern": self.pattern}


@dataclass(frozen=True, slots=True)
class QuotaRule:
    """Each repository matching the glob may hold this many bytes (0: no limit), each distinct
    blob and manifest counted once, and this many tags (0: no limit)."""

    name: str
    repositories: str
    bytes: int = 0
    tags: int = 0
    _repo: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_repo", glob_to_regex(self.repositories))

    def matches(self, repository: str) -> bool:
        return bool(self._repo.fullmatch(repository))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repositories": self.repositories,
            "bytes": self.bytes,
            "tags": self.tags,
        }


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Tags kept in matching repositories: the union of every keep given; the rest go.

    A rule without any keep keeps every tag (it only cleans up untagged manifests)."""

    name: str
    repositories: str
    keep_last: int | None = None
    pushed_within: float | None = None
    pulled_within: float | None = None
    keep_tags: tuple[str, ...] = ()
    untagged_older_than: float | None = None
    # When the registry applies the rule by itself: an interval or a cron expression
    # (registry.lifecycle.schedule); empty: on demand (and lifecycle.retention_interval).
    schedule: str = ""
    _repo: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _keep: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_repo", glob_to_regex(self.repositories))
        object.__setattr__(self, "_keep", tuple(glob_to_regex(g) for g in self.keep_tags))

    @property
    def selects_tags(self) -> bool:
        """Whether the rule deletes tags at all (it has some keep)."""
        return (
            self.keep_last is not None
            or self.pushed_within is not None
            or self.pulled_within is not None
            or bool(self.keep_tags)
        )

    def matches(self, repository: str) -> bool:
        return bool(self._repo.fullmatch(repository))

    def keeps_name(self, tag: str) -> bool:
        return any(p.fullmatch(tag) for p in self._keep)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "repositories": self.repositories}
        for key in ("keep_last", "pushed_within", "pulled_within", "untagged_older_than"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.keep_tags:
            out["keep_tags"] = list(self.keep_tags)
        if self.schedule:
            out["schedule"] = self.schedule
        return out


@dataclass(frozen=True, slots=True)
class Policies:
    """Every lifecycle rule of the registry; in each list the first matching rule applies."""

    immutable: tuple[ImmutableRule, ...] = ()
    quotas: tuple[QuotaRule, ...] = ()
    retention: tuple[RetentionRule, ...] = ()

    def immutable_rule(self, repository: str, tag: str) -> ImmutableRule | None:
        return next((r for r in self.immutable if r.matches(repository, tag)), None)

    def quota_for(self, repository: str) -> QuotaRule | None:
        return next((r for r in self.quotas if r.matches(repository)), None)

    def retention_for(self, repository: str) -> RetentionRule | None:
        return next((r for r in self.retention if r.matches(repository)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "immutable": [r.to_json() for r in self.immutable],
            "quotas": [r.to_json() for r in self.quotas],
            "retention": [r.to_json() for r in self.retention],
        }

    @classmethod
    def parse(cls, raw: Any, where: str = "lifecycle.policies") -> Policies:
        """Validate a mapping of the three rule lists; raises PolicyError naming what is wrong."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: expected a mapping of {', '.join(_SECTIONS)}")
        _keys(raw, frozenset(_SECTIONS), where)
        lists: dict[str, list[Any]] = {}
        for section in _SECTIONS:
            value = raw.get(section) or []
            if not isinstance(value, list):
                raise PolicyError(f"{where}.{section}: expected a list of rules")
            lists[section] = value
        policies = cls(
            immutable=tuple(
                _immutable(r, f"{where}.immutable[{i}]") for i, r in enumerate(lists["immutable"])
            ),
            quotas=tuple(_quota(r, f"{where}.quotas[{i}]") for i, r in enumerate(lists["quotas"])),
            retention=tuple(
                _retention(r, f"{where}.retention[{i}]") for i, r in enumerate(lists["retention"])
            ),
        )
        for section in _SECTIONS:
            seen: set[str] = set()
            for i, rule in enumerate(getattr(policies, section)):
                if rule.name in seen:
                    raise PolicyError(
                        f"{where}.{section}[{i}].name: {rule.name!r} names an earlier rule too"
                    )
                seen.add(rule.name)
        return policies


def _immutable(raw: Any, key: str) -> ImmutableRule:
    rule = _keys(raw, _IMMUTABLE_KEYS, key)
    pattern = rule.get("pattern")
    if not isinstance(pattern, str) or ":" not in pattern:
        raise PolicyError(f"{key}.pattern: expected REPOSITORY-GLOB:TAG-GLOB, got {pattern!r}")
    repositories, _, tags = pattern.rpartition(":")
    _repo_glob(repositories, f"{key}.pattern")
    _tag_glob(tags, f"{key}.pattern")
    return ImmutableRule(_name(rule, pattern, key), repositories, tags)


def _quota(raw: Any, key: str) -> QuotaRule:
    rule = _keys(raw, _QUOTA_KEYS, key)
    if "repositories" not in rule:
        raise PolicyError(f"{key}.repositories: required")
    repositories = _repo_glob(rule["repositories"], f"{key}.repositories")
    size = parse_bytes(rule.get("bytes", 0), f"{key}.bytes")
    tags = _count(rule.get("tags", 0), f"{key}.tags")
    if not size and not tags:
        raise PolicyError(f"{key}: give bytes, tags or both")
    return QuotaRule(_name(rule, repositories, key), repositories, size, tags)


def _optional_duration(rule: Mapping[str, Any], field_name: str, key: str) -> float | None:
    value = rule.get(field_name)
    return None if value is None else parse_duration(value, f"{key}.{field_name}")


def _schedule(rule: Mapping[str, Any], name: str, key: str) -> str:
    value = rule.get("schedule")
    if value is None or value == "":
        return ""
    try:
        return parse_schedule(value, f"{key}.schedule").text
    except PolicyError as error:
        raise PolicyError(f"{error} (retention rule {name!r})") from None


def _retention(raw: Any, key: str) -> RetentionRule:
    rule = _keys(raw, _RETENTION_KEYS, key)
    if "repositories" not in rule:
        raise PolicyError(f"{key}.repositories: required")
    repositories = _repo_glob(rule["repositories"], f"{key}.repositories")
    keep_last = rule.get("keep_last")
    keep_tags = rule.get("keep_tags") or []
    if isinstance(keep_tags, str):
        keep_tags = [keep_tags]
    if not isinstance(keep_tags, list):
        raise PolicyError(f"{key}.keep_tags: expected a list of tag globs")
    name = _name(rule, repositories, key)
    parsed = RetentionRule(
        name=name,
        repositories=repositories,
        keep_last=None if keep_last is None else _count(keep_last, f"{key}.keep_last"),
        pushed_within=_optional_duration(rule, "pushed_within", key),
        pulled_within=_optional_duration(rule, "pulled_within", key),
        keep_tags=tuple(_tag_glob(g, f"{key}.keep_tags[{i}]") for i, g in enumerate(keep_tags)),
        untagged_older_than=_optional_duration(rule, "untagged_older_than", key),
        schedule=_schedule(rule, name, key),
    )
    if not parsed.selects_tags and parsed.untagged_older_than is None:
        raise PolicyError(
            f"{key}: give a keep (keep_last, pushed_within, pulled_within, keep_tags) "
            "or untagged_older_than"
        )
    return parsed
