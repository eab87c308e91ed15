"""Re-exports of `nimbus.oci.client` for older imports; new code imports that module."""

from __future__ import annotations

from nimbus.oci.client import Manifest, ManifestHead, PushedManifest, RegistryClient
from nimbus.oci.referrers import referrers_tag
from nimbus.oci.transport import ssl_context

__all__ = [
    "Manifest",
    "ManifestHead",
    "PushedManifest",
    "RegistryClient",
    "referrers_tag",
    "ssl_context",
]
