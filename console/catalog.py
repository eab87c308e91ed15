"""What the browsing pages show: repositories, tags and manifests, read as the signed-in
identity (the registry's access rules decide for a user; the operator sees everything)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from console.clients import REGISTRY, GrpcClients
from console.oci import RegistryClients
from console.sessions import Session
from proto.nimbus.v1 import registry_pb2 as pb

PAGE_SIZE = 50
# GetManifest calls at once while the tags of a page get their platforms.
PLATFORM_CONCURRENCY = 8
ORDERS = ("name", "-name", "tags", "-tags", "size", "-size", "last_pushed", "-last_pushed")
# Image configs larger than this are not read for the manifest page.
MAX_CONFIG_BYTES = 1024 * 1024
CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)


class NotFound(Exception):
    """Not there, or not for this identity (the pages never say which)."""


@dataclass(frozen=True, slots=True)
class RepositoryPage:
    repositories: Sequence[Any]
    total: int
    next_token: str
    query: str
    order: str


@dataclass(frozen=True, slots=True)
class ImageConfig:
    os: str = ""
    architecture: str = ""
    variant: str = ""
    created: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, doc: Any) -> ImageConfig | None:
        if not isinstance(doc, dict):
            return None
        conf = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        assert isinstance(conf, dict)

        def strings(value: Any) -> list[str]:
            return [str(v) for v in value] if isinstance(value, list) else []

        labels = conf.get("Labels") if isinstance(conf.get("Labels"), dict) else {}
        history = doc.get("history") if isinstance(doc.get("history"), list) else []
        return cls(
            os=str(doc.get("os", "")),
            architecture=str(doc.get("architecture", "")),
            variant=str(doc.get("variant", "")),
            created=str(doc.get("created", "")),
            entrypoint=strings(conf.get("Entrypoint")),
            cmd=strings(conf.get("Cmd")),
            workdir=str(conf.get("WorkingDir", "") or ""),
            user=str(conf.get("User", "") or ""),
            env=strings(conf.get("Env")),
            labels={str(k): str(v) for k, v in (labels or {}).items()},
            exposed_ports=sorted(str(p) for p in (conf.get("ExposedPorts") or {})),
            history=[
                {
                    "created": str(h.get("created", "")),
                    "created_by": str(h.get("created_by", "")),
                    "empty_layer": "yes" if h.get("empty_layer") else "",
                    "comment": str(h.get("comment", "")),
                }
                for h in history or []
                if isinstance(h, dict)
            ],
        )


@dataclass(frozen=True, slots=True)
class LayerShare:
    descriptor: Any
    percent: float


@dataclass(frozen=True, slots=True)
class ManifestView:
    info: Any  # pb.ManifestInfo
    config: ImageConfig | None
    config_error: str
    layers: list[LayerShare]
    referrers: dict[str, list[Any]]
    raw: str

    @property
    def is_index(self) -> bool:
        return bool(self.info.manifests) and not self.info.layers


def _pullable(session: Session) -> dict[str, str]:
    """The operator sees everything; anyone else what the access rules let them pull."""
    return {} if session.admin else {"pullable_by": session.user}


def _not_found(error: grpc.aio.AioRpcError) -> bool:
    return error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


class Catalog:
    def __init__(self, grpc_clients: GrpcClients, registries: RegistryClients) -> None:
        self.grpc = grpc_clients
        self.registries = registries

    async def repositories(
        self, session: Session, query: str, order: str, token: str, page_size: int = PAGE_SIZE
    ) -> RepositoryPage:
        order = order if order in ORDERS else "name"
        request = pb.ListRepositoriesRequest(
            page_size=page_size,
            page_token=token,
            query=query,
            order_by=order,
            **_pullable(session),
        )
        try:
            reply = await self.grpc.unary(REGISTRY, "ListRepositories", request)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.INVALID_ARGUMENT and token:
                raise NotFound("that page is no longer there") from None
            raise
        return RepositoryPage(reply.repositories, reply.total, reply.next_page_token, query, order)

    async def tags(self, session: Session, repository: str, token: str) -> tuple[list[Any], str]:
        request = pb.ListTagsRequest(
            repository=repository, page_size=PAGE_SIZE, page_token=token, **_pullable(session)
        )
        try:
            reply = await self.grpc.unary(REGISTRY, "ListTags", request)
        except grpc.aio.AioRpcError as error:
            if _not_found(error):
                raise NotFound(repository) from None
            raise
        return list(reply.tags), reply.next_page_token

    async def platforms(
        self, session: Session, repository: str, tags: Sequence[Any]
    ) -> dict[str, list[Any]]:
        """Each digest of a page of tags with its platforms: one GetManifest per distinct
        digest (tags that share a manifest share the call), a few at a time. A manifest that
        went away since has none."""
        gate = asyncio.Semaphore(PLATFORM_CONCURRENCY)

        async def one(digest: str) -> list[Any]:
            request = pb.GetManifestRequest(
                repository=repository, reference=digest, **_pullable(session)
            )
            async with gate:
                try:
                    info = await self.grpc.unary(REGISTRY, "GetManifest", request)
                except grpc.aio.AioRpcError as error:
                    if _not_found(error):
                        return []
                    raise
            return list(info.platforms)

        digests = sorted({tag.digest for tag in tags if tag.digest})
        found = await asyncio.gather(*(one(d) for d in digests))
        return dict(zip(digests, found, strict=True))

    async def manifest(self, session: Session, repository: str, reference: str) -> ManifestView:
        request = pb.GetManifestRequest(
            repository=repository, reference=reference, **_pullable(session)
        )
        try:
            info = await self.grpc.unary(REGISTRY, "GetManifest", request)
        except grpc.aio.AioRpcError as error:
            if _not_found(error):
                raise NotFound(f"{repository}:{reference}") from None
            raise
        client = await self.registries.for_session(session)
        raw, config, config_error = "", None, ""
        try:
            served = await client.get_manifest(repository, info.digest)
            if served is not None:
                raw = _pretty(served.data)
        except Exception as error:  # the page still shows what the admin API said
            raw = f"(could not read the manifest over the OCI API: {type(error).__name__})"
        if info.config.digest and info.config.media_type in CONFIG_TYPES:
            if info.config.size > MAX_CONFIG_BYTES:
                config_error = "the image config is too large to show"
            else:
                try:
                    data = await client.get_blob(repository, info.config.digest, MAX_CONFIG_BYTES)
                    config = ImageConfig.read(json.loads(data))
                except Exception as error:
                    config_error = f"could not read the image config: {type(error).__name__}"
        total = sum(layer.size for layer in info.layers) or 1
        layers = [LayerShare(d, round(100 * d.size / total, 1)) for d in info.layers]
        referrers: dict[str, list[Any]] = {}
        for item in info.referrers:
            referrers.setdefault(item.artifact_type or item.media_type, []).append(item)
        return ManifestView(info, config, config_error, layers, referrers, raw)

    async def delete_tag(self, repository: str, tag: str) -> str:
        reply = await self.grpc.unary(
            REGISTRY, "DeleteTag", pb.DeleteTagRequest(repository=repository, tag=tag)
        )
        return str(reply.digest)


def _pretty(data: bytes) -> str:
    try:
        return json.dumps(json.loads(data), indent=2)
    except ValueError:
        return data.decode("utf-8", "replace")
