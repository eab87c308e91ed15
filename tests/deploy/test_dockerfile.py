"""The Dockerfile builds what compose.yaml runs: every package of the project copied in, the
runtime set installed exactly from the lock (no test or lint extras), and every port a service
of compose listens on exposed. (Building the image needs its base image from a registry this
check does not reach; what it copies and installs is checked here.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_every_package_of_the_project_is_copied() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = set()
    for keyword, rest in _instructions():
        if keyword == "COPY":
            *sources, _dest = rest.split()
            copied.update(source.rstrip("/") for source in sources)
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    for package in packages:
        assert (ROOT / package / "__init__.py").exists(), package
    assert {"pyproject.toml", "uv.lock"} <= copied


def test_the_runtime_set_comes_from_the_lock() -> None:
    runs = " ".join(rest for keyword, rest in _instructions() if keyword == "RUN")
    sync = re.search(r"uv sync ([^&]*)", runs)
    assert sync is not None, "the image does not install with uv sync"
    flags = sync.group(1).split()
    assert "--locked" in flags
    assert not any(flag.startswith("--extra") or flag == "--all-extras" for flag in flags)
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"UV_VERSION := (\S+)", makefile)
    assert pinned is not None and f"uv=={pinned.group(1)}" in runs


def test_every_port_compose_publishes_is_exposed() -> None:
    exposed = {
        int(port)
        for keyword, rest in _instructions()
        if keyword == "EXPOSE"
        for port in rest.split()
    }
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("nimbus"):
            continue
        for mapping in service.get("ports", []):
            container_port = int(str(mapping).rsplit(":", 1)[1].split("/")[0])
            assert container_port in exposed, f"{name} publishes {container_port}"
