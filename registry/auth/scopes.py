"""Scopes of the Docker token specification, and the access each registry route needs.

A scope is `<type>:<name>:<action>[,<action>...]`, e.g. `repository:team/app:pull,push` or
`registry:catalog:*`. Routes map to the actions Distribution asks for, so a token obtained from
one challenge covers the requests a client makes next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PULL = "pull"
PUSH = "push"
DELETE = "delete"
WILDCARD = "*"
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE})

REPOSITORY = "repository"
REGISTRY = "registry"
CATALOG = "catalog"

# The order clients and Distribution write actions in.
_ACTION_ORDER = {PULL: 0, PUSH: 1, DELETE: 2}


def _ordered(actions: Iterable[str]) -> list[str]:
    return sorted(set(actions), key=lambda a: (_ACTION_ORDER.get(a, 9), a))


@dataclass(frozen=True, slots=True)
class ResourceAccess:
    """Actions on one resource: asked for in a scope, granted in a token, needed by a route."""

    type: str
    name: str
    actions: frozenset[str]

    @property
    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(_ordered(self.actions))}"

    def claim(self) -> dict[str, object]:
        """The entry of a token's `access` claim."""
        return {"type": self.type, "name": self.name, "actions": _ordered(self.actions)}

    def covers(self, other: ResourceAccess) -> bool:
        """Whether this grant includes every action ``other`` needs on the same resource."""
        if (self.type, self.name) != (other.type, other.name):
            return False
        return WILDCARD in self.actions or other.actions <= self.actions


CATALOG_ACCESS = ResourceAccess(REGISTRY, CATALOG, frozenset({WILDCARD}))


def parse_scope(text: str) -> ResourceAccess | None:
    """One scope, or None when it is malformed (a malformed scope grants nothing)."""
    kind, sep, rest = text.partition(":")
    name, sep2, raw_actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    actions = frozenset(a for a in raw_actions.split(",") if a)
    if not actions:
        return None
    return ResourceAccess(kind, name, actions)


def parse_scopes(values: Iterable[str]) -> list[ResourceAccess]:
    """Scopes from repeated `scope` parameters or one space-separated OAuth2 `scope` field.

    Scopes naming the same resource are merged, in the order first seen.
    """
    merged: dict[tuple[str, str], set[str]] = {}
    for value in values:
        for text in value.split():
            parsed = parse_scope(text)
            if parsed is None:
                continue
            merged.setdefault((parsed.type, parsed.name), set()).update(parsed.actions)
    return [ResourceAccess(t, n, frozenset(a)) for (t, n), a in merged.items()]


@dataclass(frozen=True, slots=True)
class RouteAccess:
    """What a request must be allowed before its handler runs."""

    # Open to everyone (health, metrics, the token endpoint itself).
    public: bool = False
    # Repository actions the request needs.
    needs: tuple[ResourceAccess, ...] = ()
    # The catalog: any identity may list it, filtered to what it may pull.
    catalog: bool = False
    # A cross-repository mount's source: needs pull there, or the mount is not attempted.
    mount_source: str | None = None
    # Scopes to advertise in a Bearer challenge (writes ask for pull too, as Distribution does).
    challenge: tuple[ResourceAccess, ...] = field(default=())


_PUBLIC = frozenset({"health", "metrics", "auth_token", "auth_token_post"})
_BASE = frozenset({"base", "base_noslash"})
_PULL_ROUTES = frozenset(
    {"blob_head", "blob_get", "manifest_head", "manifest_get", "tags", "referrers"}
)
_PUSH_ROUTES = frozenset(
    {
        "upload_start",
        "upload_patch",
        "upload_put",
        "upload_status",
        "upload_delete",
        "manifest_put",
    }
)
_DELETE_ROUTES = frozenset({"blob_delete", "manifest_delete"})


def _action_for(route: str, method: str) -> str:
    if route in _PULL_ROUTES:
        return PULL
    if route in _PUSH_ROUTES:
        return PUSH
    if route in _DELETE_ROUTES:
        return DELETE
    # A route this table does not know yet: fail closed by method.
    if method in ("GET", "HEAD"):
        return PULL
    return DELETE if method == "DELETE" else PUSH


def route_access(
    route: str | None, method: str, name: str | None, query: Mapping[str, str]
) -> RouteAccess:
    """The access a request on ``route`` needs; ``name`` is its repository, if it has one."""
    if route is None or route in _PUBLIC:
        # Unmatched paths answer 404 without revealing anything.
        return RouteAccess(public=True)
    if route == "catalog":
        return RouteAccess(catalog=True, challenge=(CATALOG_ACCESS,))
    if route in _BASE or name is None:
        return RouteAccess()
    action = _action_for(route, method)
    need = ResourceAccess(REPOSITORY, name, frozenset({action}))
    shown = frozenset({PULL, PUSH}) if action == PUSH else need.actions
    challenge = [ResourceAccess(REPOSITORY, name, shown)]
    source = query.get("from") if route == "upload_start" and query.get("mount") else None
    if source:
        challenge.append(ResourceAccess(REPOSITORY, source, frozenset({PULL})))
    return RouteAccess(needs=(need,), mount_source=source or None, challenge=tuple(challenge))
