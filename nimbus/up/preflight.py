"""Checks made before anything starts: every binary is there and every port is free."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Sequence

from nimbus.up.stack import ServiceSpec


def port_problem(host: str, port: int, owner: str) -> str | None:
    """Why `port` cannot be listened on at `host`, or None when it can.

    Binds with SO_REUSEADDR, as the services do, so connections of a previous run still in
    TIME_WAIT do not count; a listening socket, here or on the wildcard address, does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} for {owner} is in use"
            if error.errno == errno.EACCES:
                return f"port {port} for {owner} needs more privileges"
            if error.errno == errno.EADDRNOTAVAIL:
                return f"cannot listen on {host} for {owner}: no such address here"
            return f"port {port} for {owner}: {error.strerror}"
    return None


def binary_problem(program: str) -> str | None:
    found = program if os.sep in program else shutil.which(program)
    if found is None or not os.path.isfile(found):
        return f"{program} not found"
    if not os.access(found, os.X_OK):
        return f"{program} is not executable"
    return None


def problems(services: Sequence[ServiceSpec]) -> list[str]:
    """Everything that would stop the stack from starting, in start order."""
    found = []
    for service in services:
        problem = binary_problem(service.argv[0])
        if problem is not None:
            found.append(f"{service.name}: {problem}")
        for port in service.ports:
            problem = port_problem(service.host, port.number, port.owner)
            if problem is not None:
                found.append(problem)
    return found
