"""The operator's services: webhooks and their deliveries, replication, garbage collection,
health. Each method is one or a few gRPC calls; nothing is kept between requests."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from console.charts import Chart, hour_chart
from console.clients import NOTIFIER, REGISTRY, REPLICATOR, GrpcClients, Health
from console.format import human_size
from proto.nimbus.v1 import registry_pb2 as rpb
from proto.nimbus.v1 import replication_pb2 as plb
from proto.nimbus.v1 import webhooks_pb2 as wpb

ACTIONS = ("push", "pull", "delete", "mount")
# How many already-published events the events page shows before its live feed.
RECENT_EVENTS = 100
BODY_FORMATS = {
    "distribution-v1": wpb.BODY_FORMAT_DISTRIBUTION_V1,
    "distribution-v2": wpb.BODY_FORMAT_DISTRIBUTION_V2,
    "cloudevents": wpb.BODY_FORMAT_CLOUDEVENTS,
}
STATUSES = {
    "retrying": wpb.DELIVERY_STATUS_RETRYING,
    "succeeded": wpb.DELIVERY_STATUS_SUCCEEDED,
    "dead": wpb.DELIVERY_STATUS_DEAD,
}


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _globs(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class WebhookForm:
    url: str
    description: str
    actions: list[str]
    repositories: str
    tags: str
    body_format: str
    enabled: bool

    @classmethod
    def read(cls, form: Any) -> WebhookForm:
        return cls(
            url=str(form.get("url", "")).strip(),
            description=str(form.get("description", "")).strip(),
            actions=[a for a in form.getall("actions", []) if a in ACTIONS],
            repositories=str(form.get("repositories", "")),
            tags=str(form.get("tags", "")),
            body_format=str(form.get("body_format", "distribution-v1")),
            enabled=form.get("enabled") == "on",
        )

    def message(self) -> Any:
        return wpb.Webhook(
            url=self.url,
            description=self.description,
            filter=wpb.EventFilter(
                actions=self.actions,
                repositories=_globs(self.repositories),
                tags=_globs(self.tags),
            ),
            body_format=BODY_FORMATS.get(self.body_format, wpb.BODY_FORMAT_DISTRIBUTION_V1),
            enabled=self.enabled,
        )


def body_format_name(value: int) -> str:
    for name, number in BODY_FORMATS.items():
        if number == value:
            return name
    return "distribution-v1"


def status_name(value: int) -> str:
    for name, number in STATUSES.items():
        if number == value:
            return name
    return "unknown"


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer, its status (None until the replicator has one) and its last hour."""

    peer: Any
    status: Any | None
    throughput: Chart | None
    lag: Chart | None


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 100 else f"{value / 60:.1f} min"


def peer_view(peer: Any, status: Any | None, now: float | None = None) -> PeerView:
    if status is None:
        return PeerView(peer, None, None, None)
    hour = list(status.last_hour)
    images = sum(s.images_copied for s in hour)
    copied = sum(s.bytes_copied for s in hour)
    throughput = hour_chart(
        "Copied a minute",
        hour,
        lambda s: float(s.bytes_copied),
        lambda v: human_size(v),
        f"Last hour: {images} images, {human_size(copied)} copied.",
        now,
    )
    lagging = [s for s in hour if s.lag_seconds_max > 0]
    worst = max((s.lag_seconds_max for s in lagging), default=0.0)
    mean = sum(s.lag_seconds_mean for s in lagging) / len(lagging) if lagging else 0.0
    lag = hour_chart(
        "Lag (worst a minute)",
        hour,
        lambda s: float(s.lag_seconds_max),
        _seconds,
        (
            f"Last hour: lag from event to copy {_seconds(mean)} on average, "
            f"{_seconds(worst)} at worst."
            if lagging
            else "Last hour: no change from an event was applied."
        ),
        now,
    )
    return PeerView(peer, status, throughput, lag)


def status_fields(status: Any) -> dict[str, Any]:
    """What the live backlog sends for a peer (the page's cells, as text)."""
    return {
        "peer": status.peer,
        "backlog": int(status.backlog),
        "in_flight": int(status.in_flight),
        "failures": int(status.failures),
        "copied": f"{status.images_copied} images, {human_size(status.bytes_copied)}",
    }


