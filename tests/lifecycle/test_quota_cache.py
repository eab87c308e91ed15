"""The quota figure kept per repository stays exact across pushes, deletes, a garbage
collection and a restart (checked against what storage holds, counted here from the files),
and a push does not list the repository again: a link removed behind the registry's back is
not seen by pushes until GetStats reads the repository afresh."""

from __future__ import annotations

import re
import shutil
import urllib.request
from pathlib import Path

import aiohttp
from google.protobuf.duration_pb2 import Duration

from proto.nimbus.v1 import registry_pb2 as pb
from tests.fixtures.images import make_image, random_bytes
from tests.fixtures.registry import RegistryProcess
from tests.lifecycle.conftest import LifecycleRegistry, admin, oci

REPO = "qc/app"
RULES = {
    # Kept figures live as long as the rules: an hour here, so only the events below refresh.
    "reload_interval": 3600,
    "policies": {"quotas": [{"name": "qc", "repositories": "qc/*", "bytes": "10MB"}]},
}


def _truth(registry: RegistryProcess, name: str = REPO) -> int:
    """Bytes of the distinct linked blobs and manifests whose data is still stored."""
    root = Path(registry.data_dir)
    repo = root / "repositories" / name
    digests = set()
    for base in (repo / "_layers", repo / "_manifests" / "revisions"):
        for link in base.glob("*/*/link"):
            digests.add((link.parent.parent.name, link.parent.name))
    total = 0
    for algorithm, hex_part in digests:
        data = root / "blobs" / algorithm / hex_part[:2] / hex_part / "data"
        if data.exists():
            total += data.stat().st_size
    return total


def _gauge(registry: RegistryProcess, name: str = REPO) -> int:
    """nimbus_quota_used_bytes of the repository: set from the kept figure after each push."""
    with urllib.request.urlopen(f"{registry.url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    pattern = rf'^nimbus_quota_used_bytes\{{[^}}]*repository="{re.escape(name)}"[^}}]*\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    assert match, "no quota gauge"
    return int(float(match.group(1)))


async def test_kept_quota_figure_stays_exact(
    lifecycle_registry: LifecycleRegistry, http: aiohttp.ClientSession
):
    registry = lifecycle_registry(RULES, extra_args=["--gc-grace", "0"])
    client = oci(http, registry)
    images = [make_image((2000, 1000), seed=1500 + i) for i in range(6)]

    for i in range(3):
        await client.push_image(REPO, images[i], f"v{i}")
        assert _gauge(registry) == _truth(registry)
    # A mount from another repository adds the blob once.
    await client.push_image("qc/other", images[5], "x")
    layer = images[5].layers[0]
    mounted = await client.request(
        "POST", f"/v2/{REPO}/blobs/uploads/?mount={layer.digest}&from=qc/other"
    )
    assert mounted.status == 201
    assert _gauge(registry) == _truth(registry)

    # A delete: the next push's figure no longer counts the manifest.
    deleted = await client.request("DELETE", f"/v2/{REPO}/manifests/{images[0].digest}")
    assert deleted.status == 202
    await client.push_image(REPO, images[3], "v3")
    assert _gauge(registry) == _truth(registry)

    # A collection removes the deleted image's blobs (its links stay, dangling).
    before = _truth(registry)
    async with admin(registry) as stub:
        gc = [
            p
            async for p in stub.GarbageCollect(
                pb.GarbageCollectRequest(grace_period=Duration(seconds=0))
            )
        ]
    assert gc[-1].stats.blobs_deleted >= 3
    assert _truth(registry) < before
    await client.push_blob(REPO, random_bytes(500, seed=1600))
    assert _gauge(registry) == _truth(registry)

    # After a restart the figure is read from storage again (new connections, too).
    registry.restart()
    async with aiohttp.ClientSession() as session:
        client = oci(session, registry)
        await client.push_image(REPO, images[4], "v4")
        assert _gauge(registry) == _truth(registry)
        exact = _truth(registry)

        # Pushes use the kept figure: a revision removed by hand is not seen by them...
        victim = images[1].manifest.digest.split(":")[1]
        link = Path(registry.data_dir) / "repositories" / REPO / "_manifests" / "revisions"
        shutil.rmtree(link / "sha256" / victim)
        extra = random_bytes(300, seed=1601)
        await client.push_blob(REPO, extra)
        assert _gauge(registry) == exact + len(extra)
        assert _truth(registry) == exact + len(extra) - len(images[1].manifest.data)
        # ...until a figure is asked for, which reads the repository afresh.
        async with admin(registry) as stub:
            stats = await stub.GetStats(pb.GetStatsRequest())
        usage = {q.repository: q.bytes_used for q in stats.quotas}
        assert usage[REPO] == _truth(registry) == _gauge(registry)
