"""The manifest and index documents: descriptors, platforms, and the rules for reading them.

Pure functions over bytes, no I/O. Two ways in:

- `parse_manifest` is what a registry accepts on PUT: schema 2, a supported media type, and
  every descriptor well formed; anything else is an `InvalidManifestError` saying where.
- `read_manifest` reads a document that is already stored or that another registry served:
  it only needs a JSON object and skips what it cannot make sense of.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nimbus.oci import mediatypes as mt
from nimbus.oci.digests import InvalidDigestError, check_digest

# Documents larger than this are worth parsing in a worker thread rather than on the loop.
LARGE_DOCUMENT_BYTES = 256 * 1024


class InvalidManifestError(ValueError):
    """The document is not a manifest a registry may accept; the message says why."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = ""
    architecture: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def read(cls, raw: Any) -> Platform | None:
        """An index entry's `platform`, or an image config's own fields; None if not an object."""
        if not isinstance(raw, dict):
            return None
        features = raw.get("os.features")
        return cls(
            os=str(raw.get("os", "")),
            architecture=str(raw.get("architecture", "")),
            variant=str(raw.get("variant", "")),
            os_version=str(raw.get("os.version", raw.get("os_version", ""))),
            os_features=tuple(str(f) for f in features) if isinstance(features, list) else (),
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            doc["os.version"] = self.os_version
        if self.os_features:
            doc["os.features"] = list(self.os_features)
        if self.variant:
            doc["variant"] = self.variant
        return doc


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> Descriptor:
        """A descriptor as the spec requires it; InvalidManifestError names ``where``."""
        if not isinstance(raw, dict):
            raise InvalidManifestError(f"{where} is not a descriptor")
        media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidManifestError(f"{where}.mediaType is missing")
        if not isinstance(digest, str):
            raise InvalidManifestError(f"{where}.digest is missing")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifestError(f"{where}.size is not a size")
        try:
            check_digest(digest)
        except InvalidDigestError:
            raise InvalidManifestError(f"{where}.digest is invalid") from None
        return cls._from(raw, media_type, digest, size)

    @classmethod
    def read(cls, raw: Any) -> Descriptor | None:
        """Whatever a stored descriptor holds (missing fields empty); None if not an object."""
        if not isinstance(raw, dict):
            return None
        media_type, digest, size = raw.get("mediaType", ""), raw.get("digest"), raw.get("size")
        return cls._from(
            raw,
            str(media_type),
            digest if isinstance(digest, str) else "",
            size if isinstance(size, int) and not isinstance(size, bool) else 0,
        )

    @classmethod
    def _from(cls, raw: dict[str, Any], media_type: str, digest: str, size: int) -> Descriptor:
        artifact_type = raw.get("artifactType")
        urls = raw.get("urls")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            artifact_type=artifact_type if isinstance(artifact_type, str) else "",
            annotations=annotations_of(raw),
            platform=Platform.read(raw.get("platform")),
            urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
        )

    @property
    def distributable(self) -> bool:
        """False for foreign layers, which a registry need not hold."""
        return not self.media_type.startswith(mt.NON_DISTRIBUTABLE_PREFIXES)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        if self.platform is not None:
            doc["platform"] = self.platform.to_json()
        if self.urls:
            doc["urls"] = list(self.urls)
        return doc


@dataclass(frozen=True, slots=True)
class ManifestDocument:
    """An image manifest (config and layers) or an index (manifests), with what both may have."""

    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    # `blobs` of the withdrawn OCI artifact manifest: read so that nothing they name is lost.
    blobs: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def effective_artifact_type(self) -> str:
        """`artifactType`, else the config's media type (how the referrers API reports it)."""
        if self.artifact_type:
            return self.artifact_type
        return self.config.media_type if self.config is not None else ""

    def references(self) -> list[str]:
        """Digests this document needs: its config, layers, listed manifests and blobs."""
        found = [self.config] if self.config is not None else []
        found += [*self.layers, *self.manifests, *self.blobs]
        return [d.digest for d in found if d.digest]

    def distributable_blobs(self) -> list[Descriptor]:
        """Config and layers a registry must hold, each digest once."""
        found: dict[str, Descriptor] = {}
        candidates = [self.config] if self.config is not None else []
        for item in [*candidates, *self.layers]:
            if item.digest and item.distributable:
                found.setdefault(item.digest, item)
        return list(found.values())


