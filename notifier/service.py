"""Running the notifier: NATS, the stores, the dispatcher and the gRPC API, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from nimbus import logs, otel
from nimbus.grpcserver import start_grpc_server
from nimbus.metrics import MetricsServer
from nimbus.natsconn import connect
from notifier.api import WebhooksServicer
from notifier.config import NotifierConfig
from notifier.deliveries import DeliveryStore
from notifier.dispatcher import Dispatcher
from notifier.metrics import NotifierMetrics
from notifier.sender import Sender
from notifier.store import WebhookStore
from notifier.webhooks import WebhookService
from proto.nimbus.v1 import webhooks_pb2_grpc

log = logging.getLogger("nimbus.notifier")
SERVICE_NAME = "nimbus.v1.Webhooks"
OPEN_WAIT = 5.0
DRAIN_SECONDS = 5.0


async def serve(config: NotifierConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # Spans of delivery attempts, only when an OTLP endpoint is configured.
    otel.configure("nimbus-notifier")
    nc = await connect(config.nats_options(f"nimbus-notifier {config.instance}"))
    js = nc.jetstream()
    webhooks = await WebhookStore.open(js, config.kv_replicas)
    deliveries = await DeliveryStore.open(js, config.deliveries_ttl, config.kv_replicas)
    d = config.delivery
    sender = Sender(d.timeout, d.excerpt_bytes, config.instance)
    metrics = NotifierMetrics()
    dispatcher = Dispatcher(js, webhooks, deliveries, sender, config, metrics)
    exporter = MetricsServer(metrics.registry, config.metrics_listen, [dispatcher.refresh_metrics])
    await exporter.start()
    servicer = WebhooksServicer(WebhookService(webhooks), deliveries, dispatcher, js)
    # The consumer exists before the API answers, so events after a webhook's creation reach it;
    # without the stream yet (no registry has started), the API serves while the consumer waits.
    opening = asyncio.create_task(dispatcher.open(), name="consumer")
    await asyncio.wait({opening}, timeout=OPEN_WAIT)
    server = await start_grpc_server(
        config.grpc,
        [(webhooks_pb2_grpc.add_WebhooksServicer_to_server, servicer, SERVICE_NAME)],
    )
    consuming = asyncio.create_task(_consume(opening, dispatcher), name="dispatcher")
    stopping = asyncio.create_task(stop.wait())
    log.info(
        "notifier running",
        extra={
            "instance": config.instance,
            "grpc": config.grpc_listen,
            "metrics": config.metrics_listen,
        },
    )
    try:
        await asyncio.wait({consuming, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if consuming.done() and consuming.exception() is not None:
            raise consuming.exception()  # type: ignore[misc]
    finally:
        log.info("notifier stopping", extra={"instance": config.instance})
        stopping.cancel()
        await server.stop(grace=2)
        await exporter.stop()
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        await webhooks.close()
        await sender.close()
        # Bounded: with NATS gone too (a whole stack stopping at once) a drain would wait out
        # its 30 s for acknowledgements that never come.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), DRAIN_SECONDS)
        with contextlib.suppress(Exception):
            await nc.close()
        await asyncio.to_thread(otel.shutdown)


async def _consume(opening: asyncio.Task[None], dispatcher: Dispatcher) -> None:
    try:
        await opening
    except Exception:
        log.exception("cannot open the event consumer")
        raise
    await dispatcher.run()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(config: NotifierConfig) -> None:
    logs.setup(config.log_level)
    _install_uvloop()
    asyncio.run(serve(config))
