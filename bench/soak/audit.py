"""The audit: the harness's record of what was acknowledged against the stream, the webhook
receivers and every peer; a poller that checks peers during the run; backlogs after the faults.

Violations, each listed by the table:
- an acknowledged manifest PUT or tag delete without exactly one event of its site in the stream;
- an acknowledged one that a receiver never accepted with a valid signature;
- a peer not serving the digest of a live tag (or a digest push), or missing one of its blobs;
- a peer serving a tag with a blob missing, seen by the poller during the run;
- a backlog (outbox, consumer) not at 0 within the drain bound after the faults stopped.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from bench.soak.load import Ack, Record
from bench.soak.receivers import Receiver
from bench.soak.topology import Topology
from nimbus import streams
from nimbus.events import decode
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient

# Who replicates to whom: the site where a push happened -> the sites that must have it.
PEERS = {"a": ["b", "c"], "b": ["a"], "c": []}
DRAIN_BOUND = 180.0


@dataclass
class Findings:
    violations: list[str] = field(default_factory=list)
    events: int = 0
    deliveries: int = 0
    duplicates: int = 0
    replicas_checked: int = 0
    incomplete_seen: int = 0
    polls: int = 0
    drain_seconds: float = 0.0

    def add(self, message: str) -> None:
        self.violations.append(message)


async def missing_content(client: RegistryClient, repository: str, reference: str) -> str | None:
    """What the registry lacks of the image it serves at `reference` (None: complete)."""
    manifest = await client.get_manifest(repository, reference)
    if manifest is None:
        return "no manifest"
    doc = manifest.json()
    if manifest.media_type in mt.INDEXES:
        for child in doc.get("manifests", []):
            gap = await missing_content(client, repository, child["digest"])
            if gap is not None:
                return f"child {child['digest'][:19]}: {gap}"
        return None
    for descriptor in [doc.get("config"), *doc.get("layers", [])]:
        if descriptor and await client.blob_size(repository, descriptor["digest"]) is None:
            return f"blob {descriptor['digest'][:19]} missing"
    return None


class Poller:
    """During the run: a tag a peer serves must be complete at that moment."""

    def __init__(self, top: Topology, record: Record, findings: Findings) -> None:
        self.top, self.record, self.findings = top, record, findings
        self.rng = random.Random(3)

    async def run(self, until: float) -> None:
        clients = {
            s: RegistryClient(site.urls[0], read_timeout=10) for s, site in self.top.sites.items()
        }
        try:
            while time.monotonic() < until:
                await asyncio.sleep(0.5)
                recent = [a for a in self.record.acks[-200:] if PEERS[a.site]]
                if not recent:
                    continue
                ack = self.rng.choice(recent)
                peer = self.rng.choice(PEERS[ack.site])
                try:
                    head = await clients[peer].head_manifest(ack.repository, ack.reference)
                    if head is None:
                        continue  # not there yet: allowed
                    gap = await missing_content(clients[peer], ack.repository, ack.reference)
                except Exception:
                    continue  # the peer is down or frozen
                self.findings.polls += 1
                if gap is not None and gap != "no manifest":
                    self.findings.incomplete_seen += 1
                    self.findings.add(
                        f"{time.strftime('%H:%M:%S')} peer {peer} served "
                        f"{ack.repository}:{ack.reference} incomplete: {gap}"
                    )
        finally:
            for client in clients.values():
                await client.close()


def outbox_depth(top: Topology) -> int:
    total = 0
    for service in top.services():
        if service.kind != "registry":
            continue
        data = Path(service.argv[service.argv.index("--data-dir") + 1])
        total += sum(1 for _ in (data / "_outbox").glob("*/*.event"))
    return total


async def consumer_backlog(js: JetStreamContext) -> dict[str, int]:
    found = {}
    for info in await js.consumers_info(streams.EVENTS_STREAM):
        found[info.name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return found


async def drain(top: Topology, nc: NatsClient, findings: Findings, settle: float) -> None:
    """Until outboxes and every consumer are at 0 (and stay there `settle` seconds)."""
    js = nc.jetstream(timeout=10)
    started = time.monotonic()
    quiet_since = None
    backlog: dict[str, int] = {}
    depth = 0
    while time.monotonic() - started < DRAIN_BOUND:
        depth = outbox_depth(top)
        try:
            backlog = await consumer_backlog(js)
        except Exception:
            backlog = {"?": 1}
        if depth == 0 and not any(backlog.values()):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                findings.drain_seconds = quiet_since - started
                return
        else:
            quiet_since = None
        await asyncio.sleep(1)
    findings.drain_seconds = time.monotonic() - started
    findings.add(
        f"backlog not drained within {DRAIN_BOUND:.0f}s: outboxes {depth}, consumers {backlog}"
    )


async def read_stream(nc: NatsClient) -> Counter[tuple[str, str, str]]:
    """(site, action, request id) of every event its own site published (not replicated)."""
    js = nc.jetstream(timeout=10)
    info = await js.stream_info(streams.EVENTS_STREAM)
    found: Counter[tuple[str, str, str]] = Counter()
    first, last = int(info.state.first_seq or 1), int(info.state.last_seq or 0)
    for seq in range(first, last + 1):
        try:
            msg = await js.get_msg(streams.EVENTS_STREAM, seq)
        except Exception:
            continue  # a gap (deleted message)
        event = decode(msg.data or b"")
        site = event.source.site
        if event.source.origin_site in ("", site):
            found[(site, event.action, event.request.id)] += 1
    return found


def check_events(record: Record, stream: Counter[tuple[str, str, str]], findings: Findings) -> None:
    findings.events = sum(stream.values())
    expected = [(a.site, "push", a.request_id) for a in record.acks]
    expected += [(s, "delete", rid) for s, _, _, rid in record.deletes]
    for key in expected:
        if stream[key] != 1:
            findings.add(f"{key[1]} {key[2]} at {key[0]}: {stream[key]} events in the stream")


def check_deliveries(record: Record, receivers: list[Receiver], findings: Findings) -> None:
    expected = [(a.site, a.request_id) for a in record.acks]
    expected += [(s, rid) for s, _, _, rid in record.deletes]
    for receiver in receivers:
        for site, rid in expected:
            got = receiver.accepted[f"{site}|{rid}"]
            findings.deliveries += got
            findings.duplicates += max(0, got - 1)
            if got == 0:
                findings.add(f"receiver {receiver.name} never accepted {rid} of site {site}")
        if receiver.bad_signatures:
            findings.add(f"receiver {receiver.name}: {receiver.bad_signatures} bad signatures")


async def check_peers(top: Topology, record: Record, findings: Findings) -> None:
    gone = record.deleted()
    clients = {
        s: [RegistryClient(u, read_timeout=20) for u in site.urls] for s, site in top.sites.items()
    }
    try:
        checks: list[tuple[Ack, str, RegistryClient]] = []
        for ack in record.acks:
            if (ack.site, ack.repository, ack.reference) in gone:
                continue
            # The origin's replicas too: an acknowledged push must be served where it was made.
            for site in [ack.site, *PEERS[ack.site]]:
                for client in clients[site]:
                    checks.append((ack, site, client))
        semaphore = asyncio.Semaphore(16)

        async def one(ack: Ack, site: str, client: RegistryClient) -> None:
            async with semaphore:
                head = await client.head_manifest(ack.repository, ack.reference)
                findings.replicas_checked += 1
                where = f"{site} ({client.base_url})"
                if head is None:
                    findings.add(f"{where} lacks {ack.site}:{ack.repository}:{ack.reference}")
                elif head.digest != ack.digest:
                    findings.add(
                        f"{where} serves {ack.repository}:{ack.reference} as {head.digest}, "
                        f"pushed as {ack.digest}"
                    )
                else:
                    gap = await missing_content(client, ack.repository, ack.reference)
                    if gap is not None:
                        findings.add(f"{where} {ack.repository}:{ack.reference}: {gap}")

        await asyncio.gather(*(one(*c) for c in checks))
    finally:
        for group in clients.values():
            for client in group:
                await client.close()


def table(
    record: Record,
    findings: Findings,
    faults: Counter[str],
    top: Topology,
    receivers: list[Receiver],
    duration: float,
) -> str:
    pushes = len(record.acks)
    tagged = sum(1 for a in record.acks if not a.reference.startswith("sha256:"))
    rows = [
        ("load and faults", f"{duration:.0f} s"),
        ("operations", ", ".join(f"{k} {v}" for k, v in sorted(record.ops.items()))),
        ("acknowledged manifest PUTs", f"{pushes} ({tagged} by tag)"),
        ("acknowledged tag deletes", str(len(record.deletes))),
        ("operations cut off by faults", str(record.failed)),
        ("faults", ", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none"),
        ("events in the stream (own site)", str(findings.events)),
        ("webhook deliveries accepted", str(findings.deliveries)),
        ("duplicate deliveries", str(findings.duplicates)),
        ("peer polls during the run", f"{findings.polls} ({findings.incomplete_seen} incomplete)"),
        ("replicas checked at the end", str(findings.replicas_checked)),
        ("drain after faults stopped", f"{findings.drain_seconds:.1f} s"),
    ]
    for service in [*([top.s3] if top.s3 else []), *top.services()]:
        rows.append((f"peak RSS {service.name}", f"{service.peak_rss_kib / 1024:.0f} MiB"))
    for receiver in receivers:
        rows.append(
            (
                f"receiver {receiver.name}",
                f"{receiver.requests} requests, {receiver.refused} answered 503, "
                f"{receiver.bad_signatures} bad signatures",
            )
        )
    rows.append(("violations", str(len(findings.violations))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


def to_json(record: Record, findings: Findings, faults: list[str]) -> str:
    return json.dumps(
        {
            "acks": len(record.acks),
            "deletes": len(record.deletes),
            "violations": findings.violations,
            "faults": faults,
        },
        indent=1,
    )
