"""Webhooks: how soon a push reaches a receiver, and how many deliveries a notifier sends.

- push-to-webhook latency: manifests are pushed by tag at a steady rate (200 pushes/s by
  default; their blobs are uploaded beforehand, so the registry's work is the manifest PUT and
  its event) and a receiver in this process notes when each push's webhook arrives. Nimbus
  (registry -> JetStream -> notifier -> receiver) and CNCF Distribution (its built-in
  notifications endpoint, same receiver) run the same schedule; p50/p99 of each and the ratio.
- fan-out: events are published straight to JetStream while 10 webhooks, each with a receiver
  of its own, take every event; deliveries/s is the count received over the time from the first
  publish to the last delivery.

nats-server, the registries and the notifier are real processes on loopback, sharing the
machine's cores with the clients and receivers of this process. The notifier's CPU time
(user + system, from /proc) is read around each phase, so each phase also gives deliveries per
notifier CPU-second. `--profile FILE` runs the notifier under cProfile and writes its stats to
FILE when it stops. Results are printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
from aiohttp import web

from bench import servers
from bench.events import NatsServer, percentile
from bench.registry import machine
from bench.results import save, settings_of, value_table
from nimbus import streams
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.digests import digest_of
from nimbus.oci.documents import Descriptor
from proto.nimbus.v1 import events_pb2, webhooks_pb2, webhooks_pb2_grpc

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPOSITORIES = 8


@dataclass(frozen=True)
class Settings:
    rate: float = 200.0
    pushes: int = 1000
    receivers: int = 10
    fanout_events: int = 500
    distribution: bool = True
    keep: bool = False
    results_dir: Path = RESULTS_DIR
    profile: str = ""


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench notifier", description=__doc__)
    parser.add_argument("--rate", type=float, default=Settings.rate, help="pushes per second")
    parser.add_argument("--pushes", type=int, default=Settings.pushes)
    parser.add_argument("--receivers", type=int, default=Settings.receivers)
    parser.add_argument(
        "--fanout-events", type=int, default=Settings.fanout_events, help="events to fan out"
    )
    parser.add_argument(
        "--no-distribution", action="store_true", help="skip CNCF Distribution's latency run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--profile", type=Path, help="profile the notifier (cProfile, CPU time) to this file"
    )
    parser.add_argument(
        "--no-fanout", action="store_true", help="skip the fan-out phase (--fanout-events 0)"
    )
    a = parser.parse_args(argv)
    return Settings(
        a.rate,
        a.pushes,
        a.receivers,
        0 if a.no_fanout else a.fanout_events,
        not a.no_distribution,
        a.keep,
        a.results_dir,
        str(a.profile or ""),
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the receiver ---------------------------------------------------------------------------


class Receiver:
    """Notes when each event arrives: by manifest digest (pushes) and by count (fan-out)."""

    def __init__(self) -> None:
        self.port = servers.free_port()
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.last = 0.0
        self.done = asyncio.Event()
        self.expect = 0
        # Digests whose arrival completes the run (latency phase).
        self.awaited: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{servers.LOOPBACK}:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        doc = await request.json()
        now = time.perf_counter()
        for event in doc.get("events", []):
            target = event.get("target", {})
            if event.get("action") == "push" and target.get("tag"):
                self.arrived.setdefault(target["digest"], now)
            self.count += 1
        self.last = now
        self.check()
        return web.Response(status=200)

    def check(self) -> None:
        if self.expect and self.count >= self.expect:
            self.done.set()
        if self.awaited and self.awaited <= self.arrived.keys():
            self.done.set()

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, servers.LOOPBACK, self.port, backlog=1024).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- the processes --------------------------------------------------------------------------


# The notifier under cProfile, timed by CPU time: wall time would charge the profiled functions
# with every moment the process waited for a core on a busy machine.
_PROFILED = """
import cProfile, sys, time
from nimbus.cli import main
profile = cProfile.Profile(time.process_time)
try:
    profile.runcall(main, sys.argv[2:])
