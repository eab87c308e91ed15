"""Whether a started process serves yet: a TCP port, an HTTP answer, or gRPC health SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Each check gives up after this long; the caller asks again until its own deadline.
CHECK_TIMEOUT = 1.0


class Probe(Protocol):
    async def ready(self) -> bool: ...


@dataclass(frozen=True)
class TcpProbe:
    """Ready once the port accepts connections (nats-server enables JetStream before that)."""

    host: str
    port: int

    async def ready(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CHECK_TIMEOUT
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


@dataclass(frozen=True)
class HttpProbe:
    """Ready once the URL answers; any status below 500 counts (with authentication on, the
    registry's /v2/ answers 401)."""

    url: str
    # The CA an https URL is verified with (the local CA of `nimbus up --tls`).
    ca_file: str = ""

    async def ready(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT)
        verify: ssl.SSLContext | bool = True
        if self.ca_file:
            verify = ssl.create_default_context(cafile=self.ca_file)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, allow_redirects=False, ssl=verify) as response,
            ):
                return response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False


@dataclass(frozen=True)
class GrpcHealthProbe:
    """Ready once grpc.health.v1 says SERVING (health checks need no admin token)."""

    address: str

    async def ready(self) -> bool:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = await stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT
                )
            except grpc.aio.AioRpcError:
                return False
        serving: bool = answer.status == health_pb2.HealthCheckResponse.SERVING
        return serving
