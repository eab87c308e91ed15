"""Closed-loop HTTP load: wrk where it fits, and a small generator of our own for the rest.

wrk (C, the usual yardstick) runs GETs. It cannot run HEAD: its parser waits for the body that
the Content-Length of a HEAD answer announces. The generator here speaks just enough HTTP/1.1
for both: keep-alive connections, each sending its next request when the previous answer is
complete, on uvloop with a reused receive buffer, one process per "thread" like wrk.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import multiprocessing
import shutil
import ssl
import subprocess
import tempfile
import time
import typing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

WRK = "wrk"
PYTHON = "python"
MIB = 1024 * 1024
_RECV_BUFFER = 256 * 1024
# Time for the generator's processes to start before they load together.
_SPAWN_GRACE_S = 1.0


@dataclass(frozen=True)
class Target:
    """What every request of a run asks for."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadResult:
    tool: str
    threads: int
    connections: int
    duration_s: float
    requests: int
    # Socket errors, timeouts and answers outside 2xx/3xx.
    errors: int
    # Every byte read from the server, headers included (as wrk counts them).
    bytes: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "threads": self.threads,
            "connections": self.connections,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "errors": self.errors,
            "bytes": self.bytes,
            "requests_per_s": round(self.requests_per_s, 1),
            "mib_per_s": round(self.mib_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }


def wrk_available() -> bool:
    return shutil.which(WRK) is not None


def run(
    target: Target,
    tool: str,
    threads: int,
    connections: int,
    duration: float,
    timeout: float = 30.0,
) -> LoadResult:
    """Load `target` for `duration` seconds with `tool` (wrk or python)."""
    if tool == WRK:
        if target.method == "HEAD":
            raise ValueError("wrk cannot run HEAD requests; use the python generator")
        return run_wrk(target, threads, connections, duration, timeout)
    if tool == PYTHON:
        return run_python(target, threads, connections, duration, timeout)
    raise ValueError(f"unknown load generator {tool!r}")


# -- wrk ----------------------------------------------------------------------------------

_WRK_MARK = "WRK_RESULT "
_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"errors":%.0f,'
    .. '"p50_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua_string(value: str) -> str:
    # JSON's escapes are valid Lua escapes for the ASCII that HTTP headers hold.
    return json.dumps(value)


def wrk_script(target: Target) -> str:
    lines = [f"wrk.method = {_lua_string(target.method)}"]
    lines += [
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in target.headers.items()
    ]
    return "\n".join(lines) + _WRK_DONE.replace("MARK", _WRK_MARK)


def run_wrk(
    target: Target, threads: int, connections: int, duration: float, timeout: float = 30.0
) -> LoadResult:
    seconds = max(1, round(duration))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "request.lua"
        script.write_text(wrk_script(target))
        argv = [
            WRK,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={max(1, round(timeout))}s",
            "-s",
            str(script),
            target.url,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + timeout + 30, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    for line in done.stdout.splitlines():
        if line.startswith(_WRK_MARK):
            raw = json.loads(line[len(_WRK_MARK) :])
            break
    else:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    # wrk counts non-2xx/3xx answers as status errors; they are in `errors` too.
    return LoadResult(
        tool=WRK,
        threads=threads,
        connections=connections,
        duration_s=raw["duration_us"] / 1e6,
        requests=int(raw["requests"]),
        errors=int(raw["errors"]),
        bytes=int(raw["bytes"]),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )


# -- the python generator -----------------------------------------------------------------


class ProtocolError(Exception):
    """An answer this generator cannot frame (no Content-Length, a stray byte)."""


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    bytes: int = 0
    latencies_ns: array.array[int] = field(default_factory=lambda: array.array("q"))
    stopped: bool = False


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection: sends a request, frames the answer, sends the next."""

    def __init__(self, request: bytes, head_only: bool, stats: _Stats, closed: asyncio.Event):
        self.request = request
        self.head_only = head_only
        self.stats = stats
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray(_RECV_BUFFER)
        self.view = memoryview(self.buffer)
        self.head = bytearray()
        self.body_left = -1  # -1 while reading the status line and headers
        self.status = 0
        self.sent_ns = 0
        self.error: BaseException | None = None

    def itself(self) -> _Connection:
        """The protocol factory for create_connection: this very connection."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they quack alike.
        self.transport = typing.cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.head.clear()
        self.body_left = -1
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.stats.stopped:
            return
        self.stats.bytes += nbytes
        data = self.view[:nbytes]
        if self.body_left < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end])
            extra = len(self.head) - end - 4
            self.status = int(head[9:12])
            length = _content_length(head)
            if self.head_only or self.status in (204, 304):
                length = 0
            if length is None:
                self._fail(ProtocolError("an answer without Content-Length"))
                return
            self.body_left = length - extra
        else:
            self.body_left -= nbytes
        if self.body_left > 0:
            return
        if self.body_left < 0:
            self._fail(ProtocolError("bytes after the end of an answer"))
            return
        self.stats.latencies_ns.append(time.perf_counter_ns() - self.sent_ns)
        self.stats.requests += 1
        if not 200 <= self.status < 400:
            self.stats.errors += 1
        self._send()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stats.stopped and self.error is None:
            self.stats.errors += 1
        self.closed.set()


