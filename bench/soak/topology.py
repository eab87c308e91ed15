"""The processes of the soak: S3, a 3-node NATS cluster, registries a and b (two replicas over
one S3 bucket, two workers each) and c (filesystem), two notifiers and the replicators of a and
b. Each is a `Service` the fault injector can kill, freeze and restart by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import servers
from tests.fixtures.nats import nats_server_binary
from tests.fixtures.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

LOOPBACK = servers.LOOPBACK
NIMBUS = [sys.executable, "-m", "nimbus.cli"]
WORKERS = 2
# The notifier waits for receivers that are down instead of dead-lettering within the soak.
NOTIFIER_ENV = {
    "NIMBUS_DELIVERY_TIMEOUT": "2",
    "NIMBUS_DELIVERY_MAX_ATTEMPTS": "100000",
    "NIMBUS_DELIVERY_BACKOFF_INITIAL": "0.1",
    "NIMBUS_DELIVERY_BACKOFF_MAX": "2",
    "NIMBUS_DELIVERY_BREAKER_FAILURES": "5",
    "NIMBUS_DELIVERY_BREAKER_COOLDOWN": "1",
    "NIMBUS_CONSUMER_ACK_WAIT": "5",
}
# Failure records (an image a peer answered 500 to through every try) are tried again within
# the drain.
REPLICATOR_ENV = {"NIMBUS_WORKER_FAILURE_RETRY_INTERVAL": "10"}
S3_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class Service:
    """One process (and its workers) in a process group of its own."""

    name: str
    kind: str  # s3, nats, registry, notifier, replicator
    argv: list[str]
    log_path: Path
    ready: Callable[[Service], bool]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_kib: int = 0
    frozen: bool = False
    port: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, within: float = 90.0) -> Service:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                process_group=0,
                preexec_fn=servers._die_with_parent,
            )
        deadline = time.monotonic() + within
        while not self.ready(self):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {within}s: {self.tail()}")
            time.sleep(0.1)
        return self

    def _group(self, signum: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL to the process and its workers."""
        self.sample()
        self._group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self.frozen = False

    def stop(self) -> None:
        if not self.running:
            return
        self.sample()
        self._group(signal.SIGCONT)
        self._group(signal.SIGTERM)
        assert self.proc is not None
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self._group(signal.SIGKILL)
            self.proc.wait()
        self.frozen = False

    def freeze(self) -> None:
        self._group(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._group(signal.SIGCONT)
        self.frozen = False

    def workers(self) -> list[int]:
        """The pids below the main process (a registry's workers)."""
        return servers.process_tree(self.proc.pid)[1:] if self.running and self.proc else []

    def sample(self) -> None:
        if self.running and self.proc is not None:
            tree = servers.process_tree(self.proc.pid)
            rss = sum(servers.peak_rss_kib(pid) for pid in tree)
            self.peak_rss_kib = max(self.peak_rss_kib, rss)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Site:
    name: str
    replicas: list[Service]

    @property
    def urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{r.port}" for r in self.replicas]


@dataclass
class Topology:
    workdir: Path
    s3: Service | None = None
    nats: list[Service] = field(default_factory=list)
    sites: dict[str, Site] = field(default_factory=dict)
    notifiers: list[Service] = field(default_factory=list)
    replicators: dict[str, Service] = field(default_factory=dict)

    @property
    def nats_args(self) -> list[str]:
        return [arg for node in self.nats for arg in ("--nats", f"nats://{LOOPBACK}:{node.port}")]

    def services(self) -> list[Service]:
        found = [*self.nats]
        for site in self.sites.values():
            found += site.replicas
        return found + self.notifiers + list(self.replicators.values())

    def sample(self) -> None:
        for service in [*self.services(), *([self.s3] if self.s3 else [])]:
            service.sample()

    def stop(self) -> None:
        for service in reversed([*([self.s3] if self.s3 else []), *self.services()]):
            service.stop()


def _nats(top: Topology, count: int = 3) -> None:
    ports = servers_ports(count * 2)
    client, cluster = ports[:count], ports[count:]
    for i in range(count):
        store = top.workdir / f"nats-{i + 1}"
        store.mkdir(parents=True, exist_ok=True)
        routes = ",".join(f"nats://{LOOPBACK}:{p}" for j, p in enumerate(cluster) if j != i)
        argv = [nats_server_binary(), "-js", "-a", LOOPBACK, "-p", str(client[i])]
        argv += ["-sd", str(store), "-n", f"n{i + 1}", "--cluster_name", "soak"]
        argv += ["--cluster", f"nats://{LOOPBACK}:{cluster[i]}", "--routes", routes]
        top.nats.append(
            Service(
                f"nats-{i + 1}",
                "nats",
                argv,
                top.workdir / f"nats-{i + 1}.log",
                lambda s: _listening(s.port),
                port=client[i],
            )
        )


def servers_ports(count: int) -> list[int]:
    from tests.fixtures.registry import free_ports

    return free_ports(count)


def _registry_ready(service: Service) -> bool:
    expected = WORKERS if "--workers" in service.argv else 1
    return servers.listeners(service.port) >= expected and _answers(
        f"http://{LOOPBACK}:{service.port}/v2/"
    )


def _registry(top: Topology, site: str, index: int, bucket: str | None) -> Service:
    port, grpc_port = servers_ports(2)
    name = f"registry-{site}{index + 1}"
    argv = [*NIMBUS, "registry", "--listen", f"{LOOPBACK}:{port}"]
    argv += ["--grpc-listen", f"{LOOPBACK}:{grpc_port}"]
    argv += ["--data-dir", str(top.workdir / name), "--site", site, *top.nats_args]
    argv += ["--stream-replicas", "3", "--no-blob-events"]
    env = {"NIMBUS_ACCESS_LOG": "false"}
    if bucket is not None:
        assert top.s3 is not None
        argv += ["--workers", str(WORKERS), "--storage", "s3", "--s3-bucket", bucket]
        argv += ["--s3-region", REGION, "--s3-endpoint-url", f"http://{LOOPBACK}:{top.s3.port}"]
        argv += ["--s3-path-style"]
        env.update(S3_ENV)
    return Service(
        name, "registry", argv, top.workdir / f"{name}.log", _registry_ready, env, port=port
    )


def _grpc_service(
    top: Topology, kind: str, name: str, args: list[str], env: dict[str, str]
) -> Service:
    port = servers_ports(1)[0]
    argv = [*NIMBUS, kind, *top.nats_args, "--grpc-listen", f"{LOOPBACK}:{port}"]
    argv += ["--kv-replicas", "3", "--instance", name, *args]
    log = top.workdir / f"{name}.log"
    line = "replicator running" if kind == "replicator" else "notifier running"

    def ready(service: Service) -> bool:
        if not _listening(service.port):
            return False
        if kind == "replicator":
            return line in service.log_path.read_text(errors="replace")
        return True

    return Service(name, kind, argv, log, ready, env, port=port)


def build(workdir: Path) -> Topology:
    """Every service, configured but not started."""
    top = Topology(workdir)
    s3_port = servers_ports(1)[0]
    spool = workdir / "s3-spool"
    spool.mkdir(parents=True, exist_ok=True)
    top.s3 = Service(
        "s3",
        "s3",
        [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(s3_port)],
        workdir / "s3.log",
        lambda s: _answers(f"http://{LOOPBACK}:{s.port}/moto-api/"),
        {"TMPDIR": str(spool)},
        port=s3_port,
    )
    _nats(top)
    for site in ("a", "b"):
        bucket = f"soak-{site}"
        top.sites[site] = Site(site, [_registry(top, site, i, bucket) for i in range(2)])
    top.sites["c"] = Site("c", [_registry(top, "c", 0, None)])
    top.notifiers = [
        _grpc_service(top, "notifier", f"notifier-{i + 1}", [], NOTIFIER_ENV) for i in range(2)
    ]
    for site in ("a", "b"):
        source = top.sites[site].urls[0]
        top.replicators[site] = _grpc_service(
            top,
            "replicator",
            f"replicator-{site}",
            ["--site", site, "--registry", source, "--ack-wait", "10", "--retry-max", "5"],
            REPLICATOR_ENV,
        )
    return top


def create_bucket(top: Topology, bucket: str) -> None:
    assert top.s3 is not None
    request = urllib.request.Request(f"http://{LOOPBACK}:{top.s3.port}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass


def start(top: Topology, say: Callable[[str], None]) -> None:
    assert top.s3 is not None
    top.s3.start()
    for bucket in ("soak-a", "soak-b"):
        create_bucket(top, bucket)
    for node in top.nats:
        node.start()
    say("NATS cluster started")
    for site in top.sites.values():
        for replica in site.replicas:
            replica.start()
            say(f"{replica.name} serving on {replica.port}")
    for service in [*top.notifiers, *top.replicators.values()]:
        service.start()
        say(f"{service.name} running")
