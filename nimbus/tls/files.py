"""A certificate and key on disk, checked before a server uses them: each problem is named with
its file, so a bad file stops the start with a message instead of a handshake failure later."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nimbus.config import ConfigError

if TYPE_CHECKING:
    from cryptography import x509


class CertificateError(ConfigError):
    """A certificate, key or CA file that cannot be served; the message names the file."""


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator checks of the certificate in use (e.g. after a rotation)."""

    subject: str
    serial: int
    not_after: datetime.datetime


def _read(path: str, what: str) -> bytes:
    if not path:
        raise CertificateError(f"{what}: no file given")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise CertificateError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def _certificates(path: str, what: str) -> list[x509.Certificate]:
    # cryptography is loaded only when a file is checked: a registry without TLS imports the
    # settings of this package but should not carry cryptography's 10 MiB.
    from cryptography import x509

    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise CertificateError(f"{what} {path}: no PEM certificate in it")
    return certs


def check_pair(
    cert_path: str, key_path: str, now: datetime.datetime | None = None
) -> CertificateInfo:
    """The chain's first certificate is valid now and the key is its key."""
    from cryptography.hazmat.primitives import serialization

    leaf = _certificates(cert_path, "TLS certificate")[0]
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        raise CertificateError(
            f"TLS certificate {cert_path}: expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if leaf.not_valid_before_utc > now:
        raise CertificateError(
            f"TLS certificate {cert_path}: not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    data = _read(key_path, "TLS key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(
            f"TLS key {key_path}: not an unencrypted PEM private key ({exc})"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(der, public):
        raise CertificateError(f"TLS key {key_path}: does not match the certificate in {cert_path}")
    return CertificateInfo(
        leaf.subject.rfc4514_string(), leaf.serial_number, leaf.not_valid_after_utc
    )


def check_ca_bundle(path: str, what: str = "TLS client CA") -> None:
    _certificates(path, what)
