"""The pull-through cache, Nimbus and CNCF Distribution's proxy mode side by side, in front of
the same upstream (a plain Distribution holding the image).

- direct pull: skopeo straight from the upstream, the baseline a cache is measured against;
- cold pull: skopeo through a cache that holds nothing (a fresh cache server every time);
- warm pull: the same pull again, everything cached;
- warm manifest GET req/s, by tag and by digest (Distribution's proxy asks the upstream for
  every tag; Nimbus within the tag's TTL does not);
- concurrent cold pulls: N clients pull the image at once from an empty cache (total time, and
  the bytes the upstream sent, read from its access log: one copy is the target).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import load, servers
from bench.image import MIB, BenchImage, write_layout
from bench.registry import ACCEPT, REPOSITORY, TAG, machine, pull, push
from bench.results import save, settings_of

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KINDS = (servers.NIMBUS, servers.DISTRIBUTION)
# Distribution's access log (combined format): request line, status, bytes sent.
_ACCESS = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3}) (\d+)')


@dataclass(frozen=True)
class Settings:
    layers: int = 4
    layer_mib: int = 64
    repeat: int = 2
    clients: int = 16
    duration: float = 5.0
    connections: int = 16
    threads: int = 2
    keep: bool = False
    results_dir: Path = RESULTS_DIR


@dataclass
class Side:
    cold_s: list[float] = field(default_factory=list)
    warm_s: list[float] = field(default_factory=list)
    cold_upstream_bytes: list[int] = field(default_factory=list)
    by_tag_rps: float = 0.0
    by_digest_rps: float = 0.0
    concurrent_s: float = 0.0
    concurrent_upstream_bytes: int = 0
    peak_rss_mib: float = 0.0


def parse_args(argv: list[str]) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench proxy",
        description="Pull-through cache: Nimbus and Distribution's proxy mode side by side.",
    )
    p.add_argument("--layers", type=int, default=d.layers, help="layers of the image (4)")
    p.add_argument("--layer-mib", type=int, default=d.layer_mib, help="MiB per layer (64)")
    p.add_argument("--repeat", type=int, default=d.repeat, help="cold/warm pulls per cache (2)")
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent cold pulls (16)")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds per GET load")
    p.add_argument("--quick", action="store_true", help="a short run (checks the bench)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    if a.quick:
        return Settings(2, 4, 1, 4, 1.0, 4, 1, a.keep, a.results_dir)
    return Settings(
        a.layers, a.layer_mib, a.repeat, a.clients, a.duration, 16, 2, a.keep, a.results_dir
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class AccessLog:
    """Bytes an upstream Distribution sent for GETs, from its access log, since a mark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def bytes_sent(self) -> int:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        return sum(
            int(sent) for _path, status, sent in _ACCESS.findall(text) if status in ("200", "206")
        )


def _cache(kind: str, workdir: Path, name: str, upstream: servers.Server) -> servers.Server:
    """An empty cache of ``upstream`` serving its names unprefixed (as a docker mirror)."""
    if kind == servers.NIMBUS:
        server = servers.nimbus(workdir, name, access_log=False)
        config = workdir / name / "proxy.yaml"
        section = {"upstreams": [{"name": "upstream", "url": upstream.url}], "default": "upstream"}
        config.write_text(json.dumps({"proxy": section}))
        server.argv += ["--config", str(config)]
        server.env["NIMBUS_GRPC_LISTEN"] = ""
        return server.start()
    return servers.distribution(workdir, name, access_log=False, proxy_remote=upstream.url).start()


