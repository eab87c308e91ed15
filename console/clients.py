"""The gRPC control APIs the console reads and drives, every call counted by method.

One channel per service for the process; calls carry the admin token. Handlers never see a
stub: services call `unary` and `stream` with the service's name and the method's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from console.config import ConsoleConfig
from nimbus.grpcclient import open_channel
from proto.nimbus.v1 import registry_pb2_grpc, replication_pb2_grpc, webhooks_pb2_grpc

REGISTRY = "registry"
NOTIFIER = "notifier"
REPLICATOR = "replicator"
CALL_TIMEOUT = 15.0

_STUBS = {
    REGISTRY: registry_pb2_grpc.RegistryStub,
    NOTIFIER: webhooks_pb2_grpc.WebhooksStub,
    REPLICATOR: replication_pb2_grpc.ReplicationStub,
}


class ServiceUnavailable(Exception):
    """A service the page needs is not configured."""


@dataclass(frozen=True, slots=True)
class Health:
    service: str
    address: str
    status: str  # "SERVING", "NOT_SERVING", "UNREACHABLE: ..."

    @property
    def ok(self) -> bool:
        return self.status == "SERVING"


class GrpcClients:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.addresses = {
            REGISTRY: config.registry_grpc,
            NOTIFIER: config.notifier_grpc,
            REPLICATOR: config.replicator_grpc,
        }
        self._channels: dict[str, grpc.aio.Channel] = {}
        # "registry.ListRepositories" -> calls made; read by the load test and the logs.
        self.calls: Counter[str] = Counter()

    def has(self, service: str) -> bool:
        return bool(self.addresses.get(service))

    def _channel(self, service: str) -> grpc.aio.Channel:
        channel = self._channels.get(service)
        if channel is None:
            address = self.addresses.get(service)
            if not address:
                raise ServiceUnavailable(f"no {service} is configured")
            channel = open_channel(
                address, self.config.admin_token, self.config.tls_ca, self.config.grpc_tls
            )
            self._channels[service] = channel
        return channel

    def _method(self, service: str, method: str) -> Any:
        self.calls[f"{service}.{method}"] += 1
        return getattr(_STUBS[service](self._channel(service)), method)

    async def unary(self, service: str, method: str, request: Any) -> Any:
        return await self._method(service, method)(request, timeout=CALL_TIMEOUT)

    async def stream(
        self, service: str, method: str, request: Any, deadline: float | None = None
    ) -> AsyncIterator[Any]:
        call = self._method(service, method)(request, timeout=deadline)
        try:
            async for item in call:
                yield item
        finally:
            call.cancel()

    async def health(self, service: str) -> Health:
        address = self.addresses.get(service, "")
        if not address:
            return Health(service, "", "not configured")
        self.calls[f"{service}.Health.Check"] += 1
        stub = health_pb2_grpc.HealthStub(self._channel(service))
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        except grpc.aio.AioRpcError as error:
            return Health(service, address, f"UNREACHABLE: {error.code().name}")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return Health(service, address, status)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
