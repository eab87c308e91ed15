"""`python -m bench.soak [--duration SECONDS]`: start the three sites, run load and faults,
stop the faults, let the backlogs drain, audit, print the table; exit 1 on any violation."""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import nats

from bench.soak import audit, topology
from bench.soak.faults import Faults
from bench.soak.load import Load, Record
from bench.soak.receivers import Receiver, make_receivers
from proto.nimbus.v1 import replication_pb2, replication_pb2_grpc, webhooks_pb2, webhooks_pb2_grpc

T = TypeVar("T")
# How long consumers and outboxes must stay at 0 before the drain counts as done.
SETTLE = 5.0


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def retried(call: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def configure(top: topology.Topology, receivers: list[Receiver]) -> None:
    """A webhook per receiver (pushes and deletes of every site), the peers of a and b."""
    address = f"{topology.LOOPBACK}:{top.notifiers[0].port}"
    async with grpc.aio.insecure_channel(address) as channel:
        hooks = webhooks_pb2_grpc.WebhooksStub(channel)
        for receiver in receivers:
            request = webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(
                    url=receiver.url,
                    filter=webhooks_pb2.EventFilter(actions=["push", "delete"]),
                )
            )
            made = await retried(lambda r=request: hooks.CreateWebhook(r))  # type: ignore[misc]
            receiver.secret = made.secrets[0]
    peers = {"a": ["b", "c"], "b": ["a"]}
    for site, targets in peers.items():
        address = f"{topology.LOOPBACK}:{top.replicators[site].port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = replication_pb2_grpc.ReplicationStub(channel)
            for target in targets:
                peer = replication_pb2.Peer(name=target, url=top.sites[target].urls[0], site=target)
                request = replication_pb2.CreatePeerRequest(peer=peer)
                await retried(lambda r=request, s=stub: s.CreatePeer(r))  # type: ignore[misc]


async def sample(top: topology.Topology, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.to_thread(top.sample)
        await asyncio.sleep(2)


async def soak(top: topology.Topology, duration: float, rate: float, seed: int) -> int:
    started = time.monotonic()
    await asyncio.to_thread(topology.start, top, say)
    receivers = make_receivers()
    for receiver in receivers:
        await receiver.start()
    await configure(top, receivers)
    say("configured: webhooks and peers; load and faults start")
    record = Record()
    findings = audit.Findings()
    faults = Faults(top, receivers, say, seed)
    begun = time.monotonic()
    until = begun + duration
    async with Load(top, record, seed) as load:
        await asyncio.gather(
            load.run(until, rate=rate, burst_every=20, burst=16),
            faults.run(until),
            audit.Poller(top, record, findings).run(until),
            sample(top, until + 1),
        )
    say(f"faults stopped; {len(record.acks)} manifest PUTs acknowledged; draining")
    # Everything runs again, thawed, and every receiver is up.
    for service in top.services():
        if service.frozen:
            service.thaw()
        if not service.running:
            await asyncio.to_thread(service.start)
    for receiver in receivers:
        if not receiver.up:
            await receiver.start()
    nc = await nats.connect([f"nats://{topology.LOOPBACK}:{n.port}" for n in top.nats])
    try:
        await audit.drain(top, nc, findings, SETTLE)
        say(f"drained in {findings.drain_seconds:.1f}s; auditing")
        audit.check_events(record, await audit.read_stream(nc), findings)
    finally:
        await nc.close()
    audit.check_deliveries(record, receivers, findings)
    await audit.check_peers(top, record, findings)
    await asyncio.to_thread(top.sample)
    for receiver in receivers:
        await receiver.stop()
    for line in faults.log.errors:
        findings.add(f"fault handling: {line}")
    print()
    print(f"soak {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, seed {seed}")
    print(audit.table(record, findings, faults.log.kinds, top, receivers, duration))
    for violation in findings.violations[:50]:
        print(f"VIOLATION {violation}")
    if len(findings.violations) > 50:
        print(f"... and {len(findings.violations) - 50} more")
    say(f"total wall time {time.monotonic() - started:.0f}s")
    return 1 if findings.violations else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    parser.add_argument("--rate", type=float, default=3.0, help="operations a second (3)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--seed", type=int, help="of the load and the faults (a new one each run)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-soak-"))
    top = topology.build(workdir)
    code = 1
    try:
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
        say(f"seed {seed} (--seed {seed} repeats this run's choices)")
        code = asyncio.run(soak(top, args.duration, args.rate, seed))
        return code
    finally:
        top.stop()
        # The services' logs explain a violation: kept then.
        if args.keep or code != 0:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
