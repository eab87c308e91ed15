"""The user's story on one machine: `nimbus up --sites 2`, a webhook, a push, replication.

Everything is real: `nimbus up` and the processes it starts, skopeo as the client, an aiohttp
webhook receiver, `nimbus ctl` for the control API.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.e2e.conftest import NIMBUS, Ports, Result, UpFactory, UpProcess, alive, run
from tests.fixtures.images import OCI_MANIFEST, LayoutFactory, make_image
from tests.notifier.receiver import Received, Receiver

T = TypeVar("T")


async def skopeo(*args: str) -> Result:
    return await run("skopeo", "--insecure-policy", *args)


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 60.0) -> T:
    """`await check()` until it gives something other than None (or `within` seconds pass)."""
    deadline = time.monotonic() + within
    while (found := await check()) is None:
        assert time.monotonic() < deadline, f"not within {within}s: {check.__doc__}"
        await asyncio.sleep(0.2)
    return found


async def manifest_status(registry: str, repository: str, reference: str) -> int:
    url = f"http://{registry}/v2/{repository}/manifests/{reference}"
    async with (
        aiohttp.ClientSession() as session,
        session.head(url, headers={"Accept": OCI_MANIFEST}) as response,
    ):
        return response.status


def digest_at(registry: str, reference: str) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        """skopeo sees the image"""
        found = await skopeo("inspect", "--tls-verify=false", f"docker://{registry}/{reference}")
        return str(json.loads(found.out)["Digest"]) if found.code == 0 else None

    return check


def delivered_push(
    receiver: Receiver, site: str, tag: str
) -> Callable[[], Awaitable[tuple[Received, dict[str, Any]] | None]]:
    async def check() -> tuple[Received, dict[str, Any]] | None:
        """the receiver got the push of the tag made at the site"""
        for got in receiver.delivered:
            for event in got.json()["events"]:
                if event["source"]["site"] == site and event["target"].get("tag") == tag:
                    return got, event
        return None

    return check


def table_row(output: str, starts: str) -> str:
    rows = [line for line in output.splitlines() if line.startswith(starts)]
    assert len(rows) == 1, output
    return rows[0]


async def stop_cleanly(up: UpProcess, services: list[str]) -> None:
    """SIGTERM: exit 0, every service said stopped, no process left behind."""
    assert up.pids, "no child processes were seen"
    assert await up.terminate() == 0, up.output()
    output = up.output()
    for name in services:
        assert f"  {name} stopped\n" in output, output
    assert [pid for pid in up.pids if alive(pid)] == []


TWO_SITES = ["nats-server", "registry a", "registry b", "notifier", "replicator a"]


async def test_two_sites_webhook_replication_deletes_then_restart_both_ways(
    up_factory: UpFactory, oci_layout_factory: LayoutFactory, tmp_path: Path
) -> None:
    ports = Ports()
    up = up_factory("--sites", "2", "--admin-token", "e2e-token", ports=ports)
    assert "created" in table_row(await up.wait_ready(), "a -> b")
    a, b = up.registry("a"), up.registry("b")
    receiver = await Receiver().start()
    try:
        # Every service got the admin token.
        refused = await up.ctl("peers", "list", token=False)
        assert refused.code == 1 and "admin token" in refused.err, refused
        # A webhook, added as an operator would; its generated secret signs every delivery.
        added = await up.ctl("--json", "webhooks", "add", receiver.url, "--action", "push")
        assert added.code == 0, added.err
        secret = added.json()["secrets"][0]

        image = make_image((2048, 40_000), seed=71)
        layout = oci_layout_factory({"latest": image})
        pushed = await skopeo(
            "copy", "--dest-tls-verify=false", layout.ref("latest"), f"docker://{a}/my-image"
        )
        assert pushed.code == 0, pushed.err

        # The receiver gets the push, signed per Standard Webhooks.
        got, event = await eventually(delivered_push(receiver, "a", "latest"))
        assert StandardWebhook(secret).verify(got.body, got.headers) == got.json()
        assert event["action"] == "push"
        assert event["target"]["repository"] == "my-image"
        assert event["target"]["digest"] == image.digest

        # Site b serves the same digest, and the whole image pulls from there.
        assert await eventually(digest_at(b, "my-image:latest")) == image.digest
        pulled = tmp_path / "pulled"
        copied = await skopeo(
            "copy", "--src-tls-verify=false", f"docker://{b}/my-image:latest", f"oci:{pulled}:x"
        )
        assert copied.code == 0, copied.err
        index = json.loads((pulled / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [image.digest]
        # The copy at site b is an event too, naming where the push came from.
        _, replicated = await eventually(delivered_push(receiver, "b", "latest"))
        assert replicated["source"]["originSite"] == "a"

        # Deletes travel only when the rule says so. First a tag deleted under the default
        # rule (pushes only)...
        tagged = await skopeo(
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{a}/my-image:latest",
            f"docker://{a}/my-image:old",
        )
        assert tagged.code == 0, tagged.err
        assert await eventually(digest_at(b, "my-image:old")) == image.digest
        removed = await up.ctl("tags", "rm", "my-image", "old")
        assert removed.code == 0, removed.err

        async def idle() -> bool | None:
            """the replicator handled every event for peer b"""
            status = await up.ctl("--json", "peers", "status", "b")
            (peer,) = status.json()
            return True if peer["backlog"] == 0 and peer["in_flight"] == 0 else None

        await eventually(idle)
        # ...then with deletes switched on through `nimbus ctl peers update`.
        updated = await up.ctl("--json", "peers", "update", "b", "--deletes")
        assert updated.code == 0, updated.err
        assert updated.json()["rules"][0]["actions"] == ["push", "delete"]
        removed = await up.ctl("tags", "rm", "my-image", "latest")
        assert removed.code == 0, removed.err

        async def gone_at_b() -> bool | None:
            """the tag delete reached site b"""
            return True if await manifest_status(b, "my-image", "latest") == 404 else None

        await eventually(gone_at_b)
        assert await manifest_status(b, "my-image", "old") == 200  # deleted under pushes only
        assert await manifest_status(b, "my-image", image.digest) == 200  # only the tag went

        await stop_cleanly(up, TWO_SITES)

        # Again, both ways: the data and the operator's rule are kept, b -> a is added.
        again = up_factory("--sites", "2", "--active-active", "--admin-token", "t2", ports=ports)
        output = await again.wait_ready()
        kept = table_row(output, "a -> b")
        assert "kept" in kept and "deletes" in kept, output
        assert "created" in table_row(output, "b -> a")
        assert await manifest_status(a, "my-image", image.digest) == 200
        assert await manifest_status(b, "my-image", "old") == 200
        other = make_image((3000,), seed=72)
        pushed = await skopeo(
            "copy",
            "--dest-tls-verify=false",
            oci_layout_factory({"v1": other}).ref("v1"),
            f"docker://{b}/from-b:v1",
        )
        assert pushed.code == 0, pushed.err
        assert await eventually(digest_at(a, "from-b:v1")) == other.digest
        await stop_cleanly(again, [*TWO_SITES, "replicator b"])
    finally:
        await receiver.stop()


def run_up(data_dir: Path, ports: Ports, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NIMBUS, "up", "--data-dir", str(data_dir), *ports.flags(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ports_in_use_are_named_and_nothing_starts(tmp_path: Path) -> None:
    ports = Ports()
    taken = [ports.by_dest["registry_a_port"], ports.by_dest["notifier_grpc_port"]]
    listeners = [socket.create_server(("127.0.0.1", port)) for port in taken]
    try:
        result = run_up(tmp_path / "data", ports, "--sites", "2")
    finally:
        for listener in listeners:
            listener.close()
    assert result.returncode == 1
    assert f"port {taken[0]} for registry a is in use" in result.stderr
    assert f"port {taken[1]} for notifier (gRPC Webhooks API) is in use" in result.stderr
    assert "nothing was started" in result.stderr
    # Not even a log directory: no service was spawned.
    assert not (tmp_path / "data").exists()


def test_a_missing_binary_is_named_and_nothing_starts(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "nats-server"
    result = run_up(tmp_path / "data", Ports(), "--nats-server", str(missing))
    assert result.returncode == 1
    assert f"nats-server: {missing} not found" in result.stderr
    assert not (tmp_path / "data").exists()


async def test_a_service_that_dies_stops_the_others_and_fails(up_factory: UpFactory) -> None:
    up = up_factory()
    output = await up.wait_ready()
    match = re.search(r"notifier ready \(pid (\d+)\)", output)
    assert match is not None, output
    os.kill(int(match.group(1)), signal.SIGKILL)
    assert await up.wait_exit() == 1
    output = up.output()
    assert "notifier stopped unexpectedly: it was killed by SIGKILL" in output
    for name in ("replicator a", "registry a", "nats-server"):
        assert f"  {name} stopped\n" in output, output
    assert [pid for pid in up.pids if alive(pid)] == []


async def test_a_service_that_cannot_start_is_named_with_its_log(up_factory: UpFactory) -> None:
    # The replicator refuses this setting at start (through the environment it inherits).
    up = up_factory(env={"NIMBUS_WORKER_ACK_WAIT": "0"})
    assert await up.wait_exit() == 1
    output = up.output()
    assert "replicator a exited with code 2 while it was starting" in output, output
    assert "last lines of" in output and "worker.ack_wait" in output, output
    for name in ("notifier", "registry a", "nats-server"):
        assert f"  {name} stopped\n" in output, output
    assert "Ready." not in output


async def test_tls_sites_replicate_over_verified_https(
    up_factory: UpFactory, oci_layout_factory: LayoutFactory, tmp_path: Path
) -> None:
    ports = Ports()
    up = up_factory("--sites", "2", "--tls", ports=ports)
    output = await up.wait_ready()
    a, b = ports.address("registry_a_port"), ports.address("registry_b_port")
    tls = tmp_path / "data" / "tls"
    # It says how every client trusts the local CA.
    assert f"/etc/docker/certs.d/{a}/ca.crt" in output, output
    assert f"/etc/docker/certs.d/{b}/ca.crt" in output, output
    assert f"--cert-dir={tls / 'trust'}" in output, output
    assert f"https://{a}" in table_row(output, "registry a")
    ca = (tls / "ca.crt").read_bytes()

    image = make_image((2000, 500), seed=73)
    pushed = await skopeo(
        "copy",
        f"--dest-cert-dir={tls / 'trust'}",
        oci_layout_factory({"v1": image}).ref("v1"),
        f"docker://{a}/secure:v1",
    )
    assert pushed.code == 0, pushed.err

    async def at_b() -> str | None:
        """site b serves the image over verified HTTPS"""
        found = await skopeo("inspect", f"--cert-dir={tls / 'trust'}", f"docker://{b}/secure:v1")
        return str(json.loads(found.out)["Digest"]) if found.code == 0 else None

    assert await eventually(at_b) == image.digest
    # Plain HTTP is not served, and a client without the CA refuses the certificate.
    untrusted = await skopeo("inspect", f"docker://{b}/secure:v1")
    assert untrusted.code != 0 and "certificate signed by unknown authority" in untrusted.err
    await stop_cleanly(up, TWO_SITES)

    # Again: the CA is reused, never replaced (clients already trust it).
    again = up_factory("--sites", "2", "--tls", ports=ports)
    assert "using the local CA" in await again.wait_ready()
    assert (tls / "ca.crt").read_bytes() == ca
    await stop_cleanly(again, TWO_SITES)
