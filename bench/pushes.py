"""Small-image pushes, Nimbus and CNCF Distribution side by side: what CI systems and artifact
tools (oras, helm, cosign) do all day.

Each batch pushes distinct one-layer images (a config and one layer, HEAD + POST + PUT per blob,
then the manifest PUT by tag) with N clients in flight. Both registries run at once and take
turns batch after batch (the order flips every round) so that drift in the machine's load hits
both alike. Nimbus fsyncs every acknowledged blob, manifest and tag; Distribution does not.
Reported: images/s over all batches, p50/p99 of one image's push, and server CPU per image.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import servers
from bench.events import make_pushes, percentile, push_all
from bench.registry import machine
from bench.results import save, settings_of

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KINDS = (servers.NIMBUS, servers.DISTRIBUTION)


@dataclass(frozen=True)
class Settings:
    images: int = 200
    in_flight: tuple[int, ...] = (8, 32)
    rounds: int = 3
    layer_kib: int = 16
    workers: int = 1
    keep: bool = False
    results_dir: Path = RESULTS_DIR


@dataclass
class Side:
    """One server at one concurrency: every batch's wall time, push durations and CPU."""

    images: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    push_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "images_per_s": self.images / self.wall,
            "p50_ms": percentile(self.push_ms, 50),
            "p99_ms": percentile(self.push_ms, 99),
            "cpu_ms_per_image": self.cpu / self.images * 1000,
        }


def parse_args(argv: list[str]) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench pushes",
        description="Small-image pushes: Nimbus and CNCF Distribution side by side.",
    )
    p.add_argument("--images", type=int, default=d.images, help="images per batch (200)")
    p.add_argument(
        "--in-flight",
        default=",".join(map(str, d.in_flight)),
        help="concurrent pushes, comma-separated (8,32)",
    )
    p.add_argument("--rounds", type=int, default=d.rounds, help="batches per server (3)")
    p.add_argument("--layer-kib", type=int, default=d.layer_kib, help="layer size (16)")
    p.add_argument("--workers", type=int, default=d.workers, help="nimbus registry --workers")
    p.add_argument("--quick", action="store_true", help="a short run (checks the bench)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    in_flight = tuple(int(x) for x in a.in_flight.split(",") if x.strip())
    if a.quick:
        return Settings(20, in_flight, 1, a.layer_kib, a.workers, a.keep, a.results_dir)
    return Settings(a.images, in_flight, a.rounds, a.layer_kib, a.workers, a.keep, a.results_dir)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _start(kind: str, workdir: Path, workers: int) -> servers.Server:
    server = servers.make(kind, workdir, kind, workers=workers, access_log=False)
    if kind == servers.NIMBUS:
        server.env["NIMBUS_GRPC_LISTEN"] = ""
    return server.start()


def run(settings: Settings) -> dict[int, dict[str, Side]]:
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-pushes-"))
    results: dict[int, dict[str, Side]] = {
        n: {k: Side() for k in KINDS} for n in settings.in_flight
    }
    live: dict[str, servers.Server] = {}
    try:
        for kind in KINDS:
            live[kind] = _start(kind, workdir, settings.workers)
        for in_flight in settings.in_flight:
            for round_ in range(settings.rounds):
                for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                    label = f"c{in_flight}r{round_}{kind[0]}"
                    pushes = make_pushes(settings.images, 1, settings.layer_kib * 1024, label)
                    server, side = live[kind], results[in_flight][kind]
                    cpu = server.cpu_seconds()
                    try:
                        wall, durations = asyncio.run(push_all(server.url, pushes, in_flight))
                    except Exception:
                        _say(f"pushing to {kind} failed; its log ends with:\n{server.log_tail()}")
                        raise
                    side.cpu += server.cpu_seconds() - cpu
                    side.images += len(pushes)
                    side.wall += wall
                    side.push_ms += [d * 1000 for d in durations]
                    rate = len(pushes) / wall
                    _say(f"{in_flight} in flight, round {round_ + 1}: {kind} {rate:.1f}/s")
    finally:
        for server in live.values():
            server.stop()
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(settings: Settings, results: dict[int, dict[str, Side]], info: dict[str, Any]) -> str:
    lines = [
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {info['nproc']} CPUs, "
        f"{info['cpu']}, load average at start {' '.join(map(str, info['loadavg_at_start']))}; "
        f"Nimbus {info['nimbus_commit']} "
        f"({settings.workers} worker(s), fsync on), Distribution {info.get('distribution', '')}.",
        f"Images: a config and one {settings.layer_kib} KiB layer each, distinct; "
        f"{settings.rounds} batches of {settings.images} per server and concurrency.",
        "",
        "| in flight | metric | Nimbus | Distribution | Nimbus / Distribution |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    rows = (
        ("images/s", "images_per_s"),
        ("push p50 ms (lower is better)", "p50_ms"),
        ("push p99 ms (lower is better)", "p99_ms"),
        ("server CPU ms per image (lower is better)", "cpu_ms_per_image"),
    )
    for in_flight, sides in results.items():
        ours, theirs = sides[servers.NIMBUS].summary(), sides[servers.DISTRIBUTION].summary()
        for label, key in rows:
            ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
            lines.append(
                f"| {in_flight} | {label} | {ours[key]:,.1f} | {theirs[key]:,.1f} | {ratio:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    info = machine()
    results = run(settings)
    print()
    print(report(settings, results, info))
    doc = {
        "machine": info,
        "settings": settings_of(settings),
        "summary": {
            str(n): {k: side.summary() for k, side in sides.items()} for n, sides in results.items()
        },
    }
    print(f"\nresults: {save('pushes', settings.results_dir, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