async def _pull_like_a_client(session: aiohttp.ClientSession, base: str, image: BenchImage) -> None:
    """Manifest by tag, then config and layers one after another, each checked."""
    async with session.get(
        f"{base}/v2/{REPOSITORY}/manifests/{TAG}", headers={"Accept": ACCEPT}
    ) as response:
        response.raise_for_status()
        if response.headers.get("Docker-Content-Digest") != image.manifest.digest:
            raise RuntimeError("the cache answered another manifest")
        await response.read()
    for blob in (image.config, *image.layers):
        digest = hashlib.sha256()
        async with session.get(f"{base}/v2/{REPOSITORY}/blobs/{blob.digest}") as response:
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(MIB):
                digest.update(chunk)
        if f"sha256:{digest.hexdigest()}" != blob.digest:
            raise RuntimeError(f"a client read wrong bytes for {blob.digest}")


async def _concurrent(base: str, image: BenchImage, clients: int) -> float:
    timeout = aiohttp.ClientTimeout(total=600)
    started = time.monotonic()
    sessions = [aiohttp.ClientSession(timeout=timeout) for _ in range(clients)]
    try:
        await asyncio.gather(*(_pull_like_a_client(s, base, image) for s in sessions))
    finally:
        for session in sessions:
            await session.close()
    return time.monotonic() - started


def _gets(server: servers.Server, reference: str, s: Settings) -> float:
    target = load.Target(
        f"{server.url}/v2/{REPOSITORY}/manifests/{reference}", "GET", {"Accept": ACCEPT}
    )
    load.run(target, "wrk" if load.wrk_available() else "python", s.threads, s.connections, 0.5)
    result = load.run(
        target, "wrk" if load.wrk_available() else "python", s.threads, s.connections, s.duration
    )
    if result.requests == 0 or result.errors:
        raise RuntimeError(f"manifest GETs on {server.kind}: {result.errors} errors")
    return result.requests_per_s


def run(settings: Settings, workdir: Path) -> tuple[BenchImage, list[float], dict[str, Side]]:
    s = settings
    _say(f"writing a {s.layers} x {s.layer_mib} MiB image")
    image = write_layout(workdir / "image", s.layers, s.layer_mib * MIB, TAG)
    upstream = servers.distribution(workdir, "upstream").start()
    access = AccessLog(upstream.log_path)
    sides = {kind: Side() for kind in KINDS}
    try:
        push(image, upstream)
        direct = []
        for i in range(s.repeat):
            direct.append(pull(image, upstream, workdir / f"direct-{i}"))
            shutil.rmtree(workdir / f"direct-{i}", ignore_errors=True)
            _say(f"direct pull {i + 1}: {direct[-1]:.2f} s")
        for i in range(s.repeat):
            for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
                side = sides[kind]
                cache = _cache(kind, workdir, f"{kind}-{i}", upstream)
                try:
                    access.mark()
                    side.cold_s.append(pull(image, cache, workdir / "pulled"))
                    side.cold_upstream_bytes.append(access.bytes_sent())
                    shutil.rmtree(workdir / "pulled", ignore_errors=True)
                    side.warm_s.append(pull(image, cache, workdir / "pulled"))
                    shutil.rmtree(workdir / "pulled", ignore_errors=True)
                    if i == s.repeat - 1:
                        side.by_tag_rps = _gets(cache, TAG, s)
                        side.by_digest_rps = _gets(cache, image.manifest.digest, s)
                    side.peak_rss_mib = max(side.peak_rss_mib, cache.peak_rss_kib() / 1024)
                finally:
                    cache.stop()
                _say(f"{kind} {i + 1}: cold {side.cold_s[-1]:.2f} s, warm {side.warm_s[-1]:.2f} s")
        for kind in KINDS:
            side = sides[kind]
            cache = _cache(kind, workdir, f"{kind}-concurrent", upstream)
            try:
                access.mark()
                side.concurrent_s = asyncio.run(_concurrent(cache.url, image, s.clients))
                side.concurrent_upstream_bytes = access.bytes_sent()
                side.peak_rss_mib = max(side.peak_rss_mib, cache.peak_rss_kib() / 1024)
            finally:
                cache.stop()
            _say(
                f"{kind}: {s.clients} concurrent cold pulls {side.concurrent_s:.2f} s, "
                f"upstream sent {side.concurrent_upstream_bytes / MIB:.1f} MiB"
            )
    finally:
        upstream.stop()
    return image, direct, sides