finally:
    profile.dump_stats(sys.argv[1])
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Notifier:
    def __init__(self, workdir: Path, nats_url: str, profile: str = "") -> None:
        self.port = servers.free_port()
        self.log_path = workdir / "notifier.log"
        program = [sys.executable, "-c", _PROFILED, profile] if profile else servers._nimbus_argv()
        self.argv = [
            *program,
            "notifier",
            "--nats",
            nats_url,
            "--grpc-listen",
            self.address,
            "--log-level",
            "warning",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{servers.LOOPBACK}:{self.port}"

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def start(self) -> Notifier:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"notifier exited; see {self.log_path}")
            try:
                with socket.create_connection((servers.LOOPBACK, self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the notifier did not serve gRPC")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _distribution(workdir: Path, receiver: Receiver) -> servers.Server:
    """Debian's docker-registry with a notifications endpoint pointing at `receiver`."""
    binary = shutil.which(servers.DISTRIBUTION_BINARY)
    if binary is None:
        raise RuntimeError(f"{servers.DISTRIBUTION_BINARY} is not installed (make bench-deps)")
    port = servers.free_port()
    root = workdir / "distribution"
    root.mkdir(parents=True, exist_ok=True)
    config = servers.distribution_config(root / "data", port, access_log=False) + "\n".join(
        [
            "notifications:",
            "  endpoints:",
            "    - name: bench",
            f"      url: {receiver.url}",
            "      timeout: 2s",
            "      threshold: 5",
            "      backoff: 1s",
            "",
        ]
    )
    (root / "config.yml").write_text(config)
    argv = [binary, "serve", str(root / "config.yml")]
    return servers.Server(
        servers.DISTRIBUTION, argv, port, root / "data", root / "server.log"
    ).start()


# -- pushing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    config: bytes
    layer: bytes

    def manifest(self, n: int) -> bytes:
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": Descriptor(mt.OCI_CONFIG, digest_of(self.config), len(self.config)).to_json(),
            "layers": [Descriptor(mt.OCI_LAYER, digest_of(self.layer), len(self.layer)).to_json()],
            # Distinct manifests (and digests) for every push, over the same blobs.
            "annotations": {"n": str(n), "run": uuid.uuid4().hex},
        }
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Phase:
    """One phase's figures: deliveries and the notifier's CPU time over them."""

    ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0


async def paced_pushes(
    base: str, receiver: Receiver, settings: Settings, cpu: Callable[[], float] | None = None
) -> Phase:
    """Push at `settings.rate`; milliseconds from each manifest PUT to its webhook, and the
    notifier's CPU seconds from the first push to the last webhook (`cpu` reads its clock)."""
    blobs = Base(json.dumps({"os": "linux", "architecture": "amd64"}).encode(), os.urandom(2048))
    sent: dict[str, float] = {}
    async with RegistryClient(base, max_connections=64) as client:
        for r in range(REPOSITORIES):
            for data in (blobs.config, blobs.layer):
                await client.push_blob(f"bench/app{r}", data)
        manifests = [blobs.manifest(i) for i in range(settings.pushes)]

        async def push(i: int) -> None:
            body = manifests[i]
            sent[digest_of(body)] = time.perf_counter()
            await client.put_manifest(
                f"bench/app{i % REPOSITORIES}", f"t{i}", body, mt.OCI_MANIFEST
            )

        cpu_start = cpu() if cpu is not None else 0.0
        started = time.perf_counter()
        tasks = []
        for i in range(settings.pushes):
            delay = started + i / settings.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(push(i)))
        await asyncio.gather(*tasks)
        achieved = settings.pushes / (time.perf_counter() - started)
        _say(f"  pushed {settings.pushes} at {achieved:.0f}/s")
    receiver.awaited = set(sent)
    receiver.check()
    try:
        await asyncio.wait_for(receiver.done.wait(), 60)
    except TimeoutError:
        pass
    cpu_s = cpu() - cpu_start if cpu is not None else 0.0
    missing = len(sent) - len(receiver.arrived.keys() & sent.keys())
    if missing:
        _say(f"  {missing} webhooks did not arrive within 60 s")
    ms = [(receiver.arrived[d] - t) * 1000 for d, t in sent.items() if d in receiver.arrived]
    return Phase(ms, cpu_s)


