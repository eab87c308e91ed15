"""A TLS listening site that tells a plain-HTTP client what went wrong.

A server that only speaks TLS would cut a client that sent `GET /v2/` in clear text with a
handshake error the client's user cannot read. Like Go's servers (and so `registry:2`), this one
looks at the first byte of each connection before the handshake: a TLS record goes on to TLS,
an HTTP request gets a plain `400` saying to use https, anything else is closed. Nothing is read
from the application's point of view until the connection is TLS, so nothing is ever stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

# A TLS record of type handshake starts every ClientHello.
_HANDSHAKE_RECORD = 0x16
# How long a connection may stay silent, or take to finish its handshake.
HANDSHAKE_TIMEOUT = 10.0
_MESSAGE = b"Client sent an HTTP request to an HTTPS server: use https:// for this registry.\n"
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_MESSAGE)).encode() + b"\r\n\r\n" + _MESSAGE
)


class _Listener:
    """Accepts connections and hands each to TLS or answers it; `close()` stops accepting."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self.sockets = [sock]
        self._context = context
        self._factory = protocol_factory
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[socket.socket, asyncio.TimerHandle] = {}
        self._handshakes: set[asyncio.Task[object]] = set()
        self._accepting = self._loop.create_task(self._accept(sock))

    async def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = await self._loop.sock_accept(sock)
            except OSError:
                # Out of descriptors or a connection reset before accept: try the next one.
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            self._waiting[conn] = self._loop.call_later(HANDSHAKE_TIMEOUT, self._drop, conn)
            self._loop.add_reader(conn.fileno(), self._first_bytes, conn)

    def _drop(self, conn: socket.socket) -> None:
        timer = self._waiting.pop(conn, None)
        if timer is not None:
            timer.cancel()
            self._loop.remove_reader(conn.fileno())
        conn.close()

    def _first_bytes(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if first and first[0] == _HANDSHAKE_RECORD:
            self._waiting.pop(conn).cancel()
            self._loop.remove_reader(conn.fileno())
            task = self._loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)
            return
        if first.isalpha():  # an HTTP method
            with contextlib.suppress(OSError):
                conn.recv(65536)  # what came, so the close is not a reset that hides the answer
                conn.send(PLAIN_HTTP_ANSWER)
                conn.shutdown(socket.SHUT_WR)
        self._drop(conn)

    async def _handshake(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        except (OSError, ssl.SSLError, TimeoutError):
            # A failed handshake is the client's problem; the socket is closed with it.
            conn.close()

    def close(self) -> None:
        self._accepting.cancel()
        for conn in list(self._waiting):
            self._drop(conn)
        for task in self._handshakes:
            task.cancel()
        for sock in self.sockets:
            sock.close()


class TLSSite(web.BaseSite):
    """`web.TCPSite` with TLS, answering plain HTTP with a clear 400 instead of a reset."""

    __slots__ = ("_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"https://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None and self._ssl_context is not None
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server(
            (self._host, self._port),
            family=family,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
        sock.setblocking(False)
        listener = _Listener(sock, self._ssl_context, server)
        self._server = listener  # type: ignore[assignment]  # close() and sockets, as aiohttp uses