def progress_fields(item: Any) -> dict[str, Any]:
    """A SyncProgress as the sync's live progress bar reads it."""
    return {
        "phase": item.phase,
        "repository": item.repository,
        "reference": item.reference,
        "done": int(item.done),
        "total": int(item.total),
        "images_copied": int(item.images_copied),
        "copied": human_size(item.bytes_copied),
        "failed": int(item.failed),
        "error": item.error,
        "finished": bool(item.finished),
    }


GC_KINDS = {1: "blob", 2: "manifest", 3: "upload"}
GC_PHASES = {1: "Marking", 2: "Sweeping manifests", 3: "Sweeping blobs", 4: "Sweeping uploads"}


def gc_fields(item: Any) -> dict[str, Any]:
    """A GarbageCollectProgress as the live GC panel reads it (phase 1 to 5, 5 done)."""
    stats = item.stats
    found: dict[str, Any] = {
        "phase": int(item.phase),
        "phase_name": GC_PHASES.get(item.phase, "Done"),
        "message": item.message,
        "dry_run": bool(item.dry_run),
        "done": item.phase == rpb.GarbageCollectProgress.DONE,
        "freed": human_size(stats.bytes_freed),
        "blobs_deleted": int(stats.blobs_deleted),
        "manifests_deleted": int(stats.manifests_deleted),
        "uploads_deleted": int(stats.uploads_deleted),
        "blobs_kept_recent": int(stats.blobs_kept_recent),
    }
    if item.item.kind:
        found["item"] = {
            "kind": GC_KINDS.get(item.item.kind, "item"),
            "name": " ".join(
                p for p in (item.item.repository, item.item.digest or item.item.upload_id) if p
            ),
            "size": human_size(item.item.size),
        }
    return found


