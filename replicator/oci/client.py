"""An async OCI Distribution client over aiohttp.

Covers what copying images between registries needs: blobs (HEAD, streamed GET, monolithic and
chunked uploads, cross-repository mount), manifests by tag or digest with every manifest media
type accepted, tag and catalog listing with pagination, the referrers API with the fallback tag
schema (`sha256-<hex>`) for registries without it, and deletes. Bodies are streamed: an upload
takes an async iterator of bytes and a download hands back the open response.
"""

from __future__ import annotations

import copy
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from registry import mediatypes as mt
from replicator.oci.auth import Authenticator, Credentials
from replicator.oci.errors import DigestMismatchError, RegistryError, retry_after_seconds

MANIFEST_ACCEPT = ", ".join(
    [mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.JSON]
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
PAGE_SIZE = 1000

Body = bytes | AsyncIterator[bytes] | None


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    data: bytes

    def json(self) -> dict[str, Any]:
        doc = json.loads(self.data)
        if not isinstance(doc, dict):
            raise ValueError("manifest is not a JSON object")
        return doc


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class PushedManifest:
    digest: str
    # The registry's OCI-Subject answer: set when it indexed the referrer itself.
    subject: str | None


def referrers_tag(digest: str) -> str:
    """The fallback tag schema: `sha256:abc...` is indexed under tag `sha256-abc...`."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}"[:128]


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def ssl_context(verify: bool = True, ca_file: str = "") -> ssl.SSLContext | bool:
    """What aiohttp takes for `ssl=`: the default checks, a private CA, or none at all."""
    if not verify:
        return False
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True


class RegistryClient:
    """One registry, one connection pool; safe to share between concurrent tasks."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        ssl: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = Authenticator(credentials)
        self.headers = dict(headers or {})
        self._ssl = ssl
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._has_referrers_api: bool | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                auto_decompress=False,
                skip_auto_headers=("Content-Type",),
            )
        return self._session

    def with_headers(self, headers: Mapping[str, str]) -> RegistryClient:
        """The same registry, pool and tokens, sending ``headers`` on every request too."""
        self.session  # noqa: B018 -- open the pool now so the copy shares it
        view = copy.copy(self)
        view.headers = {**self.headers, **headers}
        return view

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str, params: Mapping[str, str] | None = None) -> URL:
        """Absolute URL of a path, or of a Location the registry gave (kept as it was encoded)."""
        raw = path if path.startswith(("http://", "https://")) else self.base_url + path
        if params:
            # Appended by hand: re-encoding a registry's opaque `_state` query would corrupt it.
            raw += ("&" if "?" in raw else "?") + urlencode(params)
        return URL(raw, encoded=True)

    # -- the one request path ------------------------------------------------------------

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Body = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send with auth, answer one 401 challenge, and raise on any status not expected.

        A streamed body cannot be sent twice, so the 401 retry only happens for bytes bodies;
        callers open an authorized session with a body-less request first (upload POST).
        """
        url = self.url(path, params)
        replayable = data is None or isinstance(data, bytes)
        for attempt in (1, 2):
            sent = {**self.headers, **(headers or {})}
            authorization = await self.auth.prepare(self.session, scope)
            if authorization:
                sent["Authorization"] = authorization
            response = await self.session.request(method, url, headers=sent, data=data)
            try:
                if response.status == 401 and attempt == 1 and replayable:
                    challenge = response.headers.get("WWW-Authenticate", "")
                    if challenge and await self.auth.answer(self.session, challenge, scope):
                        response.release()
                        continue
                if response.status not in ok and response.status not in allow:
                    raise await _error(response)
                yield response
                return
            finally:
                response.release()

    async def ping(self) -> None:
        async with self.request("GET", "/v2/", scope=""):
            pass

    # -- blobs --------------------------------------------------------------------------

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """The blob's size when the repository has it, else None."""
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.request(
            "HEAD", path, scope=_scope(repository, "pull"), allow=(404,)
        ) as response:
            if response.status == 404:
                return None
            return int(response.headers.get("Content-Length", "0"))

    @asynccontextmanager
    async def open_blob(
        self, repository: str, digest: str, offset: int = 0
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The blob's response, body unread: stream it with `response.content`."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.request(
            "GET", path, scope=_scope(repository, "pull"), ok=(200, 206), headers=headers
        ) as response:
            yield response

    async def get_blob(
        self, repository: str, digest: str, limit: int = MAX_MANIFEST_BYTES
    ) -> bytes:
        """A small blob (a config) read whole and checked against its digest."""
        async with self.open_blob(repository, digest) as response:
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    raise ValueError(f"blob {digest} is larger than {limit} bytes")
        actual = digest_of(bytes(data), digest.partition(":")[0])
        if actual != digest:
            raise DigestMismatchError(digest, actual, f"{repository}@{digest}")
        return bytes(data)

    async def mount_blob(self, repository: str, digest: str, source: str) -> str | None:
        """Cross-repository mount; None when mounted, else the upload session it opened."""
        path = f"/v2/{repository}/blobs/uploads/"
        params = {"mount": digest, "from": source}
        scope = f"{_scope(repository, 'pull', 'push')} {_scope(source, 'pull')}"
        async with self.request(
            "POST", path, scope=scope, ok=(201, 202), params=params
        ) as response:
            if response.status == 201:
                return None
            return self._location(response)

    async def start_upload(self, repository: str) -> str:
        path = f"/v2/{repository}/blobs/uploads/"
        async with self.request(
            "POST", path, scope=_scope(repository, "pull", "push"), ok=(202,)
        ) as response:
            return self._location(response)

    async def upload_chunk(
        self, repository: str, location: str, body: Body, offset: int, length: int
    ) -> str:
        """PATCH one chunk at ``offset``; returns the session's next location."""
        headers = {
            "Content-Type": mt.OCTET_STREAM,
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        async with self.request(
            "PATCH",
            location,
            scope=_scope(repository, "pull", "push"),
            ok=(202, 204),
            headers=headers,
            data=body,
        ) as response:
            return self._location(response)

    async def finish_upload(
        self, repository: str, location: str, digest: str, body: Body = None, length: int = 0
    ) -> None:
        headers = {"Content-Type": mt.OCTET_STREAM, "Content-Length": str(length)}
        async with self.request(
            "PUT",
            location,
            scope=_scope(repository, "pull", "push"),
            ok=(201, 204),
            headers=headers,
            params={"digest": digest},
            data=body if body is not None else b"",
        ):
            pass

    async def upload_offset(self, repository: str, location: str) -> int:
        """How many bytes the session holds (from its Range header)."""
        async with self.request(
            "GET", location, scope=_scope(repository, "pull", "push"), ok=(204, 200)
        ) as response:
            raw = response.headers.get("Range", "")
        _, _, end = raw.partition("-")
        return int(end) + 1 if end.isdigit() else 0

    async def cancel_upload(self, repository: str, location: str) -> None:
        async with self.request(
            "DELETE",
            location,
            scope=_scope(repository, "pull", "push"),
            ok=(204, 200, 202),
            allow=(404,),
        ):
            pass

    async def push_blob(self, repository: str, data: bytes) -> str:
        """Upload small content whole (POST, then PUT with the body); returns its digest."""
        digest = digest_of(data)
        if await self.blob_size(repository, digest) is not None:
            return digest
        location = await self.start_upload(repository)
        await self.finish_upload(repository, location, digest, data, len(data))
        return digest

    async def delete_blob(self, repository: str, digest: str) -> bool:
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.request(
            "DELETE", path, scope=_scope(repository, "delete"), ok=(202, 200), allow=(404,)
        ) as response:
            return response.status != 404

    def _location(self, response: aiohttp.ClientResponse) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                502, response.method, str(response.url), message="no Location header"
            )
        # Relative locations are relative to the request, as HTTP says.
        return str(response.url.join(URL(location, encoded=True)))

    # -- manifests ----------------------------------------------------------------------

    async def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.request(
            "HEAD",
            path,
            scope=_scope(repository, "pull"),
            allow=(404,),
            headers={"Accept": MANIFEST_ACCEPT},
        ) as response:
            if response.status == 404:
                return None
            digest = response.headers.get("Docker-Content-Digest", "")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            size = int(response.headers.get("Content-Length", "0"))
        if not digest:
            # Some registries omit the digest on HEAD: ask for the body.
            manifest = await self.get_manifest(repository, reference)
            if manifest is None:
                return None
            return ManifestHead(manifest.digest, manifest.media_type, len(manifest.data))
        return ManifestHead(digest, media_type, size)

    async def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest, checked against its digest; None when unknown."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.request(
            "GET",
            path,
            scope=_scope(repository, "pull"),
            allow=(404,),
            headers={"Accept": MANIFEST_ACCEPT},
        ) as response:
            if response.status == 404:
                return None
            data = await response.content.read(MAX_MANIFEST_BYTES + 1)
            if len(data) > MAX_MANIFEST_BYTES:
                raise ValueError(f"manifest {repository}:{reference} exceeds 4 MiB")
            header_digest = response.headers.get("Docker-Content-Digest", "")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        algorithm = "sha256"
        expected = reference if ":" in reference else header_digest
        if expected:
            algorithm = expected.partition(":")[0]
        actual = digest_of(data, algorithm)
        if expected and actual != expected:
            raise DigestMismatchError(expected, actual, f"{repository}:{reference}")
        media_type = _manifest_media_type(data, content_type)
        return Manifest(actual, media_type, data)

    async def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> PushedManifest:
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.request(
            "PUT",
            path,
            scope=_scope(repository, "pull", "push"),
            ok=(201, 200, 202),
            headers={"Content-Type": media_type},
            data=data,
        ) as response:
            digest = response.headers.get("Docker-Content-Digest") or digest_of(data)
            subject = response.headers.get("OCI-Subject")
        return PushedManifest(digest, subject)

    async def delete_manifest(self, repository: str, reference: str) -> bool:
        """False when there was nothing to delete."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.request(
            "DELETE", path, scope=_scope(repository, "delete"), ok=(202, 200), allow=(404,)
        ) as response:
            return response.status != 404

    # -- listing ------------------------------------------------------------------------

    async def list_tags(self, repository: str) -> list[str]:
        tags: list[str] = []
        async for page in self._pages(
            f"/v2/{repository}/tags/list", _scope(repository, "pull"), "tags"
        ):
            tags.extend(page)
        return tags

    async def catalog(self) -> list[str]:
        names: list[str] = []
        async for page in self._pages("/v2/_catalog", "registry:catalog:*", "repositories"):
            names.extend(page)
        return names

    async def _pages(self, path: str, scope: str, key: str) -> AsyncIterator[list[str]]:
        """Follow `Link: <...>; rel="next"` pagination."""
        next_path: str | None = path
        params: dict[str, str] | None = {"n": str(PAGE_SIZE)}
        while next_path:
            async with self.request(
                "GET", next_path, scope=scope, allow=(404,), params=params
            ) as response:
                if response.status == 404:
                    return
                body = await response.json(content_type=None)
                link = response.headers.get("Link", "")
            items = body.get(key) or [] if isinstance(body, dict) else []
            yield [str(item) for item in items]
            next_path = _next_link(link)
            params = None

    # -- referrers ----------------------------------------------------------------------

    async def referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is ``digest``.

        Uses the referrers API where the registry has it, else the tag schema index.
        """
        if self._has_referrers_api is not False:
            path = f"/v2/{repository}/referrers/{digest}"
            params = {"artifactType": artifact_type} if artifact_type else None
            async with self.request(
                "GET",
                path,
                scope=_scope(repository, "pull"),
                allow=(404, 400, 405),
                params=params,
                headers={"Accept": mt.OCI_INDEX},
            ) as response:
                content_type = response.headers.get("Content-Type", "")
                if response.status == 200 and mt.OCI_INDEX in content_type:
                    self._has_referrers_api = True
                    body = await response.json(content_type=None)
                    return _filter(body.get("manifests") or [], artifact_type)
                if self._has_referrers_api is None:
                    self._has_referrers_api = False
        index = await self.get_manifest(repository, referrers_tag(digest))
        if index is None:
            return []
        return _filter(index.json().get("manifests") or [], artifact_type)

    async def index_referrer(
        self, repository: str, subject: str, descriptor: dict[str, Any]
    ) -> None:
        """Add a referrer to the subject's tag schema index (for registries without the API)."""
        tag = referrers_tag(subject)
        current = await self.get_manifest(repository, tag)
        doc: dict[str, Any] = (
            current.json()
            if current is not None
            else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        )
        manifests = doc.setdefault("manifests", [])
        if any(m.get("digest") == descriptor["digest"] for m in manifests):
            return
        manifests.append(descriptor)
        await self.put_manifest(
            repository, tag, json.dumps(doc, separators=(",", ":")).encode(), mt.OCI_INDEX
        )


def _filter(items: list[Any], artifact_type: str | None) -> list[dict[str, Any]]:
    found = [item for item in items if isinstance(item, dict)]
    if artifact_type:
        found = [item for item in found if item.get("artifactType") == artifact_type]
    return found


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        target, _, rest = part.partition(";")
        if 'rel="next"' in rest.replace(" ", "") or "rel=next" in rest.replace(" ", ""):
            return target.strip().strip("<>")
    return None


def _manifest_media_type(data: bytes, content_type: str) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return content_type
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    if content_type in mt.MANIFESTS:
        return content_type
    return mt.OCI_INDEX if isinstance(doc, dict) and "manifests" in doc else mt.OCI_MANIFEST


async def _error(response: aiohttp.ClientResponse) -> RegistryError:
    code, message = "", ""
    if response.method != "HEAD":
        try:
            body = json.loads(await response.content.read(65536))
            first = (body.get("errors") or [{}])[0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
        except (ValueError, AttributeError, IndexError, aiohttp.ClientError):
            pass
    return RegistryError(
        response.status,
        response.method,
        str(response.url),
        code,
        message,
        retry_after_seconds(response.headers.get("Retry-After")),
    )
