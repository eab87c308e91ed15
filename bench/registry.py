"""The registry workload: Nimbus and CNCF Distribution side by side, in one run.

Same image, same clients, same machine, phases interleaved between the two servers so that
drift in the machine's load hits both alike:

- push and pull MiB/s of a generated image with skopeo (median of `--repeat` runs; every push
  goes to a fresh server, because skopeo remembers where blobs live and would mount them
  instead of uploading);
- manifest GET and HEAD requests/s and p99 latency under concurrent load, by tag;
- blob GET MiB/s, one large layer fetched repeatedly by concurrent clients;
- peak RSS (VmHWM) of each server's processes.

Results are printed as a table of ratios and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load, servers
from bench.image import MIB, BenchImage, write_layout
from bench.tls import make_tls
from nimbus.oci.mediatypes import MANIFEST_ACCEPT, OCI_MANIFEST

# What skopeo, containerd and docker send when they pull by tag.
ACCEPT = MANIFEST_ACCEPT
REPOSITORY = "bench/image"
TAG = "latest"
SKOPEO = "skopeo"
SKOPEO_TIMEOUT_S = 600
RESULTS_DIR = Path(__file__).resolve().parent / "results"
KINDS = (servers.NIMBUS, servers.DISTRIBUTION)
TITLES = {servers.NIMBUS: "Nimbus", servers.DISTRIBUTION: "Distribution"}
HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Settings:
    workers: int = 1
    quick: bool = False
    repeat: int = 3
    duration: float = 10.0
    warmup: float = 2.0
    threads: int = 2
    connections: int = 64
    blob_connections: int = 4
    layers: int = 4
    layer_mib: int = 64
    load: str = "auto"
    access_log: bool = True
    nimbus_env: tuple[tuple[str, str], ...] = ()
    kinds: tuple[str, ...] = KINDS
    # Both servers on HTTPS with the same certificate (no sendfile for blobs then).
    tls: bool = False
    keep: bool = False
    results_dir: Path = RESULTS_DIR

    def tool_for(self, method: str) -> str:
        """wrk for GETs when it is there; our generator for HEAD (wrk cannot) or on request."""
        if self.load == load.PYTHON or method == "HEAD":
            return load.PYTHON
        if self.load == load.WRK or load.wrk_available():
            return load.WRK
        return load.PYTHON


@dataclass
class Metric:
    key: str
    label: str
    better: str
    values: dict[str, float] = field(default_factory=dict)

    def ratio(self) -> float | None:
        """Nimbus / Distribution."""
        nimbus = self.values.get(servers.NIMBUS)
        reference = self.values.get(servers.DISTRIBUTION)
        if nimbus is None or not reference:
            return None
        return nimbus / reference


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench registry",
        description="Nimbus and CNCF Distribution side by side: push, pull, manifests, blobs.",
    )
    parser.add_argument("--workers", type=int, default=1, help="nimbus registry --workers N")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 4 x 8 MiB, one repetition, 2 s loads"
    )
    parser.add_argument("--repeat", type=int, help="pushes and pulls per server (3)")
    parser.add_argument("--duration", type=float, help="seconds of each load run (10)")
    parser.add_argument("--threads", type=int, default=2, help="load generator threads (2)")
    parser.add_argument("--connections", type=int, default=64, help="manifest load (64)")
    parser.add_argument("--blob-connections", type=int, default=4, help="blob load (4)")
    parser.add_argument("--layers", type=int, default=4, help="image layers (4)")
    parser.add_argument("--layer-mib", type=int, help="MiB per layer (64)")
    parser.add_argument(
        "--load",
        choices=["auto", load.WRK, load.PYTHON],
        default="auto",
        help="load generator for GETs: wrk when installed (auto), or the python one",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="turn both servers' access logs off"
    )
    parser.add_argument(
        "--nimbus-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for nimbus, e.g. NIMBUS_EVENT_LOOP=uvloop (repeatable)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(KINDS),
        help="which servers to run, comma-separated (nimbus,distribution)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="both servers on HTTPS with the same certificate"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.servers.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"--servers: choose from {', '.join(KINDS)}")
    if args.workers < 1:
        parser.error("--workers: at least 1")
    nimbus_env = []
    for item in args.nimbus_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--nimbus-env: expected KEY=VALUE, got {item!r}")
        nimbus_env.append((key, value))
    quick = bool(args.quick)
    return Settings(
        workers=args.workers,
        quick=quick,
        repeat=args.repeat or (1 if quick else 3),
        duration=args.duration or (2.0 if quick else 10.0),
        warmup=1.0 if quick else 2.0,
        threads=args.threads,
        connections=args.connections,
        blob_connections=args.blob_connections,
        layers=args.layers,
        layer_mib=args.layer_mib or (8 if quick else 64),
        load=args.load,
        access_log=not args.no_access_log,
        nimbus_env=tuple(nimbus_env),
        tls=args.tls,
        kinds=kinds,
        keep=args.keep,
        results_dir=args.results_dir,
    )


# -- the machine ----------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    return _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "distribution": _first_line([servers.DISTRIBUTION_BINARY, "--version"]),
        "skopeo": _first_line([SKOPEO, "--version"]),
        "wrk": _first_line([load.WRK, "--version"]) if load.wrk_available() else "absent",
        "nimbus_commit": _commit(),
    }


# -- the phases -----------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _skopeo(*args: str) -> float:
    """Run one `skopeo copy` and return its wall time in seconds."""
    argv = [SKOPEO, "copy", "--insecure-policy", "--quiet", *args]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT_S)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed


def _trust(server: servers.Server, side: str) -> str:
    """skopeo's TLS flag: verify against the bench CA over HTTPS, plain HTTP otherwise."""
    if server.tls is None:
        return f"--{side}-tls-verify=false"
    return f"--{side}-cert-dir={server.tls.trust_dir}"


