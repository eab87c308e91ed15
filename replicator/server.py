"""Running the replicator: NATS, the peer workers and the gRPC API until a signal stops it."""

from __future__ import annotations

import asyncio
import logging
import signal

from nimbus import logs, otel
from nimbus.grpcserver import start_grpc_server
from nimbus.metrics import MetricsServer
from nimbus.natsconn import connect
from proto.nimbus.v1 import replication_pb2_grpc
from replicator.api import ReplicationServicer
from replicator.config import ReplicatorConfig
from replicator.metrics import ReplicatorMetrics
from replicator.service import open_service

log = logging.getLogger("nimbus.replicator")


async def serve(config: ReplicatorConfig) -> None:
    # Spans of replica copies, only when an OTLP endpoint is configured.
    otel.configure("nimbus-replicator")
    nc = await connect(config.nats_options(f"nimbus-replicator-{config.site}"))
    js = nc.jetstream()
    metrics = ReplicatorMetrics()
    service = await open_service(config, js, metrics)
    await service.start()
    exporter = MetricsServer(metrics.registry, config.metrics_listen, [service.refresh_metrics])
    await exporter.start()
    server = await start_grpc_server(
        config.grpc,
        [
            (
                replication_pb2_grpc.add_ReplicationServicer_to_server,
                ReplicationServicer(service),
                "nimbus.v1.Replication",
            )
        ],
    )
    log.info(
        "replicator running",
        extra={"site": config.site, "source": config.source.url, "instance": config.instance},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("replicator stopping")
        await server.stop(grace=2)
        await exporter.stop()
        await service.stop()
        await nc.close()
        await asyncio.to_thread(otel.shutdown)


def run(config: ReplicatorConfig) -> None:
    logs.setup(config.log_level)
    asyncio.run(serve(config))
