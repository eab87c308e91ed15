"""Replication rules: which repositories, tags and actions go to a peer."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from nimbus.events import Action


class RuleAction(StrEnum):
    """The event actions a rule can carry to a peer."""

    PUSH = Action.PUSH.value
    # Deletes travel only when a rule asks for them: a mistaken delete must not spread by default.
    DELETE = Action.DELETE.value


@dataclass
class Rule:
    """Globs over repository names (`*` crosses `/`), a tag glob, and the actions carried.

    An empty include list means every repository; an empty tag pattern means every tag.
    The tag pattern applies to tagged events; manifests pushed by digest alone (index children,
    signatures) follow the repository globs.
    """

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    tag_pattern: str = ""
    actions: list[str] = field(default_factory=lambda: [RuleAction.PUSH.value])
    enabled: bool = True

    def validate(self) -> None:
        for action in self.actions:
            if action not in {a.value for a in RuleAction}:
                raise ValueError(f"rule action {action!r}: one of push, delete")
        if not self.actions:
            raise ValueError("a rule needs at least one action")

    def matches_repository(self, repository: str) -> bool:
        if self.include and not any(fnmatchcase(repository, g) for g in self.include):
            return False
        return not any(fnmatchcase(repository, g) for g in self.exclude)

    def matches_tag(self, tag: str) -> bool:
        return not tag or not self.tag_pattern or fnmatchcase(tag, self.tag_pattern)

    def matches(self, repository: str, tag: str, action: str) -> bool:
        return (
            self.enabled
            and action in self.actions
            and self.matches_repository(repository)
            and self.matches_tag(tag)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "tag_pattern": self.tag_pattern,
            "actions": list(self.actions),
            "enabled": self.enabled,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Rule:
        return cls(
            include=[str(x) for x in raw.get("include") or []],
            exclude=[str(x) for x in raw.get("exclude") or []],
            tag_pattern=str(raw.get("tag_pattern") or ""),
            actions=[str(x) for x in raw.get("actions") or [RuleAction.PUSH.value]],
            enabled=bool(raw.get("enabled", True)),
        )


# What a peer without rules gets: every repository and tag, pushes only.
DEFAULT_RULES = (Rule(),)


def first_match(rules: list[Rule], repository: str, tag: str, action: str) -> Rule | None:
    for rule in rules or DEFAULT_RULES:
        if rule.matches(repository, tag, action):
            return rule
    return None