def push(image: BenchImage, server: servers.Server) -> float:
    return _skopeo(_trust(server, "dest"), image.ref, f"docker://{server.host}/{REPOSITORY}:{TAG}")


def pull(image: BenchImage, server: servers.Server, into: Path) -> float:
    elapsed = _skopeo(
        _trust(server, "src"), f"docker://{server.host}/{REPOSITORY}:{TAG}", f"oci:{into}:{TAG}"
    )
    index = json.loads((into / "index.json").read_text())
    pulled = {m["digest"] for m in index["manifests"]}
    if image.manifest.digest not in pulled:
        raise RuntimeError(f"pulled {pulled}, expected {image.manifest.digest}")
    return elapsed


def check_manifest(image: BenchImage, server: servers.Server) -> None:
    """One GET by tag answers the pushed manifest: the load runs measure real answers."""
    request = urllib.request.Request(
        f"{server.url}/v2/{REPOSITORY}/manifests/{TAG}", headers={"Accept": ACCEPT}
    )
    with server.open(request, timeout=10) as response:
        digest = response.headers.get("Docker-Content-Digest")
        content_type = response.headers.get("Content-Type", "")
        body = response.read()
    if digest != image.manifest.digest or len(body) != image.manifest.size:
        raise RuntimeError(f"{server.kind}: GET by tag answered {digest}, {len(body)} bytes")
    if not content_type.startswith(OCI_MANIFEST):
        raise RuntimeError(f"{server.kind}: GET by tag answered Content-Type {content_type}")


def _order(kinds: tuple[str, ...], round_: int) -> tuple[str, ...]:
    return kinds if round_ % 2 == 0 else tuple(reversed(kinds))


