"""Running the console: the application on its listen address until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from console.app import build_app
from console.config import ConsoleConfig
from nimbus import eventloop, logs
from nimbus.config import split_hostport

log = logging.getLogger("nimbus.console")


async def serve(config: ConsoleConfig) -> None:
    host, port = split_hostport(config.listen, "listen")
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("console serving", extra={"listen": config.listen, "registry": config.registry_url})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: ConsoleConfig) -> None:
    logs.setup(config.log_level)
    eventloop.install("uvloop")
    asyncio.run(serve(config))