def _mib_s(image: BenchImage, seconds: list[float]) -> float:
    return image.total_bytes / MIB / statistics.median(seconds)


def summary(image: BenchImage, direct: list[float], sides: dict[str, Side]) -> dict[str, Any]:
    out: dict[str, Any] = {"direct_pull_mib_s": _mib_s(image, direct)}
    for kind, side in sides.items():
        out[kind] = {
            "cold_pull_mib_s": _mib_s(image, side.cold_s),
            "warm_pull_mib_s": _mib_s(image, side.warm_s),
            "cold_upstream_mib": max(side.cold_upstream_bytes) / MIB,
            "manifest_get_by_tag_rps": side.by_tag_rps,
            "manifest_get_by_digest_rps": side.by_digest_rps,
            "concurrent_cold_s": side.concurrent_s,
            "concurrent_upstream_mib": side.concurrent_upstream_bytes / MIB,
            "peak_rss_mib": side.peak_rss_mib,
        }
    return out


def report(
    settings: Settings, image: BenchImage, result: dict[str, Any], info: dict[str, Any]
) -> str:
    ours, theirs = result[servers.NIMBUS], result[servers.DISTRIBUTION]
    image_mib = image.total_bytes / MIB
    lines = [
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {info['nproc']} CPUs, "
        f"load average at start {' '.join(map(str, info['loadavg_at_start']))}; "
        f"Nimbus {info['nimbus_commit']}, Distribution {info.get('distribution', '')} in proxy "
        f"mode; the upstream is a plain Distribution. Image: {settings.layers} x "
        f"{settings.layer_mib} MiB layers ({image_mib:.1f} MiB). Direct pull from the upstream: "
        f"{result['direct_pull_mib_s']:.1f} MiB/s.",
        "",
        "| metric | Nimbus | Distribution proxy | Nimbus / Distribution |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = (
        ("cold pull MiB/s (skopeo)", "cold_pull_mib_s", True),
        ("warm pull MiB/s (skopeo)", "warm_pull_mib_s", True),
        ("upstream MiB sent for a cold pull", "cold_upstream_mib", False),
        ("warm manifest GET by tag, req/s", "manifest_get_by_tag_rps", True),
        ("warm manifest GET by digest, req/s", "manifest_get_by_digest_rps", True),
        (f"{settings.clients} concurrent cold pulls, s", "concurrent_cold_s", False),
        (f"upstream MiB sent for those {settings.clients}", "concurrent_upstream_mib", False),
        ("peak RSS MiB (lower is better)", "peak_rss_mib", False),
    )
    for label, key, higher in rows:
        a, b = ours[key], theirs[key]
        ratio = (a / b if higher else b / a) if a and b else float("nan")
        lines.append(f"| {label} | {a:,.1f} | {b:,.1f} | {ratio:.2f}x |")
    lines += [
        "",
        "Ratios are better-is-higher (time, bytes and memory are inverted).",
        f"Cold pull against a direct pull from the upstream: Nimbus "
        f"{ours['cold_pull_mib_s'] / result['direct_pull_mib_s']:.2f}x, Distribution "
        f"{theirs['cold_pull_mib_s'] / result['direct_pull_mib_s']:.2f}x.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    for tool in ("skopeo", servers.DISTRIBUTION_BINARY):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make bench-deps)", file=sys.stderr)
            return 2
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-proxy-"))
    try:
        image, direct, sides = run(settings, workdir)
    finally:
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result = summary(image, direct, sides)
    print()
    print(report(settings, image, result, info))
    doc = {"machine": info, "settings": settings_of(settings), "summary": result}
    print(f"\nresults: {save('proxy', settings.results_dir, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
