"""Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature`.

The signed content is `<id>.<timestamp>.<body>`; each signature is `v1,<base64 HMAC-SHA256>`,
and several secrets (during a rotation) give several space-separated signatures, any of which
verifies. Secrets are `whsec_<base64 key>`, as the specification's libraries expect.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets as random_secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
# The specification's libraries accept keys of 24 to 64 bytes.
_MIN_KEY, _MAX_KEY = 24, 64


class InvalidSecret(ValueError):
    """A secret that is not `whsec_` followed by the base64 of a 24 to 64 byte key."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


@functools.lru_cache(maxsize=1024)
def secret_key(secret: str) -> bytes:
    """The key of a secret; remembered, as every attempt of every delivery signs with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(f"a secret is {SECRET_PREFIX!r} followed by base64") from None
    if not _MIN_KEY <= len(key) <= _MAX_KEY:
        raise InvalidSecret(f"a secret's key is {_MIN_KEY} to {_MAX_KEY} bytes, not {len(key)}")
    return key


def signature(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(secret_key(s), signed, hashlib.sha256)).decode()
        for s in secrets
    )


def signed_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The three headers of one attempt (the timestamp, so the signature, is per attempt)."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(msg_id, timestamp, body, secrets),
    }
