"""Re-exports of `nimbus.oci.errors` for older imports; new code imports that module."""

from __future__ import annotations

from nimbus.oci.errors import DigestMismatchError, RegistryError, SizeMismatchError, is_transient
from nimbus.oci.headers import retry_after_seconds

__all__ = [
    "DigestMismatchError",
    "RegistryError",
    "SizeMismatchError",
    "is_transient",
    "retry_after_seconds",
]