class Operations:
    def __init__(self, grpc_clients: GrpcClients) -> None:
        self.grpc = grpc_clients

    # -- webhooks ---------------------------------------------------------------------------

    async def webhooks(self) -> list[Any]:
        reply = await self.grpc.unary(NOTIFIER, "ListWebhooks", wpb.ListWebhooksRequest())
        return sorted(reply.webhooks, key=lambda w: (w.url, w.id))

    async def webhook(self, webhook_id: str) -> Any:
        return await self.grpc.unary(NOTIFIER, "GetWebhook", wpb.GetWebhookRequest(id=webhook_id))

    async def create_webhook(self, form: WebhookForm) -> tuple[Any, str]:
        """The new webhook and its secret (shown once, by the page that created it)."""
        secret = new_secret()
        webhook = form.message()
        webhook.secrets.append(secret)
        created = await self.grpc.unary(
            NOTIFIER, "CreateWebhook", wpb.CreateWebhookRequest(webhook=webhook)
        )
        return created, secret

    async def update_webhook(self, webhook_id: str, form: WebhookForm) -> Any:
        webhook = form.message()
        webhook.id = webhook_id
        mask = field_mask_pb2.FieldMask(
            paths=["url", "description", "filter", "body_format", "enabled"]
        )
        return await self.grpc.unary(
            NOTIFIER, "UpdateWebhook", wpb.UpdateWebhookRequest(webhook=webhook, update_mask=mask)
        )

    async def rotate_secret(self, webhook_id: str) -> str:
        """Adds a new secret beside the current ones (both sign until the old is dropped)."""
        current = await self.webhook(webhook_id)
        secret = new_secret()
        webhook = wpb.Webhook(id=webhook_id, secrets=[*current.secrets[-1:], secret])
        mask = field_mask_pb2.FieldMask(paths=["secrets"])
        await self.grpc.unary(
            NOTIFIER, "UpdateWebhook", wpb.UpdateWebhookRequest(webhook=webhook, update_mask=mask)
        )
        return secret

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.grpc.unary(NOTIFIER, "DeleteWebhook", wpb.DeleteWebhookRequest(id=webhook_id))

    async def test_webhook(self, webhook_id: str) -> Any:
        return await self.grpc.unary(NOTIFIER, "TestWebhook", wpb.TestWebhookRequest(id=webhook_id))

    async def deliveries(self, webhook_id: str, status: str, token: str) -> tuple[list[Any], str]:
        request = wpb.ListDeliveriesRequest(
            webhook_id=webhook_id,
            statuses=[STATUSES[status]] if status in STATUSES else [],
            page_size=50,
            page_token=token,
        )
        reply = await self.grpc.unary(NOTIFIER, "ListDeliveries", request)
        return list(reply.deliveries), reply.next_page_token

    async def delivery(self, delivery_id: str) -> Any:
        return await self.grpc.unary(
            NOTIFIER, "GetDelivery", wpb.GetDeliveryRequest(id=delivery_id)
        )

    async def redeliver(self, delivery_id: str) -> Any:
        return await self.grpc.unary(NOTIFIER, "Redeliver", wpb.RedeliverRequest(id=delivery_id))

    async def recent_events(
        self, actions: list[str], repositories: list[str], limit: int = RECENT_EVENTS
    ) -> list[Any]:
        """The latest matching events already published, newest first."""
        request = wpb.ListEventsRequest(
            filter=wpb.EventFilter(actions=actions, repositories=repositories), limit=limit
        )
        return list((await self.grpc.unary(NOTIFIER, "ListEvents", request)).events)

    def watch(self, actions: list[str], repositories: list[str]) -> AsyncIterator[Any]:
        request = wpb.WatchEventsRequest(
            filter=wpb.EventFilter(actions=actions, repositories=repositories)
        )
        return self.grpc.stream(NOTIFIER, "WatchEvents", request)

    # -- replication ------------------------------------------------------------------------

    @property
    def replication(self) -> bool:
        return self.grpc.has(REPLICATOR)

    async def peers(self) -> list[PeerView]:
        """Each peer with its status and last hour (None when the replicator has none yet)."""
        peers = await self.grpc.unary(REPLICATOR, "ListPeers", plb.ListPeersRequest(page_size=1000))
        status = await self.grpc.unary(REPLICATOR, "GetStatus", plb.GetStatusRequest())
        by_peer = {s.peer: s for s in status.peers}
        return [peer_view(p, by_peer.get(p.name)) for p in peers.peers]

    async def status_feed(self, interval: float = 1.0) -> AsyncIterator[list[dict[str, Any]]]:
        """Every peer's backlog and counters, each time they change (asked every `interval`)."""
        last: list[dict[str, Any]] | None = None
        while True:
            reply = await self.grpc.unary(REPLICATOR, "GetStatus", plb.GetStatusRequest())
            now = [status_fields(s) for s in reply.peers]
            if now != last:
                yield now
                last = now
            await asyncio.sleep(interval)

    async def failures(self, peer: str) -> list[Any]:
        reply = await self.grpc.unary(
            REPLICATOR, "ListFailures", plb.ListFailuresRequest(peer=peer, page_size=200)
        )
        return list(reply.failures)

    async def retry(self, peer: str, failure_id: str) -> Any:
        return await self.grpc.unary(
            REPLICATOR, "RetryFailure", plb.RetryFailureRequest(peer=peer, id=failure_id)
        )

    def sync_progress(self, peer: str, repository: str) -> AsyncIterator[Any]:
        request = plb.SyncRequest(peer=peer, repository=repository)
        return self.grpc.stream(REPLICATOR, "Sync", request, deadline=600)

    async def sync(self, peer: str, repository: str) -> list[Any]:
        return [item async for item in self.sync_progress(peer, repository)]

    async def locate(self, repository: str, digest: str) -> tuple[list[Any], str]:
        """Each peer's presence of the manifest, or why the replicator could not say."""
        request = plb.LocateManifestRequest(repository=repository, reference=digest)
        try:
            reply = await self.grpc.unary(REPLICATOR, "LocateManifest", request)
        except grpc.aio.AioRpcError as error:
            return [], f"the replicator did not answer: {error.code().name}"
        return list(reply.peers), ""

    # -- garbage collection and health ------------------------------------------------------

    async def stats(self) -> Any:
        return await self.grpc.unary(REGISTRY, "GetStats", rpb.GetStatsRequest())

    def collect_progress(self, dry_run: bool, delete_untagged: bool) -> AsyncIterator[Any]:
        request = rpb.GarbageCollectRequest(dry_run=dry_run, delete_untagged=delete_untagged)
        return self.grpc.stream(REGISTRY, "GarbageCollect", request, 600)

    async def collect(self, dry_run: bool, delete_untagged: bool) -> list[Any]:
        return [p async for p in self.collect_progress(dry_run, delete_untagged)]

    async def health(self) -> list[Health]:
        return [await self.grpc.health(s) for s in (REGISTRY, NOTIFIER, REPLICATOR)]
