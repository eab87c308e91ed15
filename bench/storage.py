"""The storage workload: push and pull MiB/s on S3, Nimbus against Distribution, in one run.

Three registries take the same skopeo push and pull of a generated image, round after round
in alternating order:

- Nimbus on its S3 driver,
- Nimbus on its filesystem driver (what S3 costs Nimbus),
- CNCF Distribution (Debian's `docker-registry`) on its S3 driver,

the two S3 ones on one local S3-compatible server (moto in server mode, on loopback), each
round on a fresh bucket. Both S3 drivers proxy blob GETs (no redirects) and use 10 MiB parts.
Besides rates, the server CPU seconds of each push and pull are reported: on a shared
machine they move far less with other work than wall-clock rates do. The local S3 server is
Python and shares the cores, so absolute rates say little about AWS S3; the ratios between
the two S3 drivers, on the same server, are the point.

Results are printed as a table and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import servers
from bench.image import MIB, BenchImage, write_layout
from bench.registry import RESULTS_DIR, machine, pull, push

NIMBUS_S3 = "nimbus-s3"
NIMBUS_FS = "nimbus-fs"
DISTRIBUTION_S3 = "distribution-s3"
TARGETS = (NIMBUS_S3, NIMBUS_FS, DISTRIBUTION_S3)
TITLES = {
    NIMBUS_S3: "Nimbus S3",
    NIMBUS_FS: "Nimbus filesystem",
    DISTRIBUTION_S3: "Distribution S3",
}
REGION = "us-east-1"
# Registries here serve the OCI API only: no gRPC admin port to collide with another run's.
NIMBUS_ENV = {"NIMBUS_GRPC_LISTEN": ""}
# The local S3 server takes any key; both registries still sign every request with it.
ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret"
PART_BYTES = 10 * MIB


@dataclass(frozen=True)
class Settings:
    layers: int = 4
    layer_mib: int = 32
    repeat: int = 3
    targets: tuple[str, ...] = TARGETS
    keep: bool = False
    results_dir: Path = RESULTS_DIR


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench storage",
        description="push/pull MiB/s: Nimbus on S3 and on disk, Distribution on S3",
    )
    parser.add_argument("--layers", type=int, default=4, help="layers in the image (4)")
    parser.add_argument("--layer-mib", type=int, default=32, help="MiB per layer (32)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; rates are medians (3)")
    parser.add_argument("--quick", action="store_true", help="2 x 8 MiB, one round")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {', '.join(TARGETS)}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"--targets: unknown {', '.join(unknown) or '(none)'}")
    if args.quick:
        return Settings(2, 8, 1, targets, args.keep)
    if args.layers < 1 or args.layer_mib < 1 or args.repeat < 1:
        parser.error("--layers, --layer-mib and --repeat: at least 1")
    return Settings(args.layers, args.layer_mib, args.repeat, targets, args.keep)


# -- the local S3 server ---------------------------------------------------------------------


class S3Store:
    """moto's S3 server on a loopback port; large objects spill to files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = servers.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._buckets = 0

    @property
    def endpoint(self) -> str:
        return f"http://{servers.LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Store:
        spool = self.root / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        with open(self.root / "s3.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", servers.LOOPBACK, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "TMPDIR": str(spool)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the S3 server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the S3 server did not answer on {self.endpoint}")

    def new_bucket(self) -> str:
        self._buckets += 1
        bucket = f"bench-{self._buckets}"
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass
        return bucket

    def cpu_seconds(self) -> float:
        return servers.cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def aws_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def nimbus_s3(workdir: Path, name: str, store: S3Store, bucket: str) -> servers.Server:
    env = {
        **NIMBUS_ENV,
        **aws_env(),
        "NIMBUS_STORAGE_DRIVER": "s3",
        "NIMBUS_STORAGE_S3_BUCKET": bucket,
        "NIMBUS_STORAGE_S3_REGION": REGION,
        "NIMBUS_STORAGE_S3_ENDPOINT_URL": store.endpoint,
        "NIMBUS_STORAGE_S3_PATH_STYLE": "true",
        "NIMBUS_STORAGE_S3_MULTIPART_PART_SIZE": str(PART_BYTES),
    }
    return servers.nimbus(workdir, name, env=env)


def distribution_s3_config(port: int, store: S3Store, bucket: str) -> str:
    """Distribution's YAML: its S3 driver on the local server, proxying blobs like Nimbus."""
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  s3:",
            f"    accesskey: {ACCESS_KEY}",
            f"    secretkey: {SECRET_KEY}",
            f"    region: {REGION}",
            # With an endpoint, Distribution addresses the bucket in the path.
            f"    regionendpoint: {store.endpoint}",
            f"    bucket: {bucket}",
            "    secure: false",
            "    v4auth: true",
            f"    chunksize: {PART_BYTES}",
            "    rootdirectory: /",
            "  delete:",
            "    enabled: true",
            "  redirect:",
            "    disable: true",
            "  cache:",
            "    blobdescriptor: inmemory",
            "http:",
            f"  addr: {servers.LOOPBACK}:{port}",
            "",
        ]
    )


