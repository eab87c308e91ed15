"""The Grafana dashboard and the Prometheus scrape configuration: they parse, compose runs them in
its monitoring profile, and every metric a panel queries is one a live service exports, with the
labels the query selects on."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import yaml

from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import (
    registry_pb2,
    registry_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
    webhooks_pb2_grpc,
)
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import NotifierFactory
from tests.fixtures.registry import RegistryFactory
from tests.metrics.conftest import (
    ReplicatorFactory,
    Scrape,
    add_webhook,
    metrics_listen,
    push,
    scrape,
    until,
)
from tests.notifier.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "nimbus.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# A metric name, and the label matchers of its selector when it has one.
SELECTOR = re.compile(r"\b(nimbus_[a-z0-9_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
# The panels an operator looks at first, each by (part of) its title.
REQUIRED_PANELS = (
    "Pushes and pulls",
    "Request latency",
    "Events published and outboxed",
    "Webhook success rate",
    "Webhook latency",
    "Replication lag per peer",
    "Replication backlog per peer",
)


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _queries() -> list[str]:
    return [
        target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", [])
    ]


def selectors() -> dict[str, set[str]]:
    """Every metric the dashboard queries, with the label names its selectors match on."""
    found: dict[str, set[str]] = {}
    for expr in _queries():
        for name, matchers in SELECTOR.findall(expr):
            found.setdefault(name, set()).update(MATCHER.findall(matchers or ""))
    return found


def test_dashboard_parses_and_has_the_first_panels() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "nimbus"
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in t for t in titles), wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            assert SELECTOR.search(target["expr"]), target["expr"]
            # Balanced, so Prometheus can parse what Grafana sends.
            for a, b in ("()", "{}", "[]"):
                assert target["expr"].count(a) == target["expr"].count(b), target["expr"]
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["uid"] == "prometheus"


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_compose_monitoring_profile_scrapes_every_service() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert ":" in services[name]["image"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
            else:
                assert source in compose["volumes"], source
    # Every scrape target is a compose service listening there.
    listens = {
        "registry-a": _flag(services["registry-a"]["command"], "--listen"),
        "registry-b": _flag(services["registry-b"]["command"], "--listen"),
        "notifier": _flag(services["notifier"]["command"], "--metrics-listen"),
        "replicator": _flag(services["replicator"]["command"], "--metrics-listen"),
    }
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    ]
    assert sorted(t.split(":")[0] for t in targets) == sorted(listens)
    for target in targets:
        host, port = target.split(":")
        assert listens[host].rsplit(":", 1)[1] == port, target


async def test_every_dashboard_metric_is_exported_by_a_live_service(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    replicators: ReplicatorFactory,
    webhooks_api: Callable[[str], webhooks_pb2_grpc.WebhooksStub],
) -> None:
    nats = nats_factory()
    a = registry_factory(["--nats", nats.url, "--site", "a"])
    b = registry_factory()
    notifier_listen, notifier_url = metrics_listen()
    replicator_listen, replicator_url = metrics_listen()
    notifier = notifier_factory(nats.url, ["--metrics-listen", notifier_listen])
    replicator = replicators(nats.url, a.url, "a", ["--metrics-listen", replicator_listen])
    receiver = await Receiver().start()
    try:
        await add_webhook(webhooks_api(notifier.address), receiver.url, ["v1"])
        async with grpc.aio.insecure_channel(replicator.address) as channel:
            peer = replication_pb2.Peer(name="b", url=b.url, reconcile_interval_seconds=1.0)
            await replication_pb2_grpc.ReplicationStub(channel).CreatePeer(
                replication_pb2.CreatePeerRequest(peer=peer)
            )
        async with grpc.aio.insecure_channel(a.grpc_address) as channel:
            request = registry_pb2.GarbageCollectRequest(dry_run=True)
            async for _ in registry_pb2_grpc.RegistryStub(channel).GarbageCollect(request):
                pass
        async with RegistryClient(a.url) as client:
            await push(client, "ops/tool", "v1", make_image((1200,), seed=31))
            assert await client.get_manifest("ops/tool", "v1") is not None
        await receiver.wait_delivered(1)

        async def everything() -> list[Scrape]:
            scrapes = [
                await scrape(f"{a.url}/metrics"),
                await scrape(notifier_url),
                await scrape(replicator_url),
            ]
            assert scrapes[2].value("nimbus_replicator_copies_total", peer="b", outcome="copied")
            assert scrapes[2].total("nimbus_replicator_reconcile_runs_total") >= 1
            return scrapes

        scrapes = await until(everything)
    finally:
        await receiver.stop()

    exported: dict[str, list[frozenset[tuple[str, str]]]] = {}
    families: set[str] = set()
    for one in scrapes:
        families |= one.families
        for name, labels in one.samples:
            exported.setdefault(name, []).append(labels)
    wanted = selectors()
    assert len(wanted) >= 20, sorted(wanted)
    for name, label_names in sorted(wanted.items()):
        if name not in exported:
            # A labelled family nothing has happened to yet (no dead letter, no failure) has
            # no series; the service still declares it.
            assert re.sub(r"_(total|bucket|count|sum)$", "", name) in families, (
                f"{name} is queried by the dashboard but no service exports it"
            )
            continue
        keys = {key for labels in exported[name] for key, _ in labels}
        assert label_names <= keys, f"{name}: the dashboard selects on {label_names - keys}"
