"""Who is calling and what they may do: logins, tokens, access rules and their verdicts.

Two modes, as in `registry:2`: Basic (credentials on every request, checked against htpasswd)
and token (a Bearer JWT from the built-in token endpoint or an external issuer). In both modes
the access rules' anonymous grants apply to requests without credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from nimbus.config import ConfigError
from registry.auth.access import AccessConfigError, AccessPolicy
from registry.auth.htpasswd import Htpasswd, HtpasswdError
from registry.auth.ratelimit import FailedLoginLimiter
from registry.auth.scopes import (
    CATALOG,
    CATALOG_ACCESS,
    PULL,
    REGISTRY,
    REPOSITORY,
    REPOSITORY_ACTIONS,
    WILDCARD,
    ResourceAccess,
    RouteAccess,
)
from registry.auth.tokens import (
    EXTERNAL_ALGORITHMS,
    IssuedToken,
    TokenClaims,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    VerificationKey,
    keys_from_certificates,
    keys_from_jwks,
    load_or_create_key,
    read_key_source,
)
from registry.errors import OCIError
from registry.reference import validate_name

if TYPE_CHECKING:
    from registry.config import AuthConfig

log = logging.getLogger("nimbus.auth")

KEY_DIR = "auth"
KEY_FILE = "token.key"


class Mode(Enum):
    BASIC = "basic"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller: a user name ("" for anonymous) and, in token mode, the token's claims."""

    name: str = ""
    token: TokenClaims | None = None

    @property
    def anonymous(self) -> bool:
        return not self.name

    @property
    def presented(self) -> bool:
        """Logged in, or holding a valid (possibly anonymous) token: enough for `GET /v2/`."""
        return bool(self.name) or self.token is not None


ANONYMOUS = Identity()


class Verdict(Enum):
    ALLOW = "allow"
    CHALLENGE = "challenge"  # 401: log in (or fetch a token)
    INSUFFICIENT_SCOPE = "insufficient_scope"  # 401: fetch a token with the scope shown
    DENY = "deny"  # 403: known caller, not allowed


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    # False when a cross-repository mount's source may not be pulled: upload without mounting.
    mount_allowed: bool = True
    # For the catalog: which repositories to show (None: all).
    visible: Callable[[str], bool] | None = None


class LoginRefused(Exception):
    """Wrong credentials (the message never says which part was wrong)."""


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after}s")
        self.retry_after = retry_after


