"""Bearer tokens of the Docker distribution token specification: JWTs signed with ES256.

The built-in issuer signs with an EC P-256 key, generated at first start (0600, beside a
self-signed certificate so that other registries can trust its tokens) or configured. The `kid`
header is the key's libtrust fingerprint, which CNCF Distribution uses to find a key in its
certificate bundle. Tokens of an external issuer are checked against its certificates or JWKS.

Every token check insists on the signature, `exp`, `iss` and `aud`; the algorithm comes from
our list, never from the token (so `alg: none` and HMAC-with-the-public-key are refused).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.auth.scopes import ResourceAccess

SIGNING_ALGORITHM = "ES256"
# What an external issuer may sign with; each key only verifies its own family.
EXTERNAL_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "EdDSA")
# Clock skew tolerated between issuer and registry.
LEEWAY_SECONDS = 10
_REFRESH_CLAIM = "nimbus_refresh"
# Seconds allowed to fetch an external issuer's keys from a URL.
FETCH_TIMEOUT = 10.0
_MAX_ACCESS_ENTRIES = 256

PublicKey = Any  # a cryptography public key object accepted by PyJWT


class TokenError(Exception):
    """A token that must be refused. The message never contains the token."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    access: tuple[ResourceAccess, ...]

    def covers(self, need: ResourceAccess) -> bool:
        return any(grant.covers(need) for grant in self.access)

    def mentions(self, need: ResourceAccess) -> bool:
        """Whether the issuer considered this resource at all (and granted less)."""
        return any((g.type, g.name) == (need.type, need.name) for g in self.access)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: PublicKey
    kid: str | None = None


def libtrust_kid(public_key: PublicKey) -> str:
    """The key id Distribution's libtrust derives: base32 of 240 bits of SHA-256 of the SPKI."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` unless it exists; atomic against concurrent starts."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def self_signed_certificate(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ec_key(data: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TokenError(f"token key {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TokenError(f"token key {path}: must be an EC P-256 key (ES256)")
    return key


def load_or_create_key(
    path: Path, create: bool, issuer: str = "nimbus"
) -> ec.EllipticCurvePrivateKey:
    """The signing key at ``path``; with ``create``, made (with a certificate) on first start.

    Concurrent first starts (several workers) agree on one key: the first link wins and the
    others read it. Blocking: call it in a thread.
    """
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(path, pem, 0o600)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenError(f"cannot read token key {path}: {exc.strerror}") from None
    key = _load_ec_key(data, path)
    certificate = path.with_suffix(".crt")
    if create and not certificate.exists():
        _write_new(certificate, self_signed_certificate(key, issuer), 0o644)
    return key


def keys_from_certificates(pem: bytes, source: str) -> list[VerificationKey]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TokenError(f"{source}: no PEM certificates") from None
    return [VerificationKey(c.public_key(), libtrust_kid(c.public_key())) for c in certs]


def keys_from_jwks(text: str, source: str) -> list[VerificationKey]:
    try:
        jwks = jwt.PyJWKSet.from_dict(json.loads(text))
    except (ValueError, jwt.exceptions.PyJWKError, jwt.exceptions.PyJWKSetError):
        raise TokenError(f"{source}: not a usable JWKS") from None
    return [VerificationKey(k.key, k.key_id) for k in jwks.keys]


async def read_key_source(location: str) -> bytes:
    """A certificate bundle or JWKS from a file or an http(s) URL."""
    if location.startswith(("http://", "https://")):
        client_timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.get(location) as response,
            ):
                if response.status != 200:
                    raise TokenError(f"{location}: answered {response.status}")
                return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenError(f"{location}: {exc.__class__.__name__}") from None
    try:
        return await asyncio.to_thread(Path(location).read_bytes)
    except OSError as exc:
        raise TokenError(f"cannot read {location}: {exc.strerror}") from None


def _now() -> int:
    return int(time.time())


class TokenIssuer:
    """Signs access tokens (and refresh tokens for OAuth2 clients) for one service."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        service: str,
        expiry: int,
        refresh_expiry: int,
        clock: Callable[[], int] = _now,
    ) -> None:
        self._key = key
        self.kid = libtrust_kid(key.public_key())
        self.issuer = issuer
        self.service = service
        self.expiry = expiry
        self.refresh_expiry = refresh_expiry
        self._clock = clock

    def verification_key(self) -> VerificationKey:
        return VerificationKey(self._key.public_key(), self.kid)

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._key, algorithm=SIGNING_ALGORITHM, headers={"kid": self.kid, "typ": "JWT"}
        )

    def issue(self, subject: str, access: Sequence[ResourceAccess]) -> IssuedToken:
        now = self._clock()
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expiry,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [a.claim() for a in access],
        }
        issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        return IssuedToken(
            self._sign(claims), self.expiry, issued_at.isoformat().replace("+00:00", "Z")
        )

    def issue_refresh(self, subject: str, fingerprint: str) -> str:
        now = self._clock()
        return self._sign(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": self.service,
                "exp": now + self.refresh_expiry,
                "iat": now,
                "jti": secrets.token_urlsafe(16),
                _REFRESH_CLAIM: fingerprint,
            }
        )

    def verify_refresh(self, token: str) -> tuple[str, str]:
        """The subject and password fingerprint a refresh token was issued for."""
        claims = _decode(
            token, [self.verification_key()], (SIGNING_ALGORITHM,), self.issuer, self.service
        )
        fingerprint = claims.get(_REFRESH_CLAIM)
        subject = claims.get("sub")
        if not isinstance(fingerprint, str) or not isinstance(subject, str) or not subject:
            raise TokenError("not a refresh token")
        return subject, fingerprint