async def _add_webhook(address: str, url: str, selector: webhooks_pb2.EventFilter) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await webhooks_pb2_grpc.WebhooksStub(channel).CreateWebhook(
            webhooks_pb2.CreateWebhookRequest(
                webhook=webhooks_pb2.Webhook(url=url, filter=selector)
            )
        )


async def nimbus_latency(
    workdir: Path, nats_url: str, notifier: Notifier, settings: Settings
) -> Phase:
    receiver = await Receiver().start()
    registry = servers.nimbus(workdir, "registry", access_log=False)
    registry.argv += ["--nats", nats_url, "--site", "bench"]
    registry.env["NIMBUS_GRPC_LISTEN"] = f"{servers.LOOPBACK}:{servers.free_port()}"
    # Manifest pushes only, as Distribution's run below selects them.
    selector = webhooks_pb2.EventFilter(actions=["push"], tags=["*"])
    await _add_webhook(notifier.address, receiver.url, selector)
    await asyncio.to_thread(registry.start)
    try:
        return await paced_pushes(registry.url, receiver, settings, notifier.cpu)
    finally:
        await asyncio.to_thread(registry.stop)
        await receiver.stop()


async def distribution_latency(workdir: Path, settings: Settings) -> list[float]:
    receiver = await Receiver().start()
    registry = await asyncio.to_thread(_distribution, workdir, receiver)
    try:
        return (await paced_pushes(registry.url, receiver, settings)).ms
    finally:
        await asyncio.to_thread(registry.stop)
        await receiver.stop()


async def fanout(nats_url: str, notifier: Notifier, settings: Settings) -> dict[str, float]:
    receivers = [await Receiver().start() for _ in range(settings.receivers)]
    total = settings.fanout_events * len(receivers)
    for receiver in receivers:
        receiver.expect = settings.fanout_events
        # Only this phase's events: the latency phase's repositories are bench/app*.
        selector = webhooks_pb2.EventFilter(repositories=["fanout/*"])
        await _add_webhook(notifier.address, receiver.url, selector)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    cpu_start = notifier.cpu()
    started = time.perf_counter()
    for i in range(settings.fanout_events):
        event = events_pb2.Event(id=uuid.uuid4().hex, action="push")
        event.timestamp.GetCurrentTime()
        event.target.repository = f"fanout/app{i % REPOSITORIES}"
        event.target.tag = f"t{i}"
        event.target.digest = digest_of(str(i).encode())
        event.source.site = "bench"
        await js.publish(
            streams.subject("bench", "push"),
            event.SerializeToString(),
            headers={streams.MSG_ID_HEADER: event.id},
        )
    published = time.perf_counter() - started
    try:
        await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in receivers)), 120)
    except TimeoutError:
        _say("  not every delivery arrived within 120 s")
    cpu_s = notifier.cpu() - cpu_start
    received = sum(r.count for r in receivers)
    elapsed = max(r.last for r in receivers) - started
    await nc.close()
    for receiver in receivers:
        await receiver.stop()
    return {
        "deliveries": received,
        "expected": total,
        "seconds": elapsed,
        "deliveries_per_s": received / elapsed,
        "publish_per_s": settings.fanout_events / published,
        "notifier_cpu_s": cpu_s,
        "deliveries_per_cpu_s": received / cpu_s if cpu_s else 0.0,
    }


# -- running and reporting ------------------------------------------------------------------


@dataclass
class Results:
    nimbus_ms: list[float] = field(default_factory=list)
    nimbus_cpu_s: float = 0.0
    distribution_ms: list[float] = field(default_factory=list)
    fanout: dict[str, float] = field(default_factory=dict)
    loadavg_at_end: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        delivered = len(self.nimbus_ms)
        s: dict[str, Any] = {
            "nimbus_p50_ms": percentile(self.nimbus_ms, 50),
            "nimbus_p99_ms": percentile(self.nimbus_ms, 99),
            "nimbus_delivered": delivered,
            "notifier_cpu_s": self.nimbus_cpu_s,
            "notifier_cpu_s_per_1000": self.nimbus_cpu_s / delivered * 1000 if delivered else 0.0,
            "deliveries_per_cpu_s": delivered / self.nimbus_cpu_s if self.nimbus_cpu_s else 0.0,
            "loadavg_at_end": self.loadavg_at_end,
            **{f"fanout_{k}": v for k, v in self.fanout.items()},
        }
        if self.distribution_ms:
            s["distribution_p50_ms"] = percentile(self.distribution_ms, 50)
            s["distribution_p99_ms"] = percentile(self.distribution_ms, 99)
            s["distribution_delivered"] = len(self.distribution_ms)
            s["p50_ratio"] = s["nimbus_p50_ms"] / s["distribution_p50_ms"]
            s["p99_ratio"] = s["nimbus_p99_ms"] / s["distribution_p99_ms"]
        return s


