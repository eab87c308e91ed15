"""Re-exports of `nimbus.oci.transport` for older imports; new code imports that module."""

from __future__ import annotations

from nimbus.oci.transport import Authenticator, Challenge, Credentials, parse_www_authenticate

__all__ = ["Authenticator", "Challenge", "Credentials", "parse_www_authenticate"]
