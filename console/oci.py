"""OCI API clients as a signed-in identity: the user's own credentials, so the registry itself
decides what they may read; the console's configured ones for the operator; none anonymously.

Clients are kept per identity (a bounded cache of connection pools and tokens), never stored.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import aiohttp

from console.config import ConsoleConfig
from console.sessions import Session
from nimbus.oci.client import RegistryClient
from nimbus.oci.errors import RegistryError
from nimbus.oci.transport import Credentials, ssl_context

MAX_CLIENTS = 64


class LoginFailed(Exception):
    """The registry refused the credentials (the message is safe to show)."""


class RegistryClients:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        https = config.registry_url.startswith("https")
        self._ssl = ssl_context(True, config.tls_ca) if https else True
        self._clients: OrderedDict[str, RegistryClient] = OrderedDict()

    def _credentials(self, session: Session) -> Credentials | None:
        if session.user:
            return Credentials(session.user, session.password)
        if session.admin and self.config.registry_username:
            return Credentials(self.config.registry_username, self.config.registry_password)
        return None

    async def for_session(self, session: Session) -> RegistryClient:
        credentials = self._credentials(session)
        key = (
            ""
            if credentials is None
            else hashlib.sha256(
                f"{credentials.username}\0{credentials.password}".encode()
            ).hexdigest()
        )
        client = self._clients.get(key)
        if client is None:
            client = RegistryClient(self.config.registry_url, credentials, ssl=self._ssl)
            self._clients[key] = client
            while len(self._clients) > MAX_CLIENTS:
                _, old = self._clients.popitem(last=False)
                await old.close()
        self._clients.move_to_end(key)
        return client

    async def requires_login(self) -> bool:
        """Whether the registry has authentication: /v2/ refuses an anonymous caller."""
        client = await self.for_session(Session())
        async with client.transport.session.get(f"{client.base_url}/v2/") as response:
            return response.status == 401

    async def check_login(self, user: str, password: str) -> None:
        """Raises LoginFailed unless the registry accepts these credentials."""
        client = RegistryClient(
            self.config.registry_url, Credentials(user, password), ssl=self._ssl
        )
        try:
            await client.ping()
        except RegistryError as error:
            if error.status == 429:
                raise LoginFailed("too many failed sign-ins; try again later") from None
            raise LoginFailed("invalid username or password") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise LoginFailed(f"the registry did not answer: {type(error).__name__}") from None
        finally:
            await client.close()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
