"""TLS for Nimbus as a client: a context verifying a server (the system's CAs or a private CA's
bundle) that can present a client certificate to a server asking for one (mTLS).

Certificates and keys come as PEM text (they are kept with a webhook or a peer, so replicas
running anywhere have them), checked when they are set so a bad pair is refused by name instead
of failing handshakes later.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import weakref
from typing import Any


def client_pair_problems(cert_pem: str, key_pem: str, cert_field: str, key_field: str) -> list[str]:
    """What is wrong with a client certificate (PEM, leaf first, with its chain) and its key
    (unencrypted PEM), each problem prefixed with the name of its field; [] when both are
    unset or they are a matching pair."""
    if not cert_pem and not key_pem:
        return []
    # Imported when a pair is checked: every OCI client imports this module, and cryptography
    # adds about 10 MiB to a registry that never sees a client certificate.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not cert_pem:
        return [f"{cert_field}: required with {key_field}"]
    if not key_pem:
        return [f"{key_field}: required with {cert_field}"]
    found: list[str] = []
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        certs = []
    if not certs:
        found.append(f"{cert_field}: no PEM certificate in it")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        found.append(f"{key_field}: not an unencrypted PEM private key ({exc})")
        return found
    if certs:
        der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(der, spki) != certs[0].public_key().public_bytes(
            der, spki
        ):
            found.append(f"{key_field}: does not match the certificate in {cert_field}")
    return found


def certificate_subject(cert_pem: str) -> str:
    """The subject of a PEM chain's first certificate (RFC 4514); "" when there is none."""
    if not cert_pem:
        return ""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(cert_pem.encode())[0].subject.rfc4514_string()
    except (ValueError, IndexError):
        return ""


def client_context(
    ca_pem: str = "", cert_pem: str = "", key_pem: str = "", verify: bool = True
) -> ssl.SSLContext:
    """A client context: the server verified by `ca_pem` (the system's CAs when empty), and the
    client certificate presented when the server asks, if one is given. `verify=False` is only
    for a peer explicitly set `tls_insecure`."""
    context = ssl.create_default_context(cadata=ca_pem or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_pem:
        _load_pair(context, cert_pem, key_pem)
    else:
        _watch_certificate_requests(context)
    return context


# Per context without a client certificate: the servers (by the name they were reached by) that
# asked for one in a handshake. A server refusing to go on without one may close the connection
# without a TLS alert (an asyncio server does), which the client sees as a bare disconnect; this
# lets the client say what happened instead.
_CERTIFICATE_REQUEST = 13  # the handshake message type (RFC 8446, 4.3.2)
_ASKED: weakref.WeakKeyDictionary[ssl.SSLContext, set[str]] = weakref.WeakKeyDictionary()


def _watch_certificate_requests(context: ssl.SSLContext) -> None:
    asked = _ASKED.setdefault(context, set())

    def message(
        conn: Any, direction: str, version: Any, kind: Any, msg_type: Any, data: Any
    ) -> None:
        if direction == "read" and msg_type == _CERTIFICATE_REQUEST:
            asked.add(str(getattr(conn, "server_hostname", "") or ""))

    # The ssl module's message callback: the one way it shows which handshake messages came.
    context._msg_callback = message  # type: ignore[attr-defined]


def asked_for_a_client_certificate(context: object, host: str) -> bool:
    """True when `host` asked for a client certificate over `context` (one without any)."""
    return isinstance(context, ssl.SSLContext) and host in _ASKED.get(context, ())


def _load_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # The ssl module loads a certificate and key from files only: both go into one file readable
    # by this process alone, in a directory of its own, removed as soon as they are loaded.
    with tempfile.TemporaryDirectory(prefix="nimbus-tls-") as directory:
        path = os.path.join(directory, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(cert_pem.rstrip("\n") + "\n" + key_pem)
        context.load_cert_chain(path)