def _client_tls(target: Target) -> ssl.SSLContext | None:
    """For https: TLS without verification (the load measures the server, not the client's
    certificate checks, and connections are kept alive)."""
    if urlsplit(target.url).scheme != "https":
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _request_bytes(target: Target) -> tuple[str, int, bytes]:
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise ValueError(f"http or https URLs only: {target.url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"Host": parts.netloc, "User-Agent": "nimbus-bench", **target.headers}
    lines = [f"{target.method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return parts.hostname, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connection_loop(
    host: str,
    port: int,
    request: bytes,
    head_only: bool,
    stats: _Stats,
    tls: ssl.SSLContext | None = None,
) -> BaseException | None:
    """Keep one connection busy until the run stops, reconnecting after a failure."""
    loop = asyncio.get_running_loop()
    while not stats.stopped:
        closed = asyncio.Event()
        conn = _Connection(request, head_only, stats, closed)
        try:
            transport, _ = await loop.create_connection(conn.itself, host, port, ssl=tls)
        except OSError:
            stats.errors += 1
            await asyncio.sleep(0.01)
            continue
        try:
            await closed.wait()
        finally:
            transport.abort()
        if isinstance(conn.error, ProtocolError):
            return conn.error
    return None


async def _load(
    target: Target, connections: int, duration: float, grace: float, start_at: float
) -> tuple[_Stats, float]:
    host, port, request = _request_bytes(target)
    tls = _client_tls(target)
    stats = _Stats()
    loop = asyncio.get_running_loop()
    # Processes start at different times; they all begin loading together.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = loop.time()
    tasks = [
        asyncio.ensure_future(
            _connection_loop(host, port, request, target.method == "HEAD", stats, tls)
        )
        for _ in range(connections)
    ]
    finished, _ = await asyncio.wait(tasks, timeout=duration)
    # Answers that arrive after the deadline are not counted, bytes included (as in wrk).
    stats.stopped = True
    elapsed = loop.time() - started
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=grace)
    for task in finished:
        if not task.cancelled() and task.exception() is None and task.result() is not None:
            raise RuntimeError(f"load generator: {task.result()}")
    return stats, elapsed


def _process_main(
    target: Target, connections: int, duration: float, timeout: float, start_at: float
) -> tuple[int, int, int, bytes, float]:
    coro = _load(target, connections, duration, timeout, start_at)
    try:
        import uvloop
    except ImportError:
        stats, elapsed = asyncio.run(coro)
    else:
        stats, elapsed = uvloop.run(coro)
    return stats.requests, stats.errors, stats.bytes, stats.latencies_ns.tobytes(), elapsed


def _percentile(ordered: array.array[int], pct: float) -> float:
    if not ordered:
        return 0.0
    index = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return ordered[index] / 1e6


def run_python(
    target: Target, threads: int, connections: int, duration: float, timeout: float = 30.0
) -> LoadResult:
    """`connections` split over `threads` processes, for `duration` seconds."""
    threads = max(1, min(threads, connections))
    shares = [connections // threads + (i < connections % threads) for i in range(threads)]
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + _SPAWN_GRACE_S
    with ProcessPoolExecutor(max_workers=threads, mp_context=ctx) as pool:
        futures = [
            pool.submit(_process_main, target, n, duration, timeout, start_at) for n in shares
        ]
        parts = [f.result(timeout=duration + timeout + 60) for f in futures]
    latencies: array.array[int] = array.array("q")
    for _, _, _, raw, _ in parts:
        latencies.frombytes(raw)
    ordered = array.array("q", sorted(latencies))
    return LoadResult(
        tool=PYTHON,
        threads=threads,
        connections=connections,
        duration_s=max(p[4] for p in parts),
        requests=sum(p[0] for p in parts),
        errors=sum(p[1] for p in parts),
        bytes=sum(p[2] for p in parts),
        p50_ms=_percentile(ordered, 50),
        p99_ms=_percentile(ordered, 99),
        max_ms=ordered[-1] / 1e6 if ordered else 0.0,
    )