class AuthService:
    def __init__(
        self,
        mode: Mode,
        policy: AccessPolicy,
        users: Htpasswd | None,
        limiter: FailedLoginLimiter,
        issuer: TokenIssuer | None = None,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.mode = mode
        self.policy = policy
        self.users = users
        self.limiter = limiter
        self.issuer = issuer
        self.verifier = verifier

    @classmethod
    async def build(cls, config: AuthConfig, data_dir: str) -> AuthService:
        """Load users, rules and keys; every problem becomes a ConfigError naming the setting."""
        try:
            policy = AccessPolicy.from_config(config.access, config.groups)
            users = await Htpasswd.load(config.htpasswd) if config.htpasswd else None
            limiter = FailedLoginLimiter(config.login_attempts, config.login_window)
            token = config.token
            if not token.active:
                return cls(Mode.BASIC, policy, users, limiter)
            if token.external:
                keys = await load_external_keys(token.certificate, token.jwks)
                verifier = TokenVerifier(keys, token.issuer, token.service, EXTERNAL_ALGORITHMS)
                return cls(Mode.TOKEN, policy, users, limiter, None, verifier)
            key_path = Path(token.key) if token.key else Path(data_dir) / KEY_DIR / KEY_FILE
            key = await asyncio.to_thread(load_or_create_key, key_path, not token.key, token.issuer)
            issuer = TokenIssuer(
                key, token.issuer, token.service, token.expiry, token.refresh_expiry
            )
            verifier = TokenVerifier([issuer.verification_key()], token.issuer, token.service)
            return cls(Mode.TOKEN, policy, users, limiter, issuer, verifier)
        except (AccessConfigError, HtpasswdError, TokenError) as exc:
            raise ConfigError(str(exc)) from None

    # -- who is calling ------------------------------------------------------------------

    def _throttle(self, client: str) -> None:
        retry = self.limiter.retry_after(client)
        if retry is not None:
            raise LoginThrottled(retry)

    def _refuse(self, client: str, user: str, why: str) -> LoginRefused:
        self.limiter.failed(client)
        log.warning("login refused", extra={"user": user[:128], "remote": client, "why": why})
        return LoginRefused("invalid username or password")

    async def login(self, user: str, password: str, client: str) -> Identity:
        """Check a user's password; raises LoginThrottled or LoginRefused."""
        self._throttle(client)
        if self.users is None or not await self.users.verify(user, password):
            raise self._refuse(client, user, "password")
        return Identity(user)

    def bearer(self, token: str) -> Identity:
        """The identity an access token carries; raises TokenError when it must be refused."""
        if self.verifier is None:
            raise TokenError("bearer tokens are not accepted here")
        claims = self.verifier.verify(token)
        return Identity(claims.subject, claims)

    async def refresh(self, refresh_token: str, client: str) -> Identity:
        """The user a refresh token stands for, while their htpasswd entry is unchanged."""
        self._throttle(client)
        if self.issuer is None or self.users is None:
            raise self._refuse(client, "", "refresh token")
        try:
            subject, fingerprint = self.issuer.verify_refresh(refresh_token)
        except TokenError as exc:
            raise self._refuse(client, "", str(exc)) from None
        current = self.users.fingerprint(subject)
        if current is None or not hmac.compare_digest(current, fingerprint):
            raise self._refuse(client, subject, "refresh token of an old password")
        return Identity(subject)

    # -- what they may do ----------------------------------------------------------------

    def _permits(self, identity: Identity, need: ResourceAccess) -> bool:
        if identity.token is not None:
            return identity.token.covers(need)
        if need.type != REPOSITORY:
            return False
        return self.policy.permits(identity.name or None, need.name, need.actions)

    def _refusal(self, identity: Identity, missing: Sequence[ResourceAccess]) -> Verdict:
        if identity.anonymous:
            return Verdict.CHALLENGE
        if identity.token is None:
            return Verdict.DENY
        if self.issuer is not None:
            # Our own tokens: a fresh token helps only if the rules would grant the action.
            could = all(
                n.type == REPOSITORY and self.policy.permits(identity.name, n.name, n.actions)
                for n in missing
            )
            return Verdict.INSUFFICIENT_SCOPE if could else Verdict.DENY
        # An external issuer that already answered for this resource has said no.
        if any(identity.token.mentions(n) for n in missing):
            return Verdict.DENY
        return Verdict.INSUFFICIENT_SCOPE

    def decide(self, identity: Identity, route: RouteAccess) -> Decision:
        if route.public:
            return Decision(Verdict.ALLOW)
        if route.catalog:
            return self._decide_catalog(identity)
        if not route.needs:
            return Decision(Verdict.ALLOW if identity.presented else Verdict.CHALLENGE)
        missing = [need for need in route.needs if not self._permits(identity, need)]
        if missing:
            return Decision(self._refusal(identity, missing))
        mount_allowed = route.mount_source is None or self._permits(
            identity, ResourceAccess(REPOSITORY, route.mount_source, frozenset({PULL}))
        )
        return Decision(Verdict.ALLOW, mount_allowed=mount_allowed)

    def _decide_catalog(self, identity: Identity) -> Decision:
        if self.mode is Mode.TOKEN and self.issuer is None:
            # An external issuer decides who may list, and then sees everything.
            if identity.token is not None and identity.token.covers(CATALOG_ACCESS):
                return Decision(Verdict.ALLOW)
            return Decision(self._refusal(identity, [CATALOG_ACCESS]))
        if identity.anonymous and not self.policy.allows_anonymous:
            return Decision(Verdict.CHALLENGE)
        user = identity.name or None
        if user is not None and self.policy.open:
            return Decision(Verdict.ALLOW)
        policy = self.policy
        return Decision(Verdict.ALLOW, visible=lambda repo: PULL in policy.actions(user, repo))

    def grant(
        self, identity: Identity, requested: Sequence[ResourceAccess]
    ) -> list[ResourceAccess]:
        """The part of the requested access the rules allow (never more than was asked)."""
        user = identity.name or None
        granted: list[ResourceAccess] = []
        for ask in requested:
            if ask.type == REPOSITORY:
                try:
                    validate_name(ask.name)
                except OCIError:
                    continue
                wanted = REPOSITORY_ACTIONS if WILDCARD in ask.actions else ask.actions
                actions = wanted & self.policy.actions(user, ask.name)
                # An entry with no actions still tells the registry the answer was "no".
                granted.append(ResourceAccess(REPOSITORY, ask.name, actions))
            elif (ask.type, ask.name) == (REGISTRY, CATALOG) and user is not None:
                granted.append(CATALOG_ACCESS)
        return granted

    def issue(self, identity: Identity, granted: Sequence[ResourceAccess]) -> IssuedToken:
        assert self.issuer is not None
        return self.issuer.issue(identity.name, granted)

    def refresh_token(self, identity: Identity) -> str | None:
        """A long-lived token for OAuth2 clients, valid until the user's password changes."""
        if self.issuer is None or self.users is None or identity.anonymous:
            return None
        fingerprint = self.users.fingerprint(identity.name)
        return self.issuer.issue_refresh(identity.name, fingerprint) if fingerprint else None


async def load_external_keys(certificate: str, jwks: str) -> list[VerificationKey]:
    if certificate:
        return keys_from_certificates(await read_key_source(certificate), certificate)
    return keys_from_jwks((await read_key_source(jwks)).decode(), jwks)


async def refresh_external_keys(service: AuthService, certificate: str, jwks: str) -> None:
    """Re-read an external issuer's keys (it may rotate them); keep the old ones on failure."""
    if service.verifier is None:
        return
    with contextlib.suppress(TokenError):
        service.verifier.keys = await load_external_keys(certificate, jwks)