def distribution_s3(workdir: Path, name: str, store: S3Store, bucket: str) -> servers.Server:
    binary = shutil.which(servers.DISTRIBUTION_BINARY)
    if binary is None:
        raise RuntimeError(f"{servers.DISTRIBUTION_BINARY} is not installed")
    port = servers.free_port()
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(distribution_s3_config(port, store, bucket))
    return servers.Server(
        servers.DISTRIBUTION,
        [binary, "serve", str(config)],
        port,
        root / "data",
        root / "server.log",
        # The AWS SDK for Go refuses a CA bundle with its custom transport; the endpoint is
        # plain HTTP on loopback, so there is nothing to verify.
        {**aws_env(), "AWS_CA_BUNDLE": ""},
    )


# -- the run --------------------------------------------------------------------------------


@dataclass
class Measured:
    push_s: list[float] = field(default_factory=list)
    pull_s: list[float] = field(default_factory=list)
    push_cpu_s: list[float] = field(default_factory=list)
    pull_cpu_s: list[float] = field(default_factory=list)
    # CPU the S3 server spent serving this registry's push and pull.
    s3_push_cpu_s: list[float] = field(default_factory=list)
    s3_pull_cpu_s: list[float] = field(default_factory=list)
    peak_rss_kib: int = 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _server(target: str, workdir: Path, name: str, store: S3Store) -> servers.Server:
    if target == NIMBUS_FS:
        return servers.nimbus(workdir, name, env=NIMBUS_ENV)
    if target == NIMBUS_S3:
        return nimbus_s3(workdir, name, store, store.new_bucket())
    return distribution_s3(workdir, name, store, store.new_bucket())


