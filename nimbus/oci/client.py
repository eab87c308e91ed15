"""The calls of the OCI Distribution API, for any registry (Nimbus, Distribution, others).

Blobs (HEAD, streamed GET, monolithic and chunked uploads, cross-repository mount), manifests by
tag or digest with every manifest media type accepted, tag and catalog listing with pagination,
the referrers API with the fallback tag schema for registries without it, and deletes. Bodies
are streamed: an upload takes an async iterator of bytes and a download hands back the open
response. Sessions, authentication and errors are the `Transport`'s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from nimbus.oci import mediatypes as mt
from nimbus.oci.digests import algorithm_of, hash_bytes
from nimbus.oci.documents import (
    LARGE_DOCUMENT_BYTES,
    Descriptor,
    InvalidManifestError,
    ManifestDocument,
    parse_manifest,
    read_manifest,
)
from nimbus.oci.errors import DigestMismatchError
from nimbus.oci.headers import CONTENT_DIGEST_HEADER, SUBJECT_HEADER
from nimbus.oci.referrers import listed, matching, referrers_tag, with_referrer
from nimbus.oci.transport import Body, Credentials, Transport

MANIFEST_ACCEPT = f"{mt.MANIFEST_ACCEPT}, {mt.JSON}"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as served: its digest (checked), media type and bytes."""

    digest: str
    media_type: str
    data: bytes

    def json(self) -> dict[str, Any]:
        doc = json.loads(self.data)
        if not isinstance(doc, dict):
            raise ValueError("manifest is not a JSON object")
        return doc

    async def document(self, strict: bool = False) -> ManifestDocument:
        """The document model: `parse_manifest` when ``strict``, else `read_manifest`."""
        parse = parse_manifest if strict else read_manifest
        if len(self.data) > LARGE_DOCUMENT_BYTES:
            return await asyncio.to_thread(parse, self.data, self.media_type)
        return parse(self.data, self.media_type)


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