async def _run(workdir: Path, settings: Settings) -> Results:
    results = Results()
    nats_server = NatsServer(workdir).start()
    notifier: Notifier | None = None
    try:
        nc = await nats.connect(nats_server.url)
        from nimbus.eventstream import StreamSettings

        # The registry would create it too; here the fan-out publishes before any registry.
        await nc.jetstream().add_stream(StreamSettings(0, 0, 0, 120).config())
        await nc.close()
        started = Notifier(workdir, nats_server.url, settings.profile)
        notifier = await asyncio.to_thread(started.start)
        _say("push-to-webhook latency, Nimbus")
        phase = await nimbus_latency(workdir, nats_server.url, notifier, settings)
        results.nimbus_ms, results.nimbus_cpu_s = phase.ms, phase.cpu_s
        if settings.distribution:
            _say("push-to-webhook latency, CNCF Distribution")
            results.distribution_ms = await distribution_latency(workdir, settings)
        if settings.fanout_events:
            _say(f"fan-out to {settings.receivers} receivers")
            results.fanout = await fanout(nats_server.url, notifier, settings)
        results.loadavg_at_end = [round(x, 2) for x in os.getloadavg()]
    finally:
        if notifier is not None:
            notifier.stop()
        nats_server.stop()
    return results


def run(settings: Settings) -> Results:
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-notifier-"))
    try:
        return asyncio.run(_run(workdir, settings))
    finally:
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report(settings: Settings, results: Results, info: dict[str, Any]) -> str:
    s = results.summary()
    rows: list[tuple[str, Any]] = [
        ("Nimbus push-to-webhook p50 (ms)", s["nimbus_p50_ms"]),
        ("Nimbus push-to-webhook p99 (ms)", s["nimbus_p99_ms"]),
        ("notifier CPU s per 1,000 push deliveries", s["notifier_cpu_s_per_1000"]),
        ("push deliveries per notifier CPU-second", s["deliveries_per_cpu_s"]),
    ]
    if "distribution_p50_ms" in s:
        rows += [
            ("Distribution push-to-webhook p50 (ms)", s["distribution_p50_ms"]),
            ("Distribution push-to-webhook p99 (ms)", s["distribution_p99_ms"]),
            ("p50 ratio Nimbus / Distribution", s["p50_ratio"]),
            ("p99 ratio Nimbus / Distribution", s["p99_ratio"]),
        ]
    if settings.fanout_events:
        rows += [
            (
                f"fan-out deliveries/s ({settings.receivers} receivers)",
                s.get("fanout_deliveries_per_s", 0.0),
            ),
            (
                "fan-out deliveries per notifier CPU-second",
                s.get("fanout_deliveries_per_cpu_s", 0.0),
            ),
            (
                "fan-out deliveries received / expected",
                f"{int(s.get('fanout_deliveries', 0))} / {int(s.get('fanout_expected', 0))}",
            ),
        ]
    lines = [
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, load average at start "
        f"{' '.join(map(str, info['loadavg_at_start']))}, at end "
        f"{' '.join(map(str, s['loadavg_at_end']))}; Nimbus {info['nimbus_commit']}.",
        f"{settings.pushes} manifest pushes at {settings.rate:.0f}/s; fan-out of "
        f"{settings.fanout_events} events to {settings.receivers} webhooks.",
        "",
        *value_table(rows),
    ]
    return "\n".join(lines)


def write_json(settings: Settings, results: Results, info: dict[str, Any]) -> Path:
    doc = {
        "machine": info,
        "settings": settings_of(settings),
        "summary": results.summary(),
    }
    return save("notifier", settings.results_dir, doc)


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
