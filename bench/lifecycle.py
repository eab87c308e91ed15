"""The lifecycle layer's costs: retention over many tags, pushes under a quota, scrub speed.

- retention: 10,000 tags in 100 repositories, each a real tag link written by a manifest PUT
  through the OCI API (clients in parallel, one per repository at a time so a repository's tags
  are written in order); tags share a few small images per repository. A rule keeps the newest
  10 tags of each and deletes untagged manifests at once. A dry run, then the run, each in a
  freshly started registry process; reported: the wall time of each (until the gRPC stream's
  last message, every item included) and the registry's peak RSS during it;
- quota: small distinct images pushed by concurrent clients to two registries side by side,
  one with a quota rule over the pushed repositories (limits far away, so every push is
  checked and admitted) and one without, taking turns batch after batch; the overhead is
  1 - rate(on) / rate(off) over all batches, with the median of the per-pair overheads, and
  the servers' CPU time per push (less moved by the machine's other load);
- scrub: a dry run at an unbounded rate over blobs written through the OCI API (page cache
  warm), in MiB/s of bytes hashed over the run's wall time, against what hashlib's sha256
  hashes on one core of this process, measured in between the scrub runs.

CNCF Distribution has no retention, quota or online scrub, so nothing runs side by side.
Results are printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration

from bench import servers
from bench.events import Push, make_pushes, push_all
from bench.registry import machine
from bench.results import save, settings_of
from nimbus.grpcclient import open_channel
from nimbus.oci import mediatypes as mt
from nimbus.oci.client import RegistryClient
from nimbus.oci.digests import digest_of
from nimbus.oci.documents import Descriptor
from proto.nimbus.v1 import registry_pb2 as pb
from proto.nimbus.v1 import registry_pb2_grpc

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTS = ("retention", "quota", "scrub")
MIB = 1024 * 1024
NO_SIDE_BY_SIDE = (
    "CNCF Distribution has no retention, quotas or online scrub: nothing to run side by side."
)


@dataclass(frozen=True)
class Settings:
    parts: tuple[str, ...] = PARTS
    repositories: int = 100
    tags_per_repository: int = 100
    images_per_repository: int = 5
    keep_last: int = 10
    setup_clients: int = 16
    quota_images: int = 100
    quota_rounds: int = 10
    quota_clients: int = 8
    quota_layer_kib: int = 16
    scrub_mib: int = 256
    scrub_blob_mib: int = 16
    scrub_runs: int = 3
    keep: bool = False
    results_dir: Path = RESULTS_DIR


def parse_args(argv: list[str]) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m bench lifecycle", description=__doc__)
    p.add_argument("--only", default=",".join(PARTS), help="parts to run (retention,quota,scrub)")
    p.add_argument("--repositories", type=int, default=d.repositories, help="(100)")
    p.add_argument("--tags", type=int, default=d.tags_per_repository, help="per repository (100)")
    p.add_argument("--keep-last", type=int, default=d.keep_last, help="the rule's keep_last (10)")
    p.add_argument("--quota-images", type=int, default=d.quota_images, help="per batch (100)")
    p.add_argument("--quota-rounds", type=int, default=d.quota_rounds, help="batches a side (10)")
    p.add_argument("--quota-clients", type=int, default=d.quota_clients, help="in flight (8)")
    p.add_argument("--scrub-mib", type=int, default=d.scrub_mib, help="bytes stored (256)")
    p.add_argument("--scrub-runs", type=int, default=d.scrub_runs, help="(3)")
    p.add_argument("--quick", action="store_true", help="a short run (checks the bench)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    parts = tuple(x.strip() for x in a.only.split(",") if x.strip())
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    if a.quick:
        a.repositories, a.tags, a.quota_images, a.quota_rounds = 10, 50, 30, 2
        a.scrub_mib, a.scrub_runs = 32, 2
    return Settings(
        parts=parts,
        repositories=a.repositories,
        tags_per_repository=a.tags,
        keep_last=min(a.keep_last, a.tags),
        quota_images=a.quota_images,
        quota_rounds=a.quota_rounds,
        quota_clients=a.quota_clients,
        scrub_mib=a.scrub_mib,
        scrub_blob_mib=min(d.scrub_blob_mib, a.scrub_mib),
        scrub_runs=a.scrub_runs,
        keep=a.keep,
        results_dir=a.results_dir,
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Nimbus:
    """A registry with its gRPC admin API on a port of its own (no token: loopback only)."""

    server: servers.Server
    grpc_address: str

    @classmethod
    def make(cls, workdir: Path, name: str) -> Nimbus:
        address = f"{servers.LOOPBACK}:{servers.free_port()}"
        env = {"NIMBUS_GRPC_LISTEN": address}
        return cls(servers.nimbus(workdir, name, access_log=False, env=env), address)

    def start(self) -> Nimbus:
        self.server.start()
        return self

    def restart(self) -> Nimbus:
        self.server.stop()
        return self.start()

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
        async with open_channel(self.grpc_address) as channel:
            # /v2/ may answer a moment before the gRPC port listens.
            await asyncio.wait_for(channel.channel_ready(), 30)
            yield registry_pb2_grpc.RegistryStub(channel)

    async def set_policies(self, policies: pb.LifecyclePolicies) -> None:
        async with self.admin() as stub:
            await stub.SetLifecyclePolicies(pb.SetLifecyclePoliciesRequest(policies=policies))


# -- retention ------------------------------------------------------------------------------


@dataclass
class RetentionFigures:
    tags: int = 0
    setup_s: float = 0.0
    idle_rss_mib: dict[str, float] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)


def _image_of(settings: Settings, tag: int) -> int:
    """Tags in runs over the images: the newest tags all point at the last image."""
    return tag * settings.images_per_repository // settings.tags_per_repository


def _expected_deletions(settings: Settings) -> dict[str, int]:
    t = settings.tags_per_repository
    kept_images = {_image_of(settings, i) for i in range(t - settings.keep_last, t)}
    per_repo = settings.images_per_repository - len(kept_images)
    return {
        "tags_deleted": settings.repositories * (t - settings.keep_last),
        "manifests_deleted": settings.repositories * per_repo,
    }


async def _write_tags(url: str, settings: Settings, images: list[Push]) -> None:
    repositories = [f"lc/repo-{r:03d}" for r in range(settings.repositories)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in repositories:
        queue.put_nowait(name)

    async def one(client: RegistryClient) -> None:
        while not queue.empty():
            name = queue.get_nowait()
            for image in images:
                for _, data in image.blobs:
                    await client.push_blob(name, data)
            # In order within a repository: its push times order its tags.
            for t in range(settings.tags_per_repository):
                image = images[_image_of(settings, t)]
                await client.put_manifest(name, f"t{t:04d}", image.manifest, mt.OCI_MANIFEST)

    async with RegistryClient(url, max_connections=settings.setup_clients) as client:
        await asyncio.gather(*(one(client) for _ in range(settings.setup_clients)))


async def _run_retention(
    registry: Nimbus, dry_run: bool
) -> tuple[float, int, pb.RetentionProgress]:
    async with registry.admin() as stub:
        started = time.perf_counter()
        messages = 0
        last = pb.RetentionProgress()
        async for progress in stub.RunRetention(pb.RunRetentionRequest(dry_run=dry_run)):
            messages += 1
            last = progress
        return time.perf_counter() - started, messages, last


async def _tags_left(url: str, settings: Settings) -> set[int]:
    async with RegistryClient(url) as client:
        return {
            len(await client.list_tags(f"lc/repo-{r:03d}")) for r in range(settings.repositories)
        }


def retention(settings: Settings, workdir: Path) -> RetentionFigures:
    figures = RetentionFigures(settings.repositories * settings.tags_per_repository)
    figures.expected = _expected_deletions(settings)
    registry = Nimbus.make(workdir, "retention").start()
    try:
        images = make_pushes(settings.images_per_repository, 1, 512, "retention")
        _say(f"retention: writing {figures.tags:,} tags through the OCI API")
        started = time.perf_counter()
        asyncio.run(_write_tags(registry.server.url, settings, images))
        figures.setup_s = time.perf_counter() - started
        _say(f"retention: {figures.tags:,} tags in {figures.setup_s:.1f} s")
        rule = pb.RetentionRule(
            name="bench",
            repositories="lc/*",
            keep_last=settings.keep_last,
            untagged_older_than=Duration(seconds=0),
        )
        asyncio.run(registry.set_policies(pb.LifecyclePolicies(retention=[rule])))
        for mode, dry_run in (("dry_run", True), ("run", False)):
            # A fresh process: its peak RSS is this run's, not the setup's.
            registry.restart()
            figures.idle_rss_mib[mode] = registry.server.peak_rss_kib() / 1024
            wall, messages, last = asyncio.run(_run_retention(registry, dry_run))
            figures.wall_s[mode] = wall
            figures.peak_rss_mib[mode] = registry.server.peak_rss_kib() / 1024
            figures.messages[mode] = messages
            figures.stats[mode] = {
                "repositories": last.stats.repositories,
                "tags_kept": last.stats.tags_kept,
                "tags_deleted": last.stats.tags_deleted,
                "manifests_deleted": last.stats.manifests_deleted,
                "skipped": last.stats.skipped,
            }
            _say(f"retention {mode}: {wall:.2f} s, {figures.stats[mode]}")
            got = {k: figures.stats[mode][k] for k in figures.expected}
            if last.phase != pb.RetentionProgress.DONE or got != figures.expected:
                raise RuntimeError(f"retention {mode}: {got}, expected {figures.expected}")
        left = asyncio.run(_tags_left(registry.server.url, settings))
        if left != {settings.keep_last}:
            raise RuntimeError(f"tags left per repository: {sorted(left)}")
    finally:
        registry.server.stop()
    return figures


# -- quota ----------------------------------------------------------------------------------


OFF, ON = "off", "on"


@dataclass
class QuotaFigures:
    images: dict[str, int] = field(default_factory=lambda: {OFF: 0, ON: 0})
    wall_s: dict[str, float] = field(default_factory=lambda: {OFF: 0.0, ON: 0.0})
    cpu_s: dict[str, float] = field(default_factory=lambda: {OFF: 0.0, ON: 0.0})
    pair_overheads: list[float] = field(default_factory=list)
    repositories_under_quota: int = 0

    def rate(self, side: str) -> float:
        return self.images[side] / self.wall_s[side]

    def cpu_ms(self, side: str) -> float:
        return self.cpu_s[side] / self.images[side] * 1000

    @property
    def overhead(self) -> float:
        return 1 - self.rate(ON) / self.rate(OFF)

    @property
    def cpu_overhead(self) -> float:
        return self.cpu_ms(ON) / self.cpu_ms(OFF) - 1


def quota(settings: Settings, workdir: Path) -> QuotaFigures:
    figures = QuotaFigures()
    sides = {side: Nimbus.make(workdir, f"quota-{side}") for side in (OFF, ON)}
    try:
        for registry in sides.values():
            registry.start()
        rule = pb.QuotaRule(name="bench", repositories="bench/*", bytes=1 << 40, tags=1_000_000)
        asyncio.run(sides[ON].set_policies(pb.LifecyclePolicies(quotas=[rule])))
        layer = settings.quota_layer_kib * 1024
        # A first batch each, not counted: connections, caches, the quota's first read.
        for side, registry in sides.items():
            asyncio.run(push_all(registry.server.url, make_pushes(20, 1, layer, f"w{side}"), 4))
        for round_ in range(settings.quota_rounds):
            rates: dict[str, float] = {}
            # The order flips every round, so drift in the machine's load hits both alike.
            for side in (OFF, ON) if round_ % 2 == 0 else (ON, OFF):
                pushes = make_pushes(settings.quota_images, 1, layer, f"r{round_}{side}")
                server = sides[side].server
                cpu = server.cpu_seconds()
                wall, _ = asyncio.run(push_all(server.url, pushes, settings.quota_clients))
                figures.cpu_s[side] += server.cpu_seconds() - cpu
                figures.images[side] += len(pushes)
                figures.wall_s[side] += wall
                rates[side] = len(pushes) / wall
            figures.pair_overheads.append(1 - rates[ON] / rates[OFF])
            _say(f"quota round {round_ + 1}: off {rates[OFF]:.1f}/s, on {rates[ON]:.1f}/s")

        async def under_quota() -> int:
            async with sides[ON].admin() as stub:
                stats = await stub.GetStats(pb.GetStatsRequest())
            return sum(1 for q in stats.quotas if q.rule == "bench" and q.tags_used > 0)

        # The rule did apply: every pushed repository has its usage counted.
        figures.repositories_under_quota = asyncio.run(under_quota())
        if figures.repositories_under_quota == 0:
            raise RuntimeError("the quota rule applied to no repository")
    finally:
        for registry in sides.values():
            registry.server.stop()
    return figures


# -- scrub ----------------------------------------------------------------------------------


@dataclass
class ScrubFigures:
    bytes_hashed: int = 0
    blobs: int = 0
    scrub_mib_s: list[float] = field(default_factory=list)
    hashlib_mib_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.scrub_mib_s) / statistics.median(self.hashlib_mib_s)


async def _store_blobs(url: str, settings: Settings) -> None:
    count = max(1, settings.scrub_mib // settings.scrub_blob_mib)
    layers = [os.urandom(settings.scrub_blob_mib * MIB) for _ in range(count)]
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": Descriptor(mt.OCI_CONFIG, digest_of(config), len(config)).to_json(),
            "layers": [Descriptor(mt.OCI_LAYER, digest_of(d), len(d)).to_json() for d in layers],
        },
        separators=(",", ":"),
    ).encode()
    async with RegistryClient(url) as client:
        for data in (config, *layers):
            await client.push_blob("scrub/app", data)
        await client.put_manifest("scrub/app", "v1", manifest, mt.OCI_MANIFEST)


def _hashlib_mib_s(total: int, piece: int) -> float:
    """sha256 over `total` bytes in pieces of `piece`, in this thread: one core's rate."""
    data = os.urandom(piece)
    hasher = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(max(1, total // piece)):
        hasher.update(data)
    return max(1, total // piece) * piece / MIB / (time.perf_counter() - started)


async def _run_scrub(registry: Nimbus) -> tuple[float, pb.ScrubProgress]:
    async with registry.admin() as stub:
        started = time.perf_counter()
        last = pb.ScrubProgress()
        async for progress in stub.RunScrub(pb.RunScrubRequest(dry_run=True, unlimited=True)):
            last = progress
        return time.perf_counter() - started, last


def scrub(settings: Settings, workdir: Path) -> ScrubFigures:
    figures = ScrubFigures()
    registry = Nimbus.make(workdir, "scrub").start()
    try:
        asyncio.run(_store_blobs(registry.server.url, settings))
        for run in range(settings.scrub_runs):
            # Taken turn about, so both see the same load on the machine.
            figures.hashlib_mib_s.append(_hashlib_mib_s(settings.scrub_mib * MIB, MIB))
            wall, last = asyncio.run(_run_scrub(registry))
            if last.phase != pb.ScrubProgress.DONE or last.stats.corrupt or last.stats.missing:
                raise RuntimeError(f"scrub did not finish clean: {last}")
            figures.bytes_hashed, figures.blobs = last.stats.bytes_hashed, last.stats.blobs_checked
            figures.scrub_mib_s.append(last.stats.bytes_hashed / MIB / wall)
            _say(
                f"scrub run {run + 1}: {figures.scrub_mib_s[-1]:.0f} MiB/s; "
                f"hashlib sha256 {figures.hashlib_mib_s[-1]:.0f} MiB/s"
            )
    finally:
        registry.server.stop()
    return figures


# -- report ---------------------------------------------------------------------------------


def report(settings: Settings, info: dict[str, Any], parts: dict[str, Any]) -> str:
    lines = [
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {info['nproc']} CPUs, "
        f"{info['cpu']}, load average at start {' '.join(map(str, info['loadavg_at_start']))}, "
        f"at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; Nimbus "
        f"{info['nimbus_commit']} (one process, filesystem storage, fsync on).",
        NO_SIDE_BY_SIDE,
        "",
        "| part | metric | value | target |",
        "| --- | --- | ---: | --- |",
    ]
    r: RetentionFigures | None = parts.get("retention")
    if r is not None:
        where = f"{r.tags:,} tags in {settings.repositories} repositories"
        lines.append(f"| retention | setup: {where}, OCI API, s | {r.setup_s:.1f} | |")
        for mode, label in (("dry_run", "dry run"), ("run", "run")):
            s = r.stats[mode]
            lines += [
                f"| retention | {label}: s ({s['tags_deleted']:,} tags, "
                f"{s['manifests_deleted']:,} manifests) | {r.wall_s[mode]:.2f} | |",
                f"| retention | {label}: peak RSS MiB (idle {r.idle_rss_mib[mode]:.0f}) | "
                f"{r.peak_rss_mib[mode]:.0f} | |",
            ]
    q: QuotaFigures | None = parts.get("quota")
    if q is not None:
        median = statistics.median(q.pair_overheads) * 100
        lines += [
            f"| quota | pushes/s, quota off ({settings.quota_clients} in flight) | "
            f"{q.rate(OFF):.1f} | |",
            f"| quota | pushes/s, quota on | {q.rate(ON):.1f} | |",
            f"| quota | overhead % (median of {len(q.pair_overheads)} pairs {median:.1f}) | "
            f"{q.overhead * 100:.1f} | under 5 |",
            f"| quota | server CPU ms per push, off / on | "
            f"{q.cpu_ms(OFF):.2f} / {q.cpu_ms(ON):.2f} | |",
            f"| quota | server CPU overhead % | {q.cpu_overhead * 100:.1f} | |",
        ]
    c: ScrubFigures | None = parts.get("scrub")
    if c is not None:
        scrub_median = statistics.median(c.scrub_mib_s)
        hash_median = statistics.median(c.hashlib_mib_s)
        lines += [
            f"| scrub | MiB/s, unlimited, dry run ({c.blobs} blobs, "
            f"{c.bytes_hashed / MIB:.0f} MiB, median of {len(c.scrub_mib_s)}) | "
            f"{scrub_median:.0f} | |",
            f"| scrub | hashlib sha256 MiB/s, one core | {hash_median:.0f} | |",
            f"| scrub | scrub / hashlib | {c.ratio:.2f}x | at least 0.8x |",
        ]
    return "\n".join(lines)


def _doc(settings: Settings, info: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    r: RetentionFigures | None = parts.get("retention")
    if r is not None:
        summary["retention"] = {
            "tags": r.tags,
            "setup_s": r.setup_s,
            "wall_s": r.wall_s,
            "peak_rss_mib": r.peak_rss_mib,
            "idle_rss_mib": r.idle_rss_mib,
            "progress_messages": r.messages,
            "stats": r.stats,
        }
    q: QuotaFigures | None = parts.get("quota")
    if q is not None:
        summary["quota"] = {
            "images_per_s": {OFF: q.rate(OFF), ON: q.rate(ON)},
            "overhead": q.overhead,
            "server_cpu_ms_per_image": {OFF: q.cpu_ms(OFF), ON: q.cpu_ms(ON)},
            "cpu_overhead": q.cpu_overhead,
            "pair_overheads": q.pair_overheads,
            "repositories_under_quota": q.repositories_under_quota,
        }
    c: ScrubFigures | None = parts.get("scrub")
    if c is not None:
        summary["scrub"] = {
            "bytes_hashed": c.bytes_hashed,
            "blobs": c.blobs,
            "scrub_mib_s": c.scrub_mib_s,
            "hashlib_sha256_mib_s": c.hashlib_mib_s,
            "ratio": c.ratio,
        }
    return {
        "machine": info,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "settings": settings_of(settings),
        "summary": summary,
        "note": NO_SIDE_BY_SIDE,
    }


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-lifecycle-"))
    parts: dict[str, Any] = {}
    runners = {"retention": retention, "quota": quota, "scrub": scrub}
    try:
        for name in settings.parts:
            started = time.perf_counter()
            parts[name] = runners[name](settings, workdir)
            _say(f"{name}: {time.perf_counter() - started:.0f} s in all")
    finally:
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report(settings, info, parts))
    print(f"\nresults: {save('lifecycle', settings.results_dir, _doc(settings, info, parts))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