def annotations_of(raw: dict[str, Any]) -> dict[str, str]:
    value = raw.get("annotations")
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def decode(data: bytes) -> dict[str, Any]:
    """The JSON object of a document; InvalidManifestError when it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidManifestError("manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidManifestError("manifest is not a JSON object")
    return doc


def media_type_of(doc: dict[str, Any], content_type: str = "") -> str:
    """The media type a registry takes a document as, checked against its Content-Type."""
    declared = doc.get("mediaType")
    header = mt.essence(content_type)
    if declared is not None and not isinstance(declared, str):
        raise InvalidManifestError("mediaType is not a string")
    if header in mt.SCHEMA1 or declared in mt.SCHEMA1 or doc.get("schemaVersion") == 1:
        raise InvalidManifestError("schema1 manifests are not supported")
    if declared and header in mt.MANIFESTS and declared != header:
        raise InvalidManifestError(
            f"Content-Type {header} does not match the manifest's mediaType {declared}"
        )
    media_type = declared or (header if header in mt.MANIFESTS else "")
    if not media_type:
        # OCI manifests may omit mediaType; tell them apart by shape.
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise InvalidManifestError(f"unsupported manifest media type {media_type}")
    return media_type


def parse_manifest(data: bytes, content_type: str = "") -> ManifestDocument:
    """A document as a registry accepts it on PUT (see the module's docstring)."""
    doc = decode(data)
    media_type = media_type_of(doc, content_type)
    if doc.get("schemaVersion") != 2:
        raise InvalidManifestError("schemaVersion must be 2")
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    if media_type in mt.IMAGE_MANIFESTS:
        config = Descriptor.parse(doc.get("config"), "config")
        raw_layers = doc.get("layers", [])
        if not isinstance(raw_layers, list):
            raise InvalidManifestError("layers is not a list")
        layers = tuple(Descriptor.parse(d, f"layers[{i}]") for i, d in enumerate(raw_layers))
    else:
        raw_manifests = doc.get("manifests")
        if not isinstance(raw_manifests, list):
            raise InvalidManifestError("manifests is not a list")
        manifests = tuple(
            Descriptor.parse(d, f"manifests[{i}]") for i, d in enumerate(raw_manifests)
        )
    subject = Descriptor.parse(doc["subject"], "subject") if "subject" in doc else None
    artifact_type = doc.get("artifactType")
    return ManifestDocument(
        media_type=media_type,
        config=config,
        layers=layers,
        manifests=manifests,
        subject=subject,
        artifact_type=artifact_type if isinstance(artifact_type, str) else "",
        annotations=annotations_of(doc),
    )


def read_manifest(data: bytes, content_type: str = "") -> ManifestDocument:
    """A stored or served document, read leniently (see the module's docstring)."""
    doc = decode(data)
    declared = doc.get("mediaType")
    header = mt.essence(content_type)
    if isinstance(declared, str) and declared:
        media_type = declared
    elif header in mt.MANIFESTS:
        media_type = header
    else:
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    artifact_type = doc.get("artifactType")
    return ManifestDocument(
        media_type=media_type,
        config=Descriptor.read(doc.get("config")),
        layers=_read_list(doc.get("layers")),
        manifests=_read_list(doc.get("manifests")),
        blobs=_read_list(doc.get("blobs")),
        subject=Descriptor.read(doc.get("subject")),
        artifact_type=artifact_type if isinstance(artifact_type, str) else "",
        annotations=annotations_of(doc),
    )


def _read_list(raw: Any) -> tuple[Descriptor, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(d for d in (Descriptor.read(item) for item in raw) if d is not None)
