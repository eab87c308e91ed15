"""Running the registry: one process, or several sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal

from nimbus import eventloop, logs
from nimbus.parentdeath import die_with_parent
from registry.config import RegistryConfig

log = logging.getLogger("nimbus.registry")


async def serve(config: RegistryConfig, reuse_port: bool = False, worker: int = 0) -> None:
    # Imported here so the supervisor of several workers stays small.
    from aiohttp import web

    from nimbus.allocator import tune_for_streaming
    from registry.admin.server import start_admin_server
    from registry.api.middleware import JSONAccessLogger
    from registry.api.state import METRICS, PROXY, SERVICES
    from registry.app import create_app
    from registry.lifecycle.setup import install_lifecycle

    tune_for_streaming()
    app = create_app(config, worker=worker)
    runner = web.AppRunner(
        app,
        access_log_class=JSONAccessLogger,
        access_log=logging.getLogger("nimbus.access") if config.access_log else None,
        handle_signals=False,
    )
    await runner.setup()
    # After the storage driver opened (at setup), before any request or admin call.
    lifecycle = await install_lifecycle(config, app)
    reloader = None
    if config.tls.enabled:
        from nimbus.tls.server import CertificateReloader, server_context

        settings = config.tls.server()
        context, info = server_context(settings)
        reloader = CertificateReloader(context, settings, info)
    site: web.BaseSite
    if reloader is not None:
        from nimbus.tls.listener import TLSSite

        site = TLSSite(
            runner,
            config.host,
            config.port,
            ssl_context=reloader.context,
            backlog=1024,
            reuse_port=reuse_port,
        )
    else:
        site = web.TCPSite(runner, config.host, config.port, reuse_port=reuse_port, backlog=1024)
    # The admin API first: once the OCI API answers, both are ready.
    admin = None
    if config.grpc_listen:
        admin = await start_admin_server(config, app[SERVICES], app[METRICS], app[PROXY])
    await site.start()
    log.info(
        "registry listening",
        extra={"listen": config.listen, "pid": os.getpid(), "data_dir": config.data_dir},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)
        watcher = asyncio.create_task(reloader.watch(config.tls.reload_interval))
    try:
        await stop.wait()
    finally:
        log.info("registry stopping", extra={"pid": os.getpid()})
        if watcher is not None:
            watcher.cancel()
        if admin is not None:
            await admin.stop(grace=2)
        await lifecycle.close()
        await runner.cleanup()


def _worker(config: RegistryConfig, index: int, parent: int) -> None:
    # A supervisor killed by SIGKILL cannot stop its workers: the kernel does.
    die_with_parent(parent, signal.SIGTERM)
    # A reload signal before the loop takes it over must not end the worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logs.setup(config.log_level)
    eventloop.install(config.event_loop)
    asyncio.run(serve(config, reuse_port=True, worker=index))


def run(config: RegistryConfig) -> None:
    logs.setup(config.log_level)
    if config.tls.enabled:
        from nimbus.tls.server import server_context

        # Bad files stop the start here, once, before any worker is spawned.
        server_context(config.tls.server())
    if config.workers == 1:
        eventloop.install(config.event_loop)
        asyncio.run(serve(config))
        return
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_worker, args=(config, i, os.getpid()), daemon=True)
        for i in range(config.workers)
    ]
    for w in workers:
        w.start()

    def forward(signum: int, frame: object) -> None:
        for w in workers:
            if w.pid:
                os.kill(w.pid, signal.SIGTERM)

    def reload(signum: int, frame: object) -> None:
        for w in workers:
            if w.pid:
                os.kill(w.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload)
    for w in workers:
        w.join()
