"""`nimbus ctl peers ...` against a real replicator: the operator's view of peers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.registry import RegistryFactory
from tests.fixtures.users import write_htpasswd
from tests.replicator.conftest import ClientFactory, ReplicatorFactory, eventually, push_image


def ctl(address: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimbus.cli", "ctl", "--replicator", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def test_peers_lifecycle_through_ctl(
    tmp_path: Path, nats_factory: NatsFactory, replicator_factory: ReplicatorFactory
) -> None:
    rep = replicator_factory(nats_factory().url, "http://127.0.0.1:9", "a")
    added = ctl(
        rep.address,
        "--json",
        "peers",
        "add",
        "west",
        "https://west.example:5000",
        "--site",
        "west",
        "--username",
        "bot",
        "--password-stdin",
        "--include",
        "team/*",
        "--tags",
        "v*",
        "--deletes",
        stdin="hunter2\n",
    )
    assert added.returncode == 0, added.stderr
    peer = json.loads(added.stdout)
    assert peer["credentials_kind"] == "basic"
    assert "hunter2" not in added.stdout
    assert peer["rules"] == [
        {
            "include": ["team/*"],
            "exclude": [],
            "tag_pattern": "v*",
            "actions": ["push", "delete"],
            "disabled": False,
        }
    ]

    again = ctl(rep.address, "peers", "add", "west", "https://other.example")
    assert again.returncode == 1 and "exists already" in again.stderr

    updated = ctl(rep.address, "--json", "peers", "update", "west", "--reconcile-interval", "300")
    assert updated.returncode == 0, updated.stderr
    after = json.loads(updated.stdout)
    assert after["reconcile_interval_seconds"] == 300
    assert after["credentials_kind"] == "basic" and after["rules"] == peer["rules"]

    listed = ctl(rep.address, "peers", "list")
    assert listed.returncode == 0 and "west" in listed.stdout and "team/*" in listed.stdout
    status = ctl(rep.address, "--json", "peers", "status", "west")
    assert json.loads(status.stdout)[0]["backlog"] == 0
    assert ctl(rep.address, "peers", "failures").stdout.strip() == "no failures"

    assert ctl(rep.address, "peers", "rm", "west").returncode == 0
    missing = ctl(rep.address, "peers", "get", "west")
    assert missing.returncode == 1 and "no peer named 'west'" in missing.stderr
    bad = ctl(rep.address, "peers", "add", "Bad Name", "ftp://x")
    assert bad.returncode == 1 and "peer name" in bad.stderr


async def test_failures_table_says_each_failures_kind(
    tmp_path: Path,
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    replicator_factory: ReplicatorFactory,
    oci_client: ClientFactory,
) -> None:
    nats_url = nats_factory().url
    source = registry_factory(["--nats", nats_url, "--site", "a"])
    locked = registry_factory(
        ["--htpasswd", str(write_htpasswd(tmp_path / "htpasswd", {"bot": "hunter2"}))]
    )
    rep = replicator_factory(nats_url, source.url, "a")
    added = ctl(rep.address, "peers", "add", "locked", locked.url, "--username", "bot",
                "--password-stdin", stdin="wrong\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    await push_image(oci_client(source.url), "team/app", "v1", make_image((1200,), seed=81))

    async def recorded() -> list[dict[str, Any]]:
        listed = ctl(rep.address, "--json", "peers", "failures")
        assert listed.returncode == 0, listed.stderr
        failures: list[dict[str, Any]] = json.loads(listed.stdout)
        assert len(failures) == 1
        return failures

    [failure] = await eventually(recorded)
    assert (failure["repository"], failure["kind"]) == ("team/app", "peer-refused")
    assert "401" in failure["reason"]
    table = ctl(rep.address, "peers", "failures").stdout.splitlines()
    header, row = table[0], table[-1]
    column = header.index("Kind")
    assert row[column:].startswith("peer-refused ")