def scope(repository: str, *actions: str) -> str:
    """A token scope for ``actions`` on ``repository``."""
    return f"repository:{repository}:{','.join(actions)}"


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
        self.transport = Transport(
            base_url,
            credentials,
            ssl=ssl,
            headers=headers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
        )
        self._has_referrers_api: bool | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def with_headers(self, headers: Mapping[str, str]) -> RegistryClient:
        """The same registry, pool and tokens, sending ``headers`` on every request too."""
        view = copy.copy(self)
        view.transport = self.transport.with_headers(headers)
        return view

    async def close(self) -> None:
        await self.transport.close()

    def url(self, path: str, params: Mapping[str, str] | None = None) -> URL:
        return self.transport.url(path, params)

    def request(
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
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """`Transport.request`: for calls this client does not name."""
        return self.transport.request(
            method, path, scope=scope, ok=ok, allow=allow, headers=headers, params=params, data=data
        )

    async def ping(self) -> None:
        async with self.transport.request("GET", "/v2/", scope=""):
            pass

    # -- blobs --------------------------------------------------------------------------

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """The blob's size when the repository has it, else None."""
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.transport.request(
            "HEAD", path, scope=scope(repository, "pull"), allow=(404,)
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
        async with self.transport.request(
            "GET", path, scope=scope(repository, "pull"), ok=(200, 206), headers=headers
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
        actual = await hash_bytes(bytes(data), algorithm_of(digest))
        if actual != digest:
            raise DigestMismatchError(digest, actual, f"{repository}@{digest}")
        return bytes(data)

    async def mount_blob(self, repository: str, digest: str, source: str) -> str | None:
        """Cross-repository mount; None when mounted, else the upload session it opened."""
        path = f"/v2/{repository}/blobs/uploads/"
        params = {"mount": digest, "from": source}
        both = f"{scope(repository, 'pull', 'push')} {scope(source, 'pull')}"
        async with self.transport.request(
            "POST", path, scope=both, ok=(201, 202), params=params
        ) as response:
            if response.status == 201:
                return None
            return self.transport.location(response)

    async def start_upload(self, repository: str) -> str:
        """Open an upload session; its absolute location."""
        path = f"/v2/{repository}/blobs/uploads/"
        async with self.transport.request(
            "POST", path, scope=scope(repository, "pull", "push"), ok=(202,)
        ) as response:
            return self.transport.location(response)

    async def upload_chunk(
        self, repository: str, location: str, body: Body, offset: int, length: int
    ) -> str:
        """PATCH one chunk at ``offset``; returns the session's next location."""
        headers = {
            "Content-Type": mt.OCTET_STREAM,
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        async with self.transport.request(
            "PATCH",
            location,
            scope=scope(repository, "pull", "push"),
            ok=(202, 204),
            headers=headers,
            data=body,
        ) as response:
            return self.transport.location(response)

    async def finish_upload(
        self, repository: str, location: str, digest: str, body: Body = None, length: int = 0
    ) -> None:
        headers = {"Content-Type": mt.OCTET_STREAM, "Content-Length": str(length)}
        async with self.transport.request(
            "PUT",
            location,
            scope=scope(repository, "pull", "push"),
            ok=(201, 204),
            headers=headers,
            params={"digest": digest},
            data=body if body is not None else b"",
        ):
            pass

    async def upload_offset(self, repository: str, location: str) -> int:
        """How many bytes the session holds (from its Range header)."""
        async with self.transport.request(
            "GET", location, scope=scope(repository, "pull", "push"), ok=(204, 200)
        ) as response:
            raw = response.headers.get("Range", "")
        _, _, end = raw.partition("-")
        return int(end) + 1 if end.isdigit() else 0

    async def cancel_upload(self, repository: str, location: str) -> None:
        async with self.transport.request(
            "DELETE",
            location,
            scope=scope(repository, "pull", "push"),
            ok=(204, 200, 202),
            allow=(404,),
        ):
            pass

    async def push_blob(self, repository: str, data: bytes) -> str:
        """Upload small content whole (POST, then PUT with the body); returns its digest."""
        digest = await hash_bytes(data)
        if await self.blob_size(repository, digest) is not None:
            return digest
        location = await self.start_upload(repository)
        await self.finish_upload(repository, location, digest, data, len(data))
        return digest

    async def delete_blob(self, repository: str, digest: str) -> bool:
        path = f"/v2/{repository}/blobs/{digest}"
        async with self.transport.request(
            "DELETE", path, scope=scope(repository, "delete"), ok=(202, 200), allow=(404,)
        ) as response:
            return response.status != 404

    # -- manifests ----------------------------------------------------------------------

    async def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.transport.request(
            "HEAD",
            path,
            scope=scope(repository, "pull"),
            allow=(404,),
            headers={"Accept": MANIFEST_ACCEPT},
        ) as response:
            if response.status == 404:
                return None
            digest = response.headers.get(CONTENT_DIGEST_HEADER, "")
            media_type = mt.essence(response.headers.get("Content-Type", ""))
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
        async with self.transport.request(
            "GET",
            path,
            scope=scope(repository, "pull"),
            allow=(404,),
            headers={"Accept": MANIFEST_ACCEPT},
        ) as response:
            if response.status == 404:
                return None
            if (response.content_length or 0) > MAX_MANIFEST_BYTES:
                raise ValueError(f"manifest {repository}:{reference} exceeds 4 MiB")
            # `read(n)` hands back what has arrived, up to n: read on to the end.
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise ValueError(f"manifest {repository}:{reference} exceeds 4 MiB")
            data = bytes(body)
            header_digest = response.headers.get(CONTENT_DIGEST_HEADER, "")
            content_type = mt.essence(response.headers.get("Content-Type", ""))
        expected = reference if ":" in reference else header_digest
        actual = await hash_bytes(data, algorithm_of(expected))
        if expected and actual != expected:
            raise DigestMismatchError(expected, actual, f"{repository}:{reference}")
        return Manifest(actual, await _served_media_type(data, content_type), data)

    async def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> PushedManifest:
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.transport.request(
            "PUT",
            path,
            scope=scope(repository, "pull", "push"),
            ok=(201, 200, 202),
            headers={"Content-Type": media_type},
            data=data,
        ) as response:
            digest = response.headers.get(CONTENT_DIGEST_HEADER, "")
            subject = response.headers.get(SUBJECT_HEADER)
        return PushedManifest(digest or await hash_bytes(data), subject)

    async def delete_manifest(self, repository: str, reference: str) -> bool:
        """False when there was nothing to delete."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with self.transport.request(
            "DELETE", path, scope=scope(repository, "delete"), ok=(202, 200), allow=(404,)
        ) as response:
            return response.status != 404

    # -- listing ------------------------------------------------------------------------

    async def list_tags(self, repository: str) -> list[str]:
        tags: list[str] = []
        async for page in self._pages(
            f"/v2/{repository}/tags/list", scope(repository, "pull"), "tags"
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
            async with self.transport.request(
                "GET", next_path, scope=scope, allow=(404,), params=params
            ) as response:
                if response.status == 404:
                    return
                body = await response.json(content_type=None)
                link = response.headers.get("Link", "")
            items = body.get(key) or [] if isinstance(body, dict) else []
            yield [str(item) for item in items]
            next_path = next_link(link)
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
            async with self.transport.request(
                "GET",
                path,
                scope=scope(repository, "pull"),
                allow=(404, 400, 405),
                params=params,
                headers={"Accept": mt.OCI_INDEX},
            ) as response:
                content_type = response.headers.get("Content-Type", "")
                if response.status == 200 and mt.OCI_INDEX in content_type:
                    self._has_referrers_api = True
                    body = await response.json(content_type=None)
                    return matching(body.get("manifests") or [], artifact_type)
                if self._has_referrers_api is None:
                    self._has_referrers_api = False
        index = await self.get_manifest(repository, referrers_tag(digest))
        if index is None:
            return []
        return matching(listed(index.data), artifact_type)

    async def index_referrer(self, repository: str, subject: str, descriptor: Descriptor) -> None:
        """Add a referrer to the subject's tag schema index (for registries without the API)."""
        tag = referrers_tag(subject)
        current = await self.get_manifest(repository, tag)
        updated = with_referrer(current.data if current is not None else None, descriptor)
        if updated is not None:
            await self.put_manifest(repository, tag, updated, mt.OCI_INDEX)


def next_link(link: str) -> str | None:
    """The target of a `Link` header's `rel="next"`, if it has one."""
    for part in link.split(","):
        target, _, rest = part.partition(";")
        if 'rel="next"' in rest.replace(" ", "") or "rel=next" in rest.replace(" ", ""):
            return target.strip().strip("<>")
    return None


async def _served_media_type(data: bytes, content_type: str) -> str:
    try:
        if len(data) > LARGE_DOCUMENT_BYTES:
            document = await asyncio.to_thread(read_manifest, data, content_type)
        else:
            document = read_manifest(data, content_type)
    except InvalidManifestError:
        return content_type
    return document.media_type
