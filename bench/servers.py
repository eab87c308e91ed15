"""The registries under test: Nimbus and CNCF Distribution, on loopback ephemeral ports.

Each server gets a fresh port and a fresh storage directory under a work directory that the
caller owns; logs go to files there, never to a pipe that could fill and stall the server.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tls import BenchTLS

LOOPBACK = "127.0.0.1"
NIMBUS = "nimbus"
DISTRIBUTION = "distribution"
DISTRIBUTION_BINARY = "docker-registry"
# A TCP socket in LISTEN state, as /proc/net/tcp spells it.
_TCP_LISTEN = "0A"


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: a benchmark that dies never leaves a server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (one per worker with SO_REUSEPORT)."""
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == _TCP_LISTEN:
            count += 1
    return count


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def peak_rss_kib(pid: int) -> int:
    """VmHWM, the highest resident set size the process has had, in KiB (0 once gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (0 once gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of proc(5), 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class Server:
    """One registry process (with its workers); start() waits until every listener is up."""

    kind: str
    argv: list[str]
    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    expected_listeners: int = 1
    proc: subprocess.Popen[bytes] | None = None
    # Serving HTTPS with the bench's certificate.
    tls: BenchTLS | None = None

    @property
    def host(self) -> str:
        """HOST:PORT, as in `docker://HOST:PORT/name:tag`."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def open(self, request: urllib.request.Request | str, timeout: float) -> Any:
        """urlopen, verifying the bench's CA over HTTPS."""
        context = self.tls.client_context() if self.tls else None
        return urllib.request.urlopen(request, timeout=timeout, context=context)

    def start(self, timeout: float = 30.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}; log:\n{self.log_tail()}"
                )
            if listeners(self.port) >= self.expected_listeners and self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.kind} did not serve {self.url} within {timeout}s")

    def _answers(self) -> bool:
        try:
            with self.open(f"{self.url}/v2/", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def peak_rss_kib(self) -> int:
        """The sum of VmHWM over the server's processes (the parent and its workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        return sum(peak_rss_kib(pid) for pid in process_tree(self.proc.pid))

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's live processes."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return sum(cpu_seconds(pid) for pid in process_tree(self.proc.pid))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _nimbus_argv() -> list[str]:
    script = Path(sys.executable).parent / "nimbus"
    return [str(script)] if script.exists() else [sys.executable, "-m", "nimbus.cli"]


def nimbus(
    workdir: Path,
    name: str,
    workers: int = 1,
    access_log: bool = True,
    env: dict[str, str] | None = None,
    tls: BenchTLS | None = None,
) -> Server:
    """`nimbus registry` with its own storage under `workdir`/`name` (not started yet)."""
    port = free_port()
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    argv = [
        *_nimbus_argv(),
        "registry",
        "--listen",
        f"{LOOPBACK}:{port}",
        "--data-dir",
        str(data),
        "--workers",
        str(workers),
    ]
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    settings = {"NIMBUS_ACCESS_LOG": "true" if access_log else "false", **(env or {})}
    return Server(NIMBUS, argv, port, data, root / "server.log", settings, workers, tls=tls)


def distribution_config(
    data: Path,
    port: int,
    access_log: bool = True,
    tls: BenchTLS | None = None,
    proxy_remote: str | None = None,
) -> str:
    """Distribution's YAML: filesystem storage, delete on, no auth, log level warn; with
    ``proxy_remote``, a pull-through cache of that registry (its proxy mode)."""
    tls_lines = ["  tls:", f"    certificate: {tls.cert}", f"    key: {tls.key}"] if tls else []
    proxy_lines = ["proxy:", f"  remoteurl: {proxy_remote}"] if proxy_remote else []
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            f"    disabled: {'false' if access_log else 'true'}",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {data}",
            "  delete:",
            "    enabled: true",
            # As Debian and the upstream image ship it.
            "  cache:",
            "    blobdescriptor: inmemory",
            "http:",
            f"  addr: {LOOPBACK}:{port}",
            *tls_lines,
            *proxy_lines,
            "",
        ]
    )


def distribution(
    workdir: Path,
    name: str,
    access_log: bool = True,
    tls: BenchTLS | None = None,
    proxy_remote: str | None = None,
) -> Server:
    """Debian's `docker-registry` with a config and storage under `workdir`/`name`."""
    binary = shutil.which(DISTRIBUTION_BINARY)
    if binary is None:
        raise RuntimeError(f"{DISTRIBUTION_BINARY} is not installed (make bench-deps)")
    port = free_port()
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    config = root / "config.yml"
    config.write_text(distribution_config(data, port, access_log, tls, proxy_remote))
    argv = [binary, "serve", str(config)]
    return Server(DISTRIBUTION, argv, port, data, root / "server.log", tls=tls)


def make(
    kind: str,
    workdir: Path,
    name: str,
    workers: int = 1,
    access_log: bool = True,
    nimbus_env: dict[str, str] | None = None,
    tls: BenchTLS | None = None,
) -> Server:
    if kind == NIMBUS:
        return nimbus(workdir, name, workers, access_log, nimbus_env, tls)
    if kind == DISTRIBUTION:
        return distribution(workdir, name, access_log, tls)
    raise ValueError(f"unknown server {kind!r}")
