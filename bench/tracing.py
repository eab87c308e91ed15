"""What metrics and tracing cost a push: Nimbus with OpenTelemetry off (the default) and on,
side by side with CNCF Distribution, and the share of a push's server CPU spent on metrics.

The three servers take turns batch after batch (the order rotates every round) so drift in the
machine's load hits all alike. The traced Nimbus exports every push span over OTLP/HTTP to a
collector of the bench's own (a separate process that reads and discards each export). The
metrics share comes from a last batch against Nimbus run under cProfile by CPU time: the
functions of prometheus_client and of Nimbus's metrics modules over all the server's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import servers
from bench.events import make_pushes, push_all
from bench.pushes import Side
from bench.registry import machine
from bench.results import save, settings_of

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OFF, ON, DISTRIBUTION = "nimbus", "nimbus+otel", servers.DISTRIBUTION
SIDES = (OFF, ON, DISTRIBUTION)

# A collector that answers every export and keeps only a count of the bytes (what a real one
# costs is not ours); it prints the count when stopped, showing the spans did leave.
_COLLECTOR = """
import sys
from aiohttp import web
received = [0, 0]
async def traces(request):
    received[0] += 1
    received[1] += len(await request.read())
    return web.Response(body=b"", content_type="application/x-protobuf")
app = web.Application()
app.router.add_post("/v1/traces", traces)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
print(received[0], received[1], flush=True)
"""

# The registry under cProfile timed by CPU time (wall time would charge it for waiting on a
# busy core); stats written when it stops.
_PROFILED = """
import cProfile, signal, sys, time
from nimbus.cli import main
profile = cProfile.Profile(time.process_time)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    profile.runcall(main, sys.argv[2:])
finally:
    profile.dump_stats(sys.argv[1])