class Run:
    """One benchmark run: the servers it started, what it measured."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.tls = make_tls(workdir / "tls") if settings.tls else None
        self.live: dict[str, servers.Server] = {}
        self.peak_rss_kib: dict[str, int] = dict.fromkeys(settings.kinds, 0)
        self.rss_by_phase: dict[str, dict[str, int]] = {k: {} for k in settings.kinds}
        self.push_s: dict[str, list[float]] = {k: [] for k in settings.kinds}
        self.pull_s: dict[str, list[float]] = {k: [] for k in settings.kinds}
        self.loads: dict[str, dict[str, load.LoadResult]] = {k: {} for k in settings.kinds}
        # Server CPU seconds used by each push, each pull and each load run: on a shared
        # machine these move far less with other work than wall-clock rates do.
        self.push_cpu_s: dict[str, list[float]] = {k: [] for k in settings.kinds}
        self.pull_cpu_s: dict[str, list[float]] = {k: [] for k in settings.kinds}
        self.load_cpu_s: dict[str, dict[str, float]] = {k: {} for k in settings.kinds}

    def _note_rss(self, kind: str, phase: str) -> None:
        server = self.live.get(kind)
        if server is None:
            return
        rss = server.peak_rss_kib()
        self.rss_by_phase[kind][phase] = rss
        self.peak_rss_kib[kind] = max(self.peak_rss_kib[kind], rss)

    def _fresh_server(self, kind: str, name: str) -> servers.Server:
        old = self.live.pop(kind, None)
        if old is not None:
            old.stop()
            shutil.rmtree(old.data_dir, ignore_errors=True)
        s = self.settings
        server = servers.make(
            kind, self.workdir, name, s.workers, s.access_log, dict(s.nimbus_env), self.tls
        )
        self.live[kind] = server.start()
        return server

    def stop_all(self) -> None:
        for server in self.live.values():
            server.stop()
        self.live.clear()

    def push_phase(self, image: BenchImage) -> None:
        for i in range(self.settings.repeat):
            for kind in _order(self.settings.kinds, i):
                server = self._fresh_server(kind, f"{kind}-{i}")
                cpu = server.cpu_seconds()
                elapsed = push(image, server)
                self.push_cpu_s[kind].append(server.cpu_seconds() - cpu)
                self.push_s[kind].append(elapsed)
                self._note_rss(kind, f"push-{i}")
                _say(f"push {i + 1}/{self.settings.repeat} {kind}: {elapsed:.2f} s")

    def pull_phase(self, image: BenchImage) -> None:
        for i in range(self.settings.repeat):
            for kind in _order(self.settings.kinds, i):
                into = self.workdir / f"pull-{kind}-{i}"
                server = self.live[kind]
                cpu = server.cpu_seconds()
                elapsed = pull(image, server, into)
                self.pull_cpu_s[kind].append(server.cpu_seconds() - cpu)
                shutil.rmtree(into, ignore_errors=True)
                self.pull_s[kind].append(elapsed)
                _say(f"pull {i + 1}/{self.settings.repeat} {kind}: {elapsed:.2f} s")
        for kind in self.settings.kinds:
            self._note_rss(kind, "pull")

    def load_phase(
        self, name: str, path: str, method: str, connections: int, round_: int, warmup: float
    ) -> None:
        s = self.settings
        tool = s.tool_for(method)
        for kind in _order(s.kinds, round_):
            server = self.live[kind]
            target = load.Target(f"{server.url}{path}", method, {"Accept": ACCEPT})
            if warmup > 0:
                load.run(target, tool, s.threads, connections, warmup)
            cpu = server.cpu_seconds()
            result = load.run(target, tool, s.threads, connections, s.duration)
            cpu = server.cpu_seconds() - cpu
            self.loads[kind][name] = result
            self.load_cpu_s[kind][name] = cpu
            self._note_rss(kind, name)
            _say(
                f"{name} {kind} ({tool}): {result.requests_per_s:,.0f} req/s, "
                f"{result.mib_per_s:,.1f} MiB/s, p99 {result.p99_ms:.2f} ms, "
                f"errors {result.errors}, server CPU {cpu:.2f} s"
            )
            if result.requests == 0:
                raise RuntimeError(f"{name} on {kind}: no request completed")


# -- results --------------------------------------------------------------------------------


def _median_rate(total_bytes: int, seconds: list[float]) -> float:
    return total_bytes / MIB / statistics.median(seconds)


def _per(run: Run, kind: str, name: str) -> float:
    """Server CPU seconds per request of load run `name`."""
    return run.load_cpu_s[kind][name] / max(1, run.loads[kind][name].requests)


def _per_gib(run: Run, kind: str, name: str) -> float:
    """Server CPU seconds per GiB read by the clients of load run `name`."""
    return run.load_cpu_s[kind][name] / max(1e-9, run.loads[kind][name].bytes / 2**30)


def metrics(run: Run, image: BenchImage) -> list[Metric]:
    found = [
        Metric("push_mib_s", "push MiB/s (skopeo)", HIGHER),
        Metric("pull_mib_s", "pull MiB/s (skopeo)", HIGHER),
        Metric("manifest_get_rps", "manifest GET req/s", HIGHER),
        Metric("manifest_get_p99_ms", "manifest GET p99 ms", LOWER),
        Metric("manifest_head_rps", "manifest HEAD req/s", HIGHER),
        Metric("manifest_head_p99_ms", "manifest HEAD p99 ms", LOWER),
        Metric("blob_get_mib_s", "blob GET MiB/s", HIGHER),
        Metric("peak_rss_mib", "peak RSS MiB", LOWER),
        Metric("push_cpu_s", "server CPU s per push", LOWER),
        Metric("pull_cpu_s", "server CPU s per pull", LOWER),
        Metric("manifest_get_cpu_us", "server CPU us per manifest GET", LOWER),
        Metric("manifest_head_cpu_us", "server CPU us per manifest HEAD", LOWER),
        Metric("blob_get_cpu_ms_gib", "server CPU ms per GiB of blob GET", LOWER),
    ]
    by_key = {m.key: m for m in found}
    for kind in run.settings.kinds:
        loads = run.loads[kind]
        values = {
            "push_mib_s": _median_rate(image.total_bytes, run.push_s[kind]),
            "pull_mib_s": _median_rate(image.total_bytes, run.pull_s[kind]),
            "manifest_get_rps": loads["manifest_get"].requests_per_s,
            "manifest_get_p99_ms": loads["manifest_get"].p99_ms,
            "manifest_head_rps": loads["manifest_head"].requests_per_s,
            "manifest_head_p99_ms": loads["manifest_head"].p99_ms,
            "blob_get_mib_s": loads["blob_get"].mib_per_s,
            "peak_rss_mib": run.peak_rss_kib[kind] / 1024,
            "push_cpu_s": statistics.median(run.push_cpu_s[kind]),
            "pull_cpu_s": statistics.median(run.pull_cpu_s[kind]),
            "manifest_get_cpu_us": _per(run, kind, "manifest_get") * 1e6,
            "manifest_head_cpu_us": _per(run, kind, "manifest_head") * 1e6,
            "blob_get_cpu_ms_gib": _per_gib(run, kind, "blob_get") * 1e3,
        }
        for key, value in values.items():
            by_key[key].values[kind] = value
    return found


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(found: list[Metric], kinds: tuple[str, ...]) -> str:
    header = ["metric", *(TITLES[k] for k in KINDS if k in kinds)]
    if len(kinds) == len(KINDS):
        header.append("Nimbus / Distribution")
    rows = [header, ["---", *(["---:"] * (len(header) - 1))]]
    for metric in found:
        label = metric.label + (" (lower is better)" if metric.better == LOWER else "")
        row = [label, *(_fmt(metric.values.get(k)) for k in KINDS if k in kinds)]
        if len(kinds) == len(KINDS):
            ratio = metric.ratio()
            row.append("-" if ratio is None else f"{ratio:.2f}x")
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def describe(settings: Settings, image: BenchImage, info: dict[str, Any], date: str) -> str:
    get_tool = settings.tool_for("GET")
    workers = f"{settings.workers} worker" + ("s" if settings.workers > 1 else "")
    return "\n".join(
        [
            f"Date: {date}. Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, "
            f"{info['memory_gib']} GiB, Linux {info['kernel']}, Python {info['python']}; "
            f"load average {info['loadavg_at_start'][0]} at start, "
            f"{info['loadavg_at_end'][0]} at end.",
            f"Nimbus {info['nimbus_commit']} ({workers}), {info['distribution']}, "
            f"{info['skopeo']}. Clients run on the same cores as the servers.",
            f"Image: {settings.layers} x {settings.layer_mib} MiB random gzip layers "
            f"({image.total_bytes / MIB:.1f} MiB); push and pull: median of "
            f"{settings.repeat}. Manifest GET ({get_tool}) and HEAD (python generator) by tag: "
            f"{settings.threads} threads, {settings.connections} connections, "
            f"{settings.duration:g} s. Blob GET ({get_tool}): one {settings.layer_mib} MiB "
            f"layer, {settings.blob_connections} connections, {settings.duration:g} s. "
            f"Access logs {'on' if settings.access_log else 'off'} for both."
            + (" Both on HTTPS (TLS, one certificate, P-256)." if settings.tls else "")
            + (
                " Nimbus environment: " + " ".join(f"{k}={v}" for k, v in settings.nimbus_env) + "."
                if settings.nimbus_env
                else ""
            ),
        ]
    )


def write_json(
    settings: Settings,
    run: Run,
    image: BenchImage,
    found: list[Metric],
    info: dict[str, Any],
    date: str,
) -> Path:
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = settings.results_dir / f"registry-{stamp}.json"
    doc = {
        "benchmark": "registry",
        "date": date,
        "machine": info,
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k not in ("results_dir", "keep")},
            "kinds": list(settings.kinds),
        },
        "image": {
            "layers": [asdict(d) for d in image.layers],
            "total_bytes": image.total_bytes,
        },
        "metrics": [
            {
                "key": m.key,
                "label": m.label,
                "better": m.better,
                **m.values,
                "ratio_nimbus_over_distribution": m.ratio(),
            }
            for m in found
        ],
        "servers": {
            kind: {
                "push_s": run.push_s[kind],
                "pull_s": run.pull_s[kind],
                "push_cpu_s": run.push_cpu_s[kind],
                "pull_cpu_s": run.pull_cpu_s[kind],
                "load_cpu_s": run.load_cpu_s[kind],
                "loads": {name: r.to_json() for name, r in run.loads[kind].items()},
                "peak_rss_kib": run.peak_rss_kib[kind],
                "rss_kib_by_phase": run.rss_by_phase[kind],
            }
            for kind in settings.kinds
        },
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# -- the run --------------------------------------------------------------------------------


def _check_tools(settings: Settings) -> None:
    missing = [SKOPEO] if shutil.which(SKOPEO) is None else []
    if servers.DISTRIBUTION in settings.kinds and shutil.which(servers.DISTRIBUTION_BINARY) is None:
        missing.append(servers.DISTRIBUTION_BINARY)
    if settings.load == load.WRK and not load.wrk_available():
        missing.append(load.WRK)
    if missing:
        raise SystemExit(f"missing: {' '.join(missing)} (make bench-deps installs them)")
    if settings.tool_for("GET") != load.WRK and settings.load == "auto":
        _say("wrk is not installed: GETs use the python load generator")


def run(settings: Settings) -> Path:
    _check_tools(settings)
    info = machine()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-"))
    bench_run = Run(settings, workdir)
    try:
        _say(f"work directory {workdir}; writing the image")
        image = write_layout(workdir / "image", settings.layers, settings.layer_mib * MIB)
        bench_run.push_phase(image)
        bench_run.pull_phase(image)
        for kind in settings.kinds:
            check_manifest(image, bench_run.live[kind])
        manifest = f"/v2/{REPOSITORY}/manifests/{TAG}"
        blob = f"/v2/{REPOSITORY}/blobs/{image.layers[0].digest}"
        s = settings
        bench_run.load_phase("manifest_get", manifest, "GET", s.connections, 0, s.warmup)
        bench_run.load_phase("manifest_head", manifest, "HEAD", s.connections, 1, s.warmup / 2)
        bench_run.load_phase("blob_get", blob, "GET", s.blob_connections, 0, 0)
    finally:
        bench_run.stop_all()
        if settings.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    found = metrics(bench_run, image)
    print()
    print(describe(settings, image, info, date))
    print()
    print(table(found, settings.kinds))
    busiest = max(info["loadavg_at_start"][0], info["loadavg_at_end"][0])
    if busiest > info["nproc"] / 2:
        print(
            f"\nNOTE: the machine was busy with other work (load average up to {busiest}); "
            "rates are noisy, the CPU-per-request rows much less so."
        )
    errors = {
        f"{kind} {name}": r.errors
        for kind in settings.kinds
        for name, r in bench_run.loads[kind].items()
        if r.errors
    }
    if errors:
        print(f"\nWARNING: requests failed during load: {errors}")
    path = write_json(settings, bench_run, image, found, info, date)
    print(f"\nresults: {path}")
    return path


def main(argv: list[str]) -> int:
    run(parse_args(argv))
    return 0
