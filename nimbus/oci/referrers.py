"""Referrers: the descriptor an index lists for a referrer, and the fallback tag schema.

A registry without the referrers API is given an index per subject under the tag
`sha256-<hex>`, which clients (and the replicator) keep up to date themselves.
"""

from __future__ import annotations

import json
from typing import Any

from nimbus.oci import mediatypes as mt
from nimbus.oci.documents import Descriptor, ManifestDocument

MAX_TAG_LENGTH = 128


def referrers_tag(digest: str) -> str:
    """The fallback tag schema: `sha256:abc...` is indexed under tag `sha256-abc...`."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}"[:MAX_TAG_LENGTH]


def referrer_descriptor(
    document: ManifestDocument, digest: str, size: int, media_type: str = ""
) -> Descriptor:
    """How the referrers of a subject list this manifest: its type, artifact type, annotations."""
    return Descriptor(
        media_type=media_type or document.media_type,
        digest=digest,
        size=size,
        artifact_type=document.effective_artifact_type,
        annotations=dict(document.annotations),
    )


def matching(items: list[Any], artifact_type: str | None) -> list[dict[str, Any]]:
    """The descriptor objects of a referrers list, only of ``artifact_type`` when one is asked."""
    found = [item for item in items if isinstance(item, dict)]
    if artifact_type:
        found = [item for item in found if item.get("artifactType") == artifact_type]
    return found


def with_referrer(index: bytes | None, descriptor: Descriptor) -> bytes | None:
    """The fallback index with ``descriptor`` added; None when it is listed already."""
    doc: dict[str, Any] = (
        json.loads(index)
        if index is not None
        else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    )
    manifests = doc.setdefault("manifests", [])
    if any(isinstance(m, dict) and m.get("digest") == descriptor.digest for m in manifests):
        return None
    manifests.append(descriptor.to_json())
    return json.dumps(doc, separators=(",", ":")).encode()


def listed(index: bytes) -> list[Any]:
    """What a fallback index lists (its `manifests`), as served."""
    doc = json.loads(index)
    items = doc.get("manifests") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else []
