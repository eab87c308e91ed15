"""The gRPC server every Nimbus service runs: its own services plus health, reflection, auth, TLS.

Each service hands its servicers to `start_grpc_server`; the server also answers
`grpc.health.v1.Health` (SERVING for "" and every service) and server reflection, so generic
clients such as grpcurl can list and call it. When an admin token is configured every call
except health checks must carry `authorization: Bearer <token>` metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nimbus.config import ConfigError, split_hostport

log = logging.getLogger("nimbus.grpc")

# Health checks stay open without a token: load balancers and orchestrators probe them.
_UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)
AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "
# How long a refused request-streaming call may take to send its first message.
REFUSAL_READ_TIMEOUT = 1.0


@dataclass
class GrpcServerConfig:
    listen: str  # HOST:PORT
    admin_token: str = ""  # when set, every call needs `authorization: Bearer <token>`
    tls_cert: str = ""  # PEM paths; TLS on when both are set
    tls_key: str = ""
    # Several processes of one service may share the port; otherwise a taken port is an error.
    reuse_port: bool = False

    def validate(self, prefix: str = "grpc") -> None:
        split_hostport(self.listen, f"{prefix}_listen")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(f"{prefix}_tls_cert and {prefix}_tls_key: set both or neither")


# (add_XServicer_to_server, servicer, "nimbus.v1.X")
ServiceSpec = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]


def _bearer_matches(metadata: Any, expected: bytes) -> bool:
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION_KEY:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if not text.startswith(BEARER_PREFIX):
            return False
        presented = text[len(BEARER_PREFIX) :].strip().encode()
        return hmac.compare_digest(presented, expected)
    return False


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts with UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(requests: Any, context: grpc.aio.ServicerContext) -> None:
        # Take the client's first message before refusing: a status sent while the client is
        # still writing reaches grpc-python clients as INTERNAL instead of UNAUTHENTICATED.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(anext(aiter(requests)), REFUSAL_READ_TIMEOUT)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_stream, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls whose bearer token is missing or wrong (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method or ""
        if handler is None or method.startswith(_UNAUTHENTICATED_PREFIXES):
            return handler
        if _bearer_matches(handler_call_details.invocation_metadata, self._expected):
            return handler
        return _refusal(handler, "missing or invalid admin token (authorization: Bearer <token>)")


async def _server_credentials(config: GrpcServerConfig) -> grpc.ServerCredentials:
    try:
        key, cert = await asyncio.gather(
            asyncio.to_thread(Path(config.tls_key).read_bytes),
            asyncio.to_thread(Path(config.tls_cert).read_bytes),
        )
    except OSError as exc:
        raise ConfigError(f"cannot read gRPC TLS key or certificate: {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)])


async def start_grpc_server(
    config: GrpcServerConfig, services: list[ServiceSpec]
) -> grpc.aio.Server:
    """Start serving `services` (plus health and reflection) on `config.listen`."""
    interceptors = [BearerTokenInterceptor(config.admin_token)] if config.admin_token else []
    options = [("grpc.so_reuseport", 1 if config.reuse_port else 0)]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = []
    for add_to_server, servicer, name in services:
        add_to_server(servicer, server)
        names.append(name)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    tls = bool(config.tls_cert and config.tls_key)
    try:
        if tls:
            port = server.add_secure_port(config.listen, await _server_credentials(config))
        else:
            port = server.add_insecure_port(config.listen)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {config.listen}: {exc}") from None
    if not port:
        raise ConfigError(f"cannot listen for gRPC on {config.listen}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "grpc listening",
        extra={"listen": config.listen, "services": names, "tls": tls, "auth": bool(interceptors)},
    )
    return server
