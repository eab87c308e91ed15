"""compose.yaml runs only commands that exist, with flags that parse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimbus.cli import build_parser
from nimbus.natsserver import binary

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def _nimbus_services() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, svc)
        for name, svc in _compose()["services"].items()
        if svc.get("image", "").startswith("nimbus")
    ]


def test_compose_names_the_whole_stack() -> None:
    services = _compose()["services"]
    for name in ("nats", "registry-a", "registry-b", "replicator", "notifier"):
        assert name in services, name
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert {"registry-s3-1", "registry-s3-2"} <= set(services)


@pytest.mark.parametrize("name,service", _nimbus_services(), ids=lambda v: str(v)[:20])
def test_nimbus_commands_parse(name: str, service: dict[str, Any]) -> None:
    command = service["command"]
    args = build_parser().parse_args(command)
    assert args.command == command[0]
    # Flags reach the configuration: loading it validates their values too.
    if command[0] == "registry":
        from nimbus.config import load
        from registry.cli import flags
        from registry.config import RegistryConfig

        config = load(RegistryConfig, None, env={}, flags=flags(args))
        assert config.listen == "0.0.0.0:5000"


@pytest.mark.parametrize("name,service", _nimbus_services(), ids=lambda v: str(v)[:20])
def test_python_health_checks_compile(name: str, service: dict[str, Any]) -> None:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], f"{name}-healthcheck", "exec")


def test_nats_flags_exist() -> None:
    result = subprocess.run([binary(), "--help"], capture_output=True, text=True, check=False)
    help_text = result.stdout + result.stderr
    for flag in _compose()["services"]["nats"]["command"]:
        if flag.startswith("-"):
            assert re.search(rf"(^|\s){re.escape(flag)}[\s,=]", help_text), flag