"""
_METRICS_CODE = ("prometheus_client", "registry/metrics.py", "nimbus/metrics.py")


@dataclass(frozen=True)
class Settings:
    images: int = 200
    in_flight: int = 8
    rounds: int = 3
    layer_kib: int = 16
    keep: bool = False
    results_dir: Path = RESULTS_DIR


def parse_args(argv: list[str]) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench tracing",
        description="Push rate with tracing off and on, beside Distribution; metrics' share.",
    )
    p.add_argument("--images", type=int, default=d.images, help="images per batch (200)")
    p.add_argument("--in-flight", type=int, default=d.in_flight, help="concurrent pushes (8)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="batches per server (3)")
    p.add_argument("--layer-kib", type=int, default=d.layer_kib, help="layer size (16)")
    p.add_argument("--quick", action="store_true", help="a short run (checks the bench)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    images, rounds = (40, 1) if a.quick else (a.images, a.rounds)
    return Settings(images, a.in_flight, rounds, a.layer_kib, a.keep, a.results_dir)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _nimbus(workdir: Path, name: str, env: dict[str, str]) -> servers.Server:
    server = servers.make(servers.NIMBUS, workdir, name, access_log=False)
    server.env.update({"NIMBUS_GRPC_LISTEN": "", **env})
    return server


def _batch(server: servers.Server, side: Side, settings: Settings, label: str) -> float:
    pushes = make_pushes(settings.images, 1, settings.layer_kib * 1024, label)
    cpu = server.cpu_seconds()
    wall, durations = asyncio.run(push_all(server.url, pushes, settings.in_flight))
    side.cpu += server.cpu_seconds() - cpu
    side.images += len(pushes)
    side.wall += wall
    side.push_ms += [d * 1000 for d in durations]
    return len(pushes) / wall


def _metrics_share(stats_path: Path) -> float:
    stats = pstats.Stats(str(stats_path))
    total = metrics = 0.0
    for (filename, _, _), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]  # tottime: the function's own time, callees excluded
        total += own
        if any(part in filename for part in _METRICS_CODE):
            metrics += own
    return metrics / total if total else 0.0


def run(settings: Settings) -> tuple[dict[str, Side], float, tuple[int, int]]:
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-tracing-"))
    collector_port = servers.free_port()
    collector = subprocess.Popen(
        [sys.executable, "-c", _COLLECTOR, str(collector_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    exports = (0, 0)
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    results = {name: Side() for name in SIDES}
    live: dict[str, servers.Server] = {}
    try:
        time.sleep(1.0)  # the collector's start
        live[OFF] = _nimbus(workdir, "off", {}).start()
        live[ON] = _nimbus(workdir, "on", otel).start()
        live[DISTRIBUTION] = servers.make(
            servers.DISTRIBUTION, workdir, "distribution", access_log=False
        ).start()
        for round_ in range(settings.rounds):
            order = SIDES[round_ % 3 :] + SIDES[: round_ % 3]
            for name in order:
                label = f"r{round_}s{SIDES.index(name)}"
                rate = _batch(live[name], results[name], settings, label)
                _say(f"round {round_ + 1}: {name} {rate:.1f} images/s")
        for server in live.values():
            server.stop()
        # The profiled batch: its own server, so the profile holds nothing else.
        stats_path = workdir / "registry.prof"
        profiled = _nimbus(workdir, "profiled", {})
        arguments = profiled.argv[len(servers._nimbus_argv()) :]
        profiled.argv = [sys.executable, "-c", _PROFILED, str(stats_path), *arguments]
        profiled.start()
        try:
            _batch(profiled, Side(), settings, "profiled")
        finally:
            profiled.stop()
        share = _metrics_share(stats_path)
    finally:
        for server in live.values():
            server.stop()
        collector.terminate()
        out, _ = collector.communicate(timeout=10)
        fields = out.split()
        if len(fields) == 2:
            exports = (int(fields[0]), int(fields[1]))
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results, share, exports


def report(
    settings: Settings,
    results: dict[str, Side],
    share: float,
    exports: tuple[int, int],
    info: dict[str, Any],
) -> str:
    off, on, theirs = (results[name].summary() for name in SIDES)
    lines = [
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {info['nproc']} CPUs, "
        f"load average at start {' '.join(map(str, info['loadavg_at_start']))}; "
        f"Nimbus {info['nimbus_commit']}, Distribution {info.get('distribution', '')}.",
        f"{settings.rounds} batches of {settings.images} distinct images (a config and one "
        f"{settings.layer_kib} KiB layer) per server, {settings.in_flight} in flight.",
        "",
        "| metric | Nimbus, tracing off | Nimbus, tracing on | Distribution |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, key in (
        ("images/s", "images_per_s"),
        ("push p50 ms", "p50_ms"),
        ("server CPU ms per image", "cpu_ms_per_image"),
    ):
        lines.append(f"| {label} | {off[key]:,.1f} | {on[key]:,.1f} | {theirs[key]:,.1f} |")
    slower = (1 - on["images_per_s"] / off["images_per_s"]) * 100
    cpu = (on["cpu_ms_per_image"] / off["cpu_ms_per_image"] - 1) * 100
    lines += [
        "",
        f"Tracing on: push rate {slower:+.1f}% slower, server CPU per image {cpu:+.1f}% "
        f"(target: under 10%); {exports[0]} OTLP exports, {exports[1]:,} bytes, reached the "
        "collector.",
        f"Metrics (tracing off): {share * 100:.1f}% of the registry's CPU during pushes "
        "(target: under 3%).",
        f"Nimbus / Distribution, images/s: off {off['images_per_s'] / theirs['images_per_s']:.2f}x,"
        f" on {on['images_per_s'] / theirs['images_per_s']:.2f}x.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    info = machine()
    results, share, exports = run(settings)
    print()
    print(report(settings, results, share, exports, info))
    doc = {
        "machine": info,
        "settings": settings_of(settings),
        "summary": {name: side.summary() for name, side in results.items()},
        "metrics_cpu_share": share,
        "otlp_exports": {"requests": exports[0], "bytes": exports[1]},
    }
    print(f"\nresults: {save('tracing', settings.results_dir, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
