"""skopeo as the auth tests run it: logins, and copies to and from a registry."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Protocol

from tests.fixtures.registry import RegistryProcess


class Served(Protocol):
    """A registry process, ours or Distribution: what skopeo needs is its HOST:PORT."""

    @property
    def host(self) -> str: ...


def skopeo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def skopeo_login(
    registry: RegistryProcess, authfile: Path, user: str, password: str
) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(authfile),
        "--username",
        user,
        "--password-stdin",
        registry.host,
        stdin=password,
    )


def skopeo_push(
    source: str, registry: Served, ref: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "copy", "--dest-tls-verify=false", *extra, source, f"docker://{registry.host}/{ref}"
    )


def skopeo_pull(
    registry: Served, ref: str, dest: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--src-tls-verify=false", *extra, f"docker://{registry.host}/{ref}", dest)
