"""What every service's Prometheus metrics share: the exposition format and a `/metrics` server.

The registry serves `/metrics` on its OCI API port; the notifier and the replicator have no HTTP
API of their own, so each runs a `MetricsServer` on its `metrics_listen` address. Some values
(a consumer's backlog) are asked of NATS when scraped: the server awaits its `refresh`
callbacks, each bounded in time, before it renders, so a scrape never blocks the event loop and
never waits on NATS for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nimbus.config import split_hostport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds a scrape waits for its refresh callbacks; a slower one leaves the last value.
REFRESH_TIMEOUT = 2.0

log = logging.getLogger("nimbus.metrics")

Refresh = Callable[[], Awaitable[None]]


class StateGauge(Collector):
    """A gauge computed when scraped: how many things are in each state (e.g. circuit breakers
    closed, open, half-open). Every state is exported, 0 included, so a query never misses one."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        states: Sequence[str],
        read: Callable[[], Iterable[str]],
    ) -> None:
        self._name = name
        self._doc = documentation
        self._label = label
        self._states = tuple(states)
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = dict.fromkeys(self._states, 0)
        for state in self._read():
            counts[state] = counts.get(state, 0) + 1
        family = GaugeMetricFamily(self._name, self._doc, labels=[self._label])
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._doc, labels=[self._label])


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


async def refresh_all(refresh: Sequence[Refresh]) -> None:
    """Run the refresh callbacks side by side; one failing or late leaves its last values."""
    if not refresh:
        return
    tasks = [asyncio.ensure_future(r()) for r in refresh]
    done, pending = await asyncio.wait(tasks, timeout=REFRESH_TIMEOUT)
    for task in pending:
        task.cancel()
    for task in done:
        error = task.exception()
        if error is not None:
            log.debug("metrics refresh failed", extra={"error": repr(error)})


class MetricsServer:
    """`GET /metrics` (and `/healthz`) on its own port; `listen` "" serves nothing."""

    def __init__(
        self, registry: CollectorRegistry, listen: str, refresh: Sequence[Refresh] = ()
    ) -> None:
        self.registry = registry
        self.listen = listen
        self.refresh = list(refresh)
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        await refresh_all(self.refresh)
        return web.Response(body=render(self.registry), headers={"Content-Type": CONTENT_TYPE})

    @staticmethod
    async def _health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self) -> None:
        if not self.listen:
            return
        host, port = split_hostport(self.listen, "metrics_listen")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        log.info("metrics listening", extra={"listen": self.listen})

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
