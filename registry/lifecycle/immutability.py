"""Immutable tags: a tag matching a rule points at one manifest for good."""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import ErrorCode, OCIError
from registry.lifecycle.rules import Policies
from registry.reference import Digest


def check_move(policies: Policies, name: str, tag: str, old: Digest | None, new: Digest) -> None:
    """Refuse pointing an existing immutable tag at another manifest (re-pushing it is fine)."""
    if old is None or old == new:
        return
    rule = policies.immutable_rule(name, tag)
    if rule is not None:
        raise OCIError(
            ErrorCode.DENIED,
            f"tag {tag} of {name} is immutable (rule {rule.name!r}: {rule.pattern}); it points "
            f"to {old} and cannot be moved to {new}",
            detail={"rule": rule.name, "tag": tag, "digest": str(old)},
        )


def check_delete(policies: Policies, name: str, tags: Sequence[str]) -> None:
    for tag in tags:
        rule = policies.immutable_rule(name, tag)
        if rule is not None:
            raise OCIError(
                ErrorCode.DENIED,
                f"tag {tag} of {name} is immutable (rule {rule.name!r}: {rule.pattern}) and "
                "cannot be deleted",
                detail={"rule": rule.name, "tag": tag},
            )
