"""Domain errors turned into gRPC status codes at the edge, once per servicer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import grpc

R = TypeVar("R")
Context = Any  # grpc.aio.ServicerContext; grpc ships no type information
Method = Callable[[Any, Any, Context], Awaitable[R]]
Codes = Sequence[tuple[type[Exception], grpc.StatusCode]]


def _default_message(error: Exception) -> str:
    return str(error) or type(error).__name__


def error_mapper(
    codes: Codes, message: Callable[[Exception], str] = _default_message
) -> Callable[[Method[R]], Method[R]]:
    """A decorator for unary servicer methods: the first matching class of ``codes`` sets the
    status of the aborted call, ``message`` its details; other errors pass through."""
    classes = tuple(cls for cls, _ in codes)

    def decorate(method: Method[R]) -> Method[R]:
        @wraps(method)
        async def call(self: Any, request: Any, context: Context) -> R:
            try:
                return await method(self, request, context)
            except classes as error:
                code = next(code for cls, code in codes if isinstance(error, cls))
                await context.abort(code, message(error))
                raise  # abort raises; this keeps the type checker sure

        return call

    return decorate
