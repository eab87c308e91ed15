"""`nimbus up` gives the notifier and each replicator a metrics port and lists every scrape URL."""

from __future__ import annotations

from nimbus.up.config import UpConfig
from nimbus.up.report import ServiceRow, services_table
from nimbus.up.stack import plan


def test_every_service_has_a_scrape_url_and_its_port_is_checked() -> None:
    config = UpConfig(sites=2, active_active=True)
    config.validate()
    stack = plan(config)
    by_name = {s.name: s for s in stack.services}
    expected = {
        "registry a": "http://127.0.0.1:5000/metrics",
        "registry b": "http://127.0.0.1:5001/metrics",
        "notifier": "http://127.0.0.1:9102/metrics",
        "replicator a": "http://127.0.0.1:9103/metrics",
        "replicator b": "http://127.0.0.1:9104/metrics",
    }
    for name, url in expected.items():
        assert by_name[name].metrics == url
    for name, port in (("notifier", 9102), ("replicator a", 9103), ("replicator b", 9104)):
        argv = list(by_name[name].argv)
        assert argv[argv.index("--metrics-listen") + 1] == f"127.0.0.1:{port}"
        # Checked free before anything starts, like every other port.
        assert port in {p.number for p in by_name[name].ports}
    table = services_table([ServiceRow(s, 1, "ready") for s in stack.services])
    assert "METRICS" in table.splitlines()[0]
    for url in expected.values():
        assert url in table


def test_site_b_metrics_port_only_with_active_active() -> None:
    assert "replicator_b_metrics_port" not in UpConfig(sites=2).ports_in_use()
    assert "replicator_b_metrics_port" in UpConfig(sites=2, active_active=True).ports_in_use()
    clash = UpConfig(notifier_metrics_port=5000)
    try:
        clash.validate()
    except Exception as error:
        assert "both are port 5000" in str(error)
    else:
        raise AssertionError("a metrics port equal to the registry's was accepted")
