"""The soak's load: pushes of small and multi-layer images and of indexes with a referrer,
retags, tag deletes and pulls, at a steady rate with bursts, against every site. The record of
what the registries acknowledged is what the audit checks."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.soak.topology import Topology
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.digests import digest_of

# Share of pushes made at each site (c is a peer of a, and a site of its own).
SITE_WEIGHTS = {"a": 0.5, "b": 0.35, "c": 0.15}
REPOSITORIES = 4
ARTIFACT_TYPE = "application/vnd.nimbus.soak.signature"


@dataclass(frozen=True)
class Ack:
    """A manifest PUT the registry acknowledged: by tag, or by digest (children, referrers)."""

    site: str
    repository: str
    reference: str
    digest: str
    request_id: str
    at: float


@dataclass
class Record:
    acks: list[Ack] = field(default_factory=list)
    # Request ids of acknowledged tag deletes, and the (site, repository, tag) they removed.
    deletes: list[tuple[str, str, str, str]] = field(default_factory=list)
    failed: int = 0
    pulls: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    def deleted(self) -> set[tuple[str, str, str]]:
        return {(s, r, t) for s, r, t, _ in self.deletes}

    def live_tags(self, site: str) -> list[Ack]:
        gone = self.deleted()
        return [
            a
            for a in self.acks
            if a.site == site
            and not a.reference.startswith("sha256:")
            and (a.site, a.repository, a.reference) not in gone
        ]


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def _image(layers: list[bytes], salt: str) -> tuple[list[bytes], bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": salt}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": _descriptor(mt.OCI_CONFIG, config),
            "layers": [_descriptor(mt.OCI_LAYER, layer) for layer in layers],
        }
    ).encode()
    return [config, *layers], manifest


class Load:
    def __init__(self, top: Topology, record: Record, seed: int = 1) -> None:
        self.top = top
        self.record = record
        self.rng = random.Random(seed)
        self.clients: dict[str, RegistryClient] = {}
        self.counter = 0

    async def __aenter__(self) -> Load:
        for site in self.top.sites.values():
            for url in site.urls:
                self.clients[url] = RegistryClient(url, connect_timeout=3, read_timeout=20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients.values():
            await client.close()

    def _client(self, site: str) -> tuple[RegistryClient, str]:
        url = self.rng.choice(self.top.sites[site].urls)
        rid = f"soak-{uuid.uuid4().hex}"
        return self.clients[url].with_headers({"X-Request-Id": rid}), rid

    def _site(self) -> str:
        return self.rng.choices(list(SITE_WEIGHTS), weights=list(SITE_WEIGHTS.values()))[0]

    def _name(self, site: str) -> tuple[str, str]:
        self.counter += 1
        return f"soak-{site}/app{self.counter % REPOSITORIES}", f"t{self.counter}"

    async def _put(
        self, site: str, repository: str, reference: str, data: bytes, media_type: str
    ) -> str:
        client, rid = self._client(site)
        pushed = await client.put_manifest(repository, reference, data, media_type)
        self.record.acks.append(Ack(site, repository, reference, pushed.digest, rid, time.time()))
        return pushed.digest

    async def _blobs(self, site: str, repository: str, blobs: list[bytes]) -> None:
        client, _ = self._client(site)
        for blob in blobs:
            await client.push_blob(repository, blob)

    # -- operations ---------------------------------------------------------------------------

    async def push_image(self, site: str, layers: int) -> None:
        repository, tag = self._name(site)
        sizes = [self.rng.randint(512, 64 * 1024) for _ in range(layers)]
        blobs, manifest = _image([os.urandom(n) for n in sizes], tag)
        await self._blobs(site, repository, blobs)
        await self._put(site, repository, tag, manifest, mt.OCI_MANIFEST)

    async def push_index(self, site: str) -> None:
        repository, tag = self._name(site)
        children = []
        for arch in ("amd64", "arm64"):
            blobs, manifest = _image([os.urandom(self.rng.randint(512, 8192))], f"{tag}-{arch}")
            await self._blobs(site, repository, blobs)
            digest = await self._put(
                site, repository, digest_of(manifest), manifest, mt.OCI_MANIFEST
            )
            children.append(
                _descriptor(
                    mt.OCI_MANIFEST, manifest, platform={"architecture": arch, "os": "linux"}
                )
            )
            assert children[-1]["digest"] == digest
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": children}
        ).encode()
        await self._put(site, repository, tag, index, mt.OCI_INDEX)
        # A signature-like referrer of the index, pushed by digest.
        empty = b"{}"
        payload = os.urandom(256)
        await self._blobs(site, repository, [empty, payload])
        referrer = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "artifactType": ARTIFACT_TYPE,
                "config": _descriptor(mt.OCI_EMPTY, empty),
                "layers": [_descriptor("application/octet-stream", payload)],
                "subject": _descriptor(mt.OCI_INDEX, index),
            }
        ).encode()
        await self._put(site, repository, digest_of(referrer), referrer, mt.OCI_MANIFEST)

    async def retag(self, site: str) -> None:
        live = self.record.live_tags(site)
        if not live:
            return await self.push_image(site, 1)
        source = self.rng.choice(live)
        client, _ = self._client(site)
        manifest = await client.get_manifest(source.repository, source.reference)
        if manifest is None:
            raise RuntimeError(f"acknowledged {source.repository}:{source.reference} is gone")
        _, tag = self._name(site)
        await self._put(site, source.repository, tag, manifest.data, manifest.media_type)

    async def delete_tag(self, site: str) -> None:
        live = self.record.live_tags(site)
        if len(live) < 10:
            return
        # Only tags other operations do not use at the same moment: old ones.
        victim = self.rng.choice(live[: len(live) // 2])
        client, rid = self._client(site)
        if await client.delete_manifest(victim.repository, victim.reference):
            self.record.deletes.append((site, victim.repository, victim.reference, rid))

    async def pull(self, site: str) -> None:
        live = self.record.live_tags(site)
        if not live:
            return
        ack = self.rng.choice(live)
        client, _ = self._client(site)
        await client.get_manifest(ack.repository, ack.reference)
        self.record.pulls += 1

    async def one(self) -> None:
        site = self._site()
        kind = self.rng.choices(
            ["small", "layers", "index", "retag", "delete", "pull"],
            weights=[30, 15, 10, 10, 5, 30],
        )[0]
        self.record.ops[kind] = self.record.ops.get(kind, 0) + 1
        try:
            if kind == "small":
                await self.push_image(site, 1)
            elif kind == "layers":
                await self.push_image(site, self.rng.randint(3, 5))
            elif kind == "index":
                await self.push_index(site)
            elif kind == "retag":
                await self.retag(site)
            elif kind == "delete":
                await self.delete_tag(site)
            else:
                await self.pull(site)
        except Exception:
            # A fault cut it off: not acknowledged, so not promised.
            self.record.failed += 1

    async def run(self, until: float, rate: float, burst_every: float, burst: int) -> None:
        """`rate` operations a second, and `burst` at once every `burst_every` seconds."""
        tasks: set[asyncio.Task[None]] = set()
        # At most a few dozen in flight: a frozen site must not pile up thousands.
        slots = asyncio.Semaphore(48)

        async def limited() -> None:
            try:
                await self.one()
            finally:
                slots.release()

        next_burst = time.monotonic() + burst_every
        while time.monotonic() < until:
            count = 1
            if time.monotonic() >= next_burst:
                count, next_burst = burst, time.monotonic() + burst_every
            for _ in range(count):
                await slots.acquire()
                task = asyncio.create_task(limited())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(self.rng.expovariate(rate))
        if tasks:
            await asyncio.wait(tasks, timeout=60)
