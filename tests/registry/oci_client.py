"""The deliberately raw OCI client of the tests: every reply whole, nothing checked or retried.

For asserting the spec's statuses, headers and error bodies, and for requests no well-behaved
client makes (bad ranges, wrong digests, bytes on a bare socket). Tests that only need content
pushed or read use `nimbus.oci.client.RegistryClient`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from nimbus.oci.mediatypes import OCTET_STREAM
from nimbus.oci.transport import parse_www_authenticate
from tests.fixtures.images import Blob, Image, ImageIndex, sha256


@dataclass
class Reply:
    """A whole response: status, headers and body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]

    def expect_error(self, status: int, code: str) -> None:
        """The spec's error: this status and a JSON body whose errors include this code."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers["Content-Type"].startswith("application/json"), self.headers
        assert code in self.error_codes, self.body[:500]
        for error in self.json()["errors"]:
            assert isinstance(error["message"], str)

    def challenge(self) -> dict[str, str]:
        """The params of the one `WWW-Authenticate` challenge, with its scheme under "scheme"."""
        header = self.headers.get("WWW-Authenticate")
        assert header, f"no challenge on a {self.status}"
        (parsed,) = parse_www_authenticate(header)
        return {"scheme": parsed.scheme, **parsed.params}


class OCIClient:
    """``authorization``, when given, is sent as is on every request: a hand-made Basic value or
    bearer token, right or wrong. A request's own Authorization header wins over it."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, authorization: str | None = None
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.authorization = authorization

    def authorized(self, authorization: str | None) -> OCIClient:
        """The same registry and session, sending this Authorization (None: none at all)."""
        return OCIClient(self.session, self.base_url, authorization)

    def url(self, path: str) -> URL:
        """An absolute URL for a path (or a Location header), taken as is, never normalised."""
        if path.startswith("http://") or path.startswith("https://"):
            return URL(path, encoded=True)
        return URL(self.base_url + path, encoded=True)

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        if self.authorization is not None:
            kwargs["headers"] = {"Authorization": self.authorization, **kwargs.get("headers", {})}
        async with self.session.request(method, self.url(path), **kwargs) as resp:
            body = await resp.read()
            return Reply(resp.status, resp.headers, body)

    # -- blobs ------------------------------------------------------------------------------

    async def push_blob(self, name: str, data: bytes, digest: str | None = None) -> str:
        """Monolithic upload (POST ?digest=); the digest."""
        digest = digest or sha256(data)
        reply = await self.request(
            "POST",
            f"/v2/{name}/blobs/uploads/?digest={digest}",
            data=data,
            headers={"Content-Type": OCTET_STREAM},
        )
        assert reply.status == 201, (reply.status, reply.body)
        assert reply.headers["Docker-Content-Digest"] == digest
        return digest

    async def push_blobs(self, name: str, blobs: Iterable[Blob]) -> None:
        for blob in blobs:
            await self.push_blob(name, blob.data)

    async def start_upload(self, name: str) -> str:
        """Open an upload session; its Location."""
        reply = await self.request("POST", f"/v2/{name}/blobs/uploads/")
        assert reply.status == 202, (reply.status, reply.body)
        return reply.headers["Location"]

    async def patch(
        self, location: str, data: bytes, first: int | None = None, **kwargs: Any
    ) -> Reply:
        headers = {"Content-Type": OCTET_STREAM}
        if first is not None:
            headers["Content-Range"] = f"{first}-{first + len(data) - 1}"
        return await self.request("PATCH", location, data=data, headers=headers, **kwargs)

    async def finish(self, location: str, digest: str, data: bytes = b"") -> Reply:
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": OCTET_STREAM}
        return await self.request(
            "PUT", f"{location}{sep}digest={digest}", data=data, headers=headers
        )

    async def blob(self, name: str, digest: str, **kwargs: Any) -> Reply:
        return await self.request("GET", f"/v2/{name}/blobs/{digest}", **kwargs)

    # -- manifests --------------------------------------------------------------------------

    async def put_manifest(self, name: str, reference: str, manifest: Blob) -> Reply:
        return await self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            data=manifest.data,
            headers={"Content-Type": manifest.media_type},
        )

    async def push_image(self, name: str, image: Image, reference: str | None = None) -> str:
        """Blobs, then the manifest (by tag, or by digest when no reference); the digest."""
        await self.push_blobs(name, image.blobs)
        reply = await self.put_manifest(name, reference or image.digest, image.manifest)
        assert reply.status == 201, (reply.status, reply.body)
        assert reply.headers["Docker-Content-Digest"] == image.digest
        return image.digest

    async def push_index(self, name: str, index: ImageIndex, reference: str) -> str:
        for image in index.images:
            await self.push_image(name, image)
        reply = await self.put_manifest(name, reference, index.manifest)
        assert reply.status == 201, (reply.status, reply.body)
        return index.digest

    async def manifest(self, name: str, reference: str, accept: Iterable[str] = ()) -> Reply:
        headers = {"Accept": ", ".join(accept)} if accept else {}
        return await self.request("GET", f"/v2/{name}/manifests/{reference}", headers=headers)


async def send_raw(host: str, port: int, data: bytes, *, read_reply: bool = True) -> bytes:
    """Write bytes on a fresh connection; the server's whole answer, or b"" when we hang up.

    With ``read_reply`` false the connection is closed right after writing: how a client that
    dies mid-request looks to the server.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        if not read_reply:
            return b""
        return await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


def raw_status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def raw_body(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


async def repeat_stream(block: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield block