def _decode(
    token: str,
    keys: Sequence[VerificationKey],
    algorithms: Sequence[str],
    issuer: str,
    audience: str,
) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.exceptions.DecodeError:
        raise TokenError("malformed token") from None
    if header.get("alg") not in algorithms:
        raise TokenError("token algorithm not accepted")
    kid = header.get("kid")
    candidates = [k for k in keys if kid is not None and k.kid == kid] or list(keys)
    last = "no key to verify the token"
    for candidate in candidates:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                candidate.key,
                algorithms=list(algorithms),
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
            return claims
        except jwt.exceptions.InvalidSignatureError:
            last = "token signature does not verify"
        except jwt.exceptions.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.exceptions.InvalidAudienceError:
            raise TokenError("token is for another service") from None
        except jwt.exceptions.InvalidIssuerError:
            raise TokenError("token is from another issuer") from None
        except jwt.exceptions.ImmatureSignatureError:
            raise TokenError("token not valid yet") from None
        except jwt.exceptions.InvalidKeyError:
            last = "token signed with another kind of key"
        except jwt.exceptions.InvalidTokenError as exc:
            raise TokenError(f"invalid token ({exc.__class__.__name__})") from None
    raise TokenError(last)


def _parse_access(raw: Any) -> tuple[ResourceAccess, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > _MAX_ACCESS_ENTRIES:
        raise TokenError("token access claim is malformed")
    entries: list[ResourceAccess] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise TokenError("token access claim is malformed")
        kind, name, actions = item.get("type"), item.get("name"), item.get("actions")
        if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(actions, list):
            raise TokenError("token access claim is malformed")
        if not all(isinstance(a, str) for a in actions):
            raise TokenError("token access claim is malformed")
        entries.append(ResourceAccess(kind, name, frozenset(actions)))
    return tuple(entries)


class TokenVerifier:
    """Checks access tokens for this registry: signature, expiry, issuer, audience, claims.

    A client sends the same token with every request of a push or pull, so a verified token is
    remembered (by its hash) until it expires instead of checking its signature each time.
    """

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = (SIGNING_ALGORITHM,),
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = list(keys)
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self._verified: dict[bytes, tuple[float, TokenClaims]] = {}
        self._cache_size = cache_size
        self._clock = clock

    @property
    def keys(self) -> list[VerificationKey]:
        return self._keys

    @keys.setter
    def keys(self, keys: Sequence[VerificationKey]) -> None:
        # New keys (a rotation): what the old ones verified is checked again.
        self._keys = list(keys)
        self._verified.clear()

    def verify(self, token: str) -> TokenClaims:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(key)
        if cached is not None:
            if cached[0] > self._clock():
                return cached[1]
            del self._verified[key]
        claims = _decode(token, self._keys, self.algorithms, self.issuer, self.audience)
        if _REFRESH_CLAIM in claims:
            # A refresh token only buys access tokens at the token endpoint.
            raise TokenError("a refresh token is not an access token")
        subject = claims.get("sub", "")
        if not isinstance(subject, str):
            raise TokenError("token subject is malformed")
        verified = TokenClaims(subject, _parse_access(claims.get("access")))
        self._remember(key, float(claims["exp"]), verified)
        return verified

    def _remember(self, key: bytes, expires: float, claims: TokenClaims) -> None:
        if len(self._verified) >= self._cache_size:
            now = self._clock()
            for stale in [k for k, (exp, _) in self._verified.items() if exp <= now]:
                del self._verified[stale]
            while len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]
        self._verified[key] = (expires, claims)
