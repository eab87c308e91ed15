"""Which events a webhook (or a watch) selects: actions, repository globs, tag globs, media types.

An empty list selects everything for that field. Globs are shell-style (`fnmatch`), matched
case-sensitively; `*` also crosses `/`, so `team/*` selects every repository under `team/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from nimbus.events import Action
from proto.nimbus.v1 import events_pb2, webhooks_pb2

ACTIONS = tuple(Action)


def _any_glob(value: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def matches(selector: webhooks_pb2.EventFilter, event: events_pb2.Event) -> bool:
    target = event.target
    if selector.actions and event.action not in selector.actions:
        return False
    if selector.repositories and not _any_glob(target.repository, selector.repositories):
        return False
    if selector.tags and not (target.tag and _any_glob(target.tag, selector.tags)):
        return False
    return not (selector.media_types and not _any_glob(target.media_type, selector.media_types))


def problems(selector: webhooks_pb2.EventFilter) -> list[str]:
    """What is wrong with a filter, in words; empty when it can be used."""
    found = [
        f"unknown action {a!r} (one of {', '.join(ACTIONS)})"
        for a in selector.actions
        if a not in ACTIONS
    ]
    for field, patterns in (
        ("repository", selector.repositories),
        ("tag", selector.tags),
        ("media type", selector.media_types),
    ):
        found.extend(f"empty {field} pattern" for p in patterns if not p.strip())
    return found
