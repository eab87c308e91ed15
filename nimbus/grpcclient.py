"""Channels to Nimbus gRPC services, carrying the admin bearer token on every call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from nimbus.grpcserver import AUTHORIZATION_KEY, BEARER_PREFIX


def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata[AUTHORIZATION_KEY] = f"{BEARER_PREFIX}{token}"
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _TokenInterceptor:
    """Adds the bearer token on plaintext channels, where call credentials are not allowed."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def _call(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _UnaryUnary(_TokenInterceptor, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._call(continuation, details, request)


class _UnaryStream(_TokenInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._call(continuation, details, request)


class _StreamUnary(_TokenInterceptor, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._call(continuation, details, requests)


class _StreamStream(_TokenInterceptor, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await self._call(continuation, details, requests)


def open_channel(
    address: str, token: str = "", tls_ca: str = "", tls: bool = False
) -> grpc.aio.Channel:
    """An aio channel to `address` (HOST:PORT); TLS when `tls` or a CA file is given.

    Must be called with an event loop running (grpc.aio binds the channel to it).
    """
    if tls or tls_ca:
        # Reading a small PEM once at start; the CLI opens channels before serving anything.
        roots = Path(tls_ca).read_bytes() if tls_ca else None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        return grpc.aio.secure_channel(address, credentials)
    if not token:
        return grpc.aio.insecure_channel(address)
    interceptors = [cls(token) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
    return grpc.aio.insecure_channel(address, interceptors=interceptors)
