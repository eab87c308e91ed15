"""Domain errors turned into gRPC status codes at the edge, once per servicer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import wraps
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

R = TypeVar("R")
Context = Any  # grpc.aio.ServicerContext; grpc ships no type information
Method = Callable[[Any, Any, Context], Awaitable[R]]
StreamMethod = Callable[[Any, Any, Context], AsyncIterator[R]]
# A status, or a function giving it for errors that carry their kind (an OCI error code).
Status: TypeAlias = "grpc.StatusCode | Callable[[Any], grpc.StatusCode]"
Codes = Sequence[tuple[type[Exception], Status]]

log = logging.getLogger("nimbus.grpc")


def _default_message(error: Exception) -> str:
    return str(error) or type(error).__name__


class _Mapper:
    def __init__(self, codes: Codes, message: Callable[[Exception], str]) -> None:
        self.codes = list(codes)
        self.message = message

    async def abort(self, error: Exception, context: Context, method: str) -> NoReturn:
        """Abort the call with the status of ``error``: its code when it is one of the
        domain's, else INTERNAL, logged with its traceback (a bug, not the caller's fault)."""
        for cls, code in self.codes:
            if isinstance(error, cls):
                status = code if isinstance(code, grpc.StatusCode) else code(error)
                await context.abort(status, self.message(error))
        log.error("internal error", exc_info=error, extra={"method": method})
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__})")
        raise AssertionError("abort returned")  # abort raises; this keeps the type checker sure


def error_mapper(
    codes: Codes, message: Callable[[Exception], str] = _default_message
) -> Callable[[Method[R]], Method[R]]:
    """A decorator for unary servicer methods: the first matching class of ``codes`` sets the
    status of the aborted call, ``message`` its details; any other error is INTERNAL, logged."""
    mapper = _Mapper(codes, message)

    def decorate(method: Method[R]) -> Method[R]:
        @wraps(method)
        async def call(self: Any, request: Any, context: Context) -> R:
            try:
                return await method(self, request, context)
            except grpc.aio.AbortError:
                raise  # the method aborted the call itself
            except Exception as error:
                await mapper.abort(error, context, method.__name__)

        return call

    return decorate


def stream_error_mapper(
    codes: Codes, message: Callable[[Exception], str] = _default_message
) -> Callable[[StreamMethod[R]], StreamMethod[R]]:
    """`error_mapper` for server-streaming servicer methods (async generators)."""
    mapper = _Mapper(codes, message)

    def decorate(method: StreamMethod[R]) -> StreamMethod[R]:
        @wraps(method)
        async def call(self: Any, request: Any, context: Context) -> AsyncIterator[R]:
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await mapper.abort(error, context, method.__name__)

        return call

    return decorate
