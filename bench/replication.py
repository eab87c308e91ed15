"""Replication: how soon a push at site A is served at site B, and how fast big images move.

- lag: small images (distinct content each) are pushed to A at a steady rate; the lag of each is
  from A acknowledging its manifest PUT to B answering 200 to a GET of the tag (polled every few
  milliseconds); p50 and p99.
- throughput: an image of 4 x 64 MiB random layers is pushed to A with skopeo; replication time
  is from skopeo's exit to B serving the tag, so only the copy A -> B counts. In the same run a
  direct `skopeo copy docker://A docker://B'` of that image to a fresh registry is timed; both
  as MiB/s and their ratio.

Real processes on loopback: nats-server, Nimbus registries A (events on) and B, the replicator.
Results are printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import servers
from bench.events import NatsServer
from bench.image import MIB, write_layout
from bench.registry import _skopeo, machine
from bench.results import save, settings_of
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.digests import digest_of
from nimbus.oci.documents import Descriptor
from proto.nimbus.v1 import replication_pb2, replication_pb2_grpc

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Polling B starts every 2 ms and backs off to 50 ms, so a backlog does not become a flood.
POLL_FIRST, POLL_MAX = 0.002, 0.05
# Pushes go round-robin to this many repositories, as several teams' pipelines would.
LAG_REPOSITORIES = 4


@dataclass(frozen=True)
class Settings:
    pushes: int = 200
    rate: float = 10.0
    layer_kib: int = 4
    big_layers: int = 4
    big_layer_mib: int = 64
    rounds: int = 3
    results_dir: Path = RESULTS_DIR
    keep: bool = False


def parse_args(argv: list[str]) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m bench replication", description=__doc__)
    p.add_argument("--pushes", type=int, default=d.pushes, help="small images for the lag")
    p.add_argument("--rate", type=float, default=d.rate, help="pushes a second")
    p.add_argument("--layer-kib", type=int, default=d.layer_kib, help="small image layer size")
    p.add_argument("--big-layers", type=int, default=d.big_layers)
    p.add_argument("--big-layer-mib", type=int, default=d.big_layer_mib)
    p.add_argument("--rounds", type=int, default=d.rounds, help="big image copies of each kind")
    p.add_argument("--results-dir", type=Path, default=d.results_dir)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    return Settings(
        a.pushes,
        a.rate,
        a.layer_kib,
        a.big_layers,
        a.big_layer_mib,
        a.rounds,
        a.results_dir,
        a.keep,
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


# -- processes ------------------------------------------------------------------------------


class Replicator:
    def __init__(self, workdir: Path, nats_url: str, source_url: str, site: str) -> None:
        self.port = servers.free_port()
        self.log_path = workdir / f"replicator-{site}.log"
        self.argv = [
            sys.executable,
            "-m",
            "nimbus.cli",
            "replicator",
            "--nats",
            nats_url,
            "--site",
            site,
            "--registry",
            source_url,
            "--grpc-listen",
            self.address,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{servers.LOOPBACK}:{self.port}"

    def start(self) -> Replicator:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=servers._die_with_parent,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replicator exited: {self.log_path.read_text()[-2000:]}")
            # gRPC may listen on an IPv4-mapped IPv6 socket: its log line is the sure sign.
            if "replicator running" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        raise TimeoutError("replicator did not start")

    def cpu_seconds(self) -> float:
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return servers.cpu_seconds(self.proc.pid)

    def peak_rss_kib(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return 0
        return servers.peak_rss_kib(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def _registry(workdir: Path, name: str, nats_url: str | None = None) -> servers.Server:
    server = servers.nimbus(workdir, name, access_log=False)
    if nats_url is not None:
        server.argv += ["--nats", nats_url, "--site", name]
    server.env["NIMBUS_GRPC_LISTEN"] = f"{servers.LOOPBACK}:{servers.free_port()}"
    return server.start()


async def _add_peer(replicator: Replicator, name: str, url: str) -> None:
    async with grpc.aio.insecure_channel(replicator.address) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        await stub.CreatePeer(
            replication_pb2.CreatePeerRequest(peer=replication_pb2.Peer(name=name, url=url))
        )


# -- lag --------------------------------------------------------------------------------------


def _small_image(index: int, layer_bytes: int) -> tuple[list[bytes], bytes]:
    layer = os.urandom(layer_bytes)
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": index}).encode()

    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        return Descriptor(media_type, digest_of(data), len(data)).to_json()

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": descriptor(mt.OCI_CONFIG, config),
            "layers": [descriptor(mt.OCI_LAYER, layer)],
        }
    ).encode()
    return [config, layer], manifest


async def _until_served(client: RegistryClient, repository: str, tag: str) -> float:
    """When a manifest GET of the tag first answers 200."""
    pause = POLL_FIRST
    while True:
        if await client.get_manifest(repository, tag) is not None:
            return time.monotonic()
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX)


async def measure_lag(a_url: str, b_url: str, settings: Settings) -> list[float]:
    images = [_small_image(i, settings.layer_kib * 1024) for i in range(settings.pushes)]
    lags: list[float] = []
    async with RegistryClient(a_url) as source, RegistryClient(b_url) as peer:

        async def one(i: int) -> None:
            blobs, manifest = images[i]
            repository = f"lag/app{i % LAG_REPOSITORIES}"
            for blob in blobs:
                await source.push_blob(repository, blob)
            await source.put_manifest(repository, f"t{i}", manifest, mt.OCI_MANIFEST)
            acked = time.monotonic()
            served = await asyncio.wait_for(_until_served(peer, repository, f"t{i}"), 300)
            lags.append(served - acked)

        interval = 1.0 / settings.rate
        started = time.monotonic()
        tasks = []
        for i in range(settings.pushes):
            delay = started + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return lags


# -- throughput -------------------------------------------------------------------------------


async def _wait_served(url: str, repository: str, tag: str) -> float:
    async with RegistryClient(url) as client:
        return await asyncio.wait_for(_until_served(client, repository, tag), 600)


@dataclass
class Results:
    lags: list[float] = field(default_factory=list)
    image_bytes: int = 0
    replication_seconds: list[float] = field(default_factory=list)
    direct_seconds: list[float] = field(default_factory=list)
    replicator_cpu_seconds: float = 0.0
    replicator_peak_rss_kib: int = 0

    def summary(self) -> dict[str, float]:
        mib = self.image_bytes / MIB
        # Medians over the rounds: the machine is shared, single runs are noisy.
        replicated = (
            mib / statistics.median(self.replication_seconds) if self.replication_seconds else 0.0
        )
        direct = mib / statistics.median(self.direct_seconds) if self.direct_seconds else 0.0
        return {
            "lag_p50_ms": round(percentile(self.lags, 50) * 1000, 1),
            "lag_p99_ms": round(percentile(self.lags, 99) * 1000, 1),
            "lag_mean_ms": round(statistics.fmean(self.lags) * 1000, 1) if self.lags else 0.0,
            "image_mib": round(mib, 1),
            "replication_mib_s": round(replicated, 1),
            "direct_skopeo_mib_s": round(direct, 1),
            "throughput_ratio": round(replicated / direct, 2) if direct else 0.0,
            "replicator_cpu_s": round(self.replicator_cpu_seconds, 2),
            "replicator_peak_rss_mib": round(self.replicator_peak_rss_kib / 1024, 1),
        }


def run(settings: Settings) -> Results:
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-replication-"))
    results = Results()
    started: list[Any] = []
    try:
        nats_server = NatsServer(workdir).start()
        started.append(nats_server)
        a = _registry(workdir, "a", nats_server.url)
        started.append(a)
        b = _registry(workdir, "b")
        started.append(b)
        direct_target = _registry(workdir, "direct")
        started.append(direct_target)
        replicator = Replicator(workdir, nats_server.url, a.url, "a")
        started.append(replicator)
        replicator.start()
        asyncio.run(_add_peer(replicator, "b", b.url))

        _say(f"lag: {settings.pushes} small images at {settings.rate}/s")
        results.lags = asyncio.run(measure_lag(a.url, b.url, settings))

        for round_ in range(settings.rounds):
            _say(
                f"throughput {round_ + 1}/{settings.rounds}: "
                f"{settings.big_layers} x {settings.big_layer_mib} MiB"
            )
            # New random content each round, so nothing is already at B.
            layout = workdir / f"big-{round_}"
            image = write_layout(layout, settings.big_layers, settings.big_layer_mib * MIB, "v1")
            results.image_bytes = image.total_bytes
            repository = f"big/app{round_}"
            _skopeo("--dest-tls-verify=false", image.ref, f"docker://{a.host}/{repository}:v1")
            pushed = time.monotonic()
            served = asyncio.run(_wait_served(b.url, repository, "v1"))
            results.replication_seconds.append(served - pushed)
            direct = _skopeo(
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{a.host}/{repository}:v1",
                f"docker://{direct_target.host}/{repository}:v1",
            )
            results.direct_seconds.append(direct)
            subprocess.run(["rm", "-rf", str(layout)], check=False)
        results.replicator_cpu_seconds = replicator.cpu_seconds()
        results.replicator_peak_rss_kib = replicator.peak_rss_kib()
    finally:
        for process in reversed(started):
            process.stop()
        if not settings.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            _say(f"work directory kept: {workdir}")
    return results


def report(settings: Settings, results: Results) -> str:
    s = results.summary()
    return "\n".join(
        [
            "replication A -> B (Nimbus to Nimbus, loopback)",
            f"  lag ({settings.pushes} pushes at {settings.rate}/s): "
            f"p50 {s['lag_p50_ms']} ms, p99 {s['lag_p99_ms']} ms (targets 250 / 1000 ms)",
            f"  {s['image_mib']} MiB image: replicated {s['replication_mib_s']} MiB/s, "
            f"direct skopeo copy {s['direct_skopeo_mib_s']} MiB/s, "
            f"ratio {s['throughput_ratio']} (target >= 0.8; medians of {settings.rounds} rounds)",
            f"  replicator: {s['replicator_cpu_s']} CPU s, "
            f"peak RSS {s['replicator_peak_rss_mib']} MiB",
        ]
    )


def write_json(settings: Settings, results: Results, info: dict[str, Any]) -> Path:
    doc = {
        "machine": info,
        "settings": settings_of(settings),
        "summary": results.summary(),
        "lags_ms": [round(x * 1000, 2) for x in results.lags],
        "replication_seconds": results.replication_seconds,
        "direct_seconds": results.direct_seconds,
    }
    return save("replication", settings.results_dir, doc)


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    info = machine()
    results = run(settings)
    print()
    print(report(settings, results))
    print(f"\nresults: {write_json(settings, results, info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
