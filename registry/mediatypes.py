"""Re-exports of `nimbus.oci.mediatypes` for older imports; new code imports that module."""

from __future__ import annotations

from nimbus.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    IMAGE_MANIFESTS,
    INDEXES,
    JSON,
    MANIFESTS,
    NON_DISTRIBUTABLE_PREFIXES,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    OCTET_STREAM,
    SCHEMA1,
)

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "IMAGE_MANIFESTS",
    "INDEXES",
    "JSON",
    "MANIFESTS",
    "NON_DISTRIBUTABLE_PREFIXES",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "OCTET_STREAM",
    "SCHEMA1",
]