def round_trip(
    target: str, image: BenchImage, workdir: Path, name: str, store: S3Store, into: Measured
) -> None:
    """A fresh registry (and bucket): one push, then one pull of what was pushed."""
    server = _server(target, workdir, name, store).start()
    try:
        cpu, s3_cpu = server.cpu_seconds(), store.cpu_seconds()
        into.push_s.append(push(image, server))
        into.push_cpu_s.append(server.cpu_seconds() - cpu)
        into.s3_push_cpu_s.append(store.cpu_seconds() - s3_cpu)
        pulled = workdir / f"{name}-pulled"
        cpu, s3_cpu = server.cpu_seconds(), store.cpu_seconds()
        into.pull_s.append(pull(image, server, pulled))
        into.pull_cpu_s.append(server.cpu_seconds() - cpu)
        into.s3_pull_cpu_s.append(store.cpu_seconds() - s3_cpu)
        into.peak_rss_kib = max(into.peak_rss_kib, server.peak_rss_kib())
        shutil.rmtree(pulled, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def rows(settings: Settings, image: BenchImage, found: dict[str, Measured]) -> list[list[str]]:
    mib = image.total_bytes / MIB

    def rate(seconds: list[float]) -> float:
        return mib / statistics.median(seconds)

    figures: list[tuple[str, dict[str, float], bool]] = [
        ("push MiB/s", {t: rate(m.push_s) for t, m in found.items()}, True),
        ("pull MiB/s", {t: rate(m.pull_s) for t, m in found.items()}, True),
        (
            "registry CPU s per push",
            {t: statistics.median(m.push_cpu_s) for t, m in found.items()},
            False,
        ),
        (
            "registry CPU s per pull",
            {t: statistics.median(m.pull_cpu_s) for t, m in found.items()},
            False,
        ),
        (
            "S3 server CPU s per push",
            {t: statistics.median(m.s3_push_cpu_s) for t, m in found.items() if t != NIMBUS_FS},
            False,
        ),
        (
            "S3 server CPU s per pull",
            {t: statistics.median(m.s3_pull_cpu_s) for t, m in found.items() if t != NIMBUS_FS},
            False,
        ),
        ("peak RSS MiB", {t: m.peak_rss_kib / 1024 for t, m in found.items()}, False),
    ]
    compare = NIMBUS_S3 in found and DISTRIBUTION_S3 in found
    header = ["metric", *(TITLES[t] for t in settings.targets)]
    if compare:
        header.append("Nimbus S3 / Distribution S3")
    table = [header, ["---", *(["---:"] * (len(header) - 1))]]
    for label, values, higher in figures:
        row = [label + ("" if higher else " (lower is better)")]
        row += [_fmt(values.get(t)) for t in settings.targets]
        if compare:
            ours, theirs = values.get(NIMBUS_S3), values.get(DISTRIBUTION_S3)
            if ours and theirs:
                row.append(f"{(ours / theirs if higher else theirs / ours):.2f}x")
            else:
                row.append("-")
        table.append(row)
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def run(settings: Settings) -> Path:
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="nimbus-bench-storage-"))
    store = S3Store(workdir / "s3")
    try:
        info = machine()
        _say(f"image: {settings.layers} x {settings.layer_mib} MiB in {workdir}")
        image = write_layout(workdir / "image", settings.layers, settings.layer_mib * MIB)
        store.start()
        found = {t: Measured() for t in settings.targets}
        for round_ in range(settings.repeat):
            order = settings.targets if round_ % 2 == 0 else tuple(reversed(settings.targets))
            for target in order:
                _say(f"round {round_ + 1}/{settings.repeat}: {target}")
                round_trip(target, image, workdir, f"{target}-{round_}", store, found[target])
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        table = rows(settings, image, found)
    finally:
        store.stop()
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"Date: {date}. Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}; "
        f"load average {info['loadavg_at_start'][0]} at start, "
        f"{info['loadavg_at_end'][0]} at end. Nimbus {info['nimbus_commit']}, "
        f"{info['distribution']}, {info['skopeo']}; local S3 server: moto, on the same cores."
    )
    print(
        f"Image: {settings.layers} x {settings.layer_mib} MiB random gzip layers "
        f"({image.total_bytes / MIB:.1f} MiB); median of {settings.repeat} rounds, each on a "
        f"fresh registry and bucket; {PART_BYTES // MIB} MiB parts for both S3 drivers.\n"
    )
    print("\n".join("| " + " | ".join(r) + " |" for r in table))
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = settings.results_dir / f"storage-{stamp}.json"
    doc: dict[str, Any] = {
        "benchmark": "storage",
        "date": date,
        "machine": info,
        "settings": {
            "layers": settings.layers,
            "layer_mib": settings.layer_mib,
            "repeat": settings.repeat,
            "targets": list(settings.targets),
            "part_bytes": PART_BYTES,
        },
        "image_bytes": image.total_bytes,
        "table": table,
        "runs": {t: vars(m) for t, m in found.items()},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten: {path}")
    return path


def main(argv: list[str]) -> int:
    run(parse_args(argv))
    return 0
