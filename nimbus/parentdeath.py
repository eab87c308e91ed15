"""A child that ends when the process that started it dies, even by SIGKILL (Linux).

`prctl(PR_SET_PDEATHSIG)` asks the kernel to send the child a signal when its parent (the
thread that forked it) exits. Set in the child between fork and exec (`preexec_fn`), or first
thing in a multiprocessing worker; a parent that died before the call is caught by comparing
the parent pid with the one expected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Get `signum` when the parent exits; exit at once if `parent` is already gone."""
    prctl = _prctl()
    if prctl is None:
        return
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:
        os._exit(1)


def preexec(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for subprocess: the child gets `signum` when this process dies."""
    parent = os.getpid()

    def setup() -> None:
        die_with_parent(parent, signum)

    return setup
