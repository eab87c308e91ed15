"""The registry's and the notifier's metrics move as a push is published and delivered, and as a
delivery fails until it is dead-lettered."""

from __future__ import annotations

from collections.abc import Callable

from nimbus.oci.client import RegistryClient
from proto.nimbus.v1 import webhooks_pb2_grpc
from tests.fixtures.images import make_image
from tests.fixtures.nats import NatsFactory
from tests.fixtures.notifier import FAST_SETTINGS, NotifierFactory
from tests.fixtures.registry import RegistryFactory
from tests.metrics.conftest import Scrape, add_webhook, metrics_listen, push, scrape, until
from tests.notifier.receiver import Receiver

MAX_ATTEMPTS = int(FAST_SETTINGS["NIMBUS_DELIVERY_MAX_ATTEMPTS"])
BREAKER_FAILURES = int(FAST_SETTINGS["NIMBUS_DELIVERY_BREAKER_FAILURES"])


async def test_push_delivery_and_dead_letter_move_the_metrics(
    nats_factory: NatsFactory,
    registry_factory: RegistryFactory,
    notifier_factory: NotifierFactory,
    webhooks_api: Callable[[str], webhooks_pb2_grpc.WebhooksStub],
) -> None:
    nats = nats_factory()
    registry = registry_factory(["--nats", nats.url, "--site", "a"])
    listen, notifier_metrics = metrics_listen()
    notifier = notifier_factory(nats.url, ["--metrics-listen", listen])
    registry_metrics = f"{registry.url}/metrics"
    stub = webhooks_api(notifier.address)
    good = await Receiver().start()
    bad = await Receiver().start()
    bad.default_status = 503
    client = RegistryClient(registry.url)
    try:
        # Only manifests pushed by tag match (blob events have none).
        ok = await add_webhook(stub, good.url, ["v1"])
        failing = await add_webhook(stub, bad.url, ["broken"])
        reg0, note0 = await scrape(registry_metrics), await scrape(notifier_metrics)
        assert (
            note0.value("nimbus_notifier_deliveries_total", webhook=ok.id, outcome="succeeded") == 0
        )
        assert note0.value("nimbus_notifier_circuit_breakers", state="open") == 0
        assert note0.has("nimbus_notifier_consumer_pending")

        image = make_image((1500, 2500), seed=11)
        await push(client, "app/web", "v1", image)
        await good.wait_delivered(1)

        async def delivered() -> Scrape:
            after = await scrape(notifier_metrics)
            key = {"webhook": ok.id, "outcome": "succeeded"}
            assert after.value("nimbus_notifier_deliveries_total", **key) == 1
            return after

        note1 = await until(delivered)
        reg1 = await scrape(registry_metrics)

        # The registry: three blobs uploaded (two layers and the config), their bytes exactly;
        # the manifest PUT answered 201; one event per blob and one for the manifest published.
        sizes = sum(blob.size for blob in image.blobs)
        assert (
            reg1.value("nimbus_blob_uploads_total") - reg0.value("nimbus_blob_uploads_total") == 3
        )
        assert (
            reg1.value("nimbus_blob_upload_bytes_total")
            - reg0.value("nimbus_blob_upload_bytes_total")
            == sizes
        )
        published = "nimbus_events_published_total"
        assert reg1.total(published, action="push") - reg0.total(published, action="push") == 4
        assert reg1.value("nimbus_events_outbox_depth") == 0

        # The notifier: one attempt, succeeded, timed; the push-to-delivery latency observed.
        assert (
            note1.value("nimbus_notifier_attempts_total", webhook=ok.id, outcome="succeeded") == 1
        )
        assert note1.value("nimbus_notifier_attempt_duration_seconds_count") == 1
        assert note1.value("nimbus_notifier_delivery_latency_seconds_count") == 1
        assert note1.value("nimbus_notifier_delivery_latency_seconds_sum") > 0
        assert note1.value("nimbus_notifier_requests_in_flight") == 0
        assert note1.value("nimbus_notifier_circuit_breakers", state="closed") == 1
        assert note1.total("nimbus_notifier_dead_letters_total") == 0

        # Held: while the receiver keeps the request, it is in flight and its event unacked.
        good.hold()
        await push(client, "app/web", "v1", make_image((700,), seed=12))

        async def holding() -> None:
            now = await scrape(notifier_metrics)
            assert now.value("nimbus_notifier_requests_in_flight") == 1
            assert now.value("nimbus_notifier_events_held") == 1
            assert now.value("nimbus_notifier_consumer_ack_pending") == 1
            assert now.value("nimbus_notifier_consumer_pending") == 0

        await until(holding)
        good.release()
        await good.wait_delivered(2)

        async def released() -> None:
            now = await scrape(notifier_metrics)
            assert now.value("nimbus_notifier_requests_in_flight") == 0
            assert now.value("nimbus_notifier_events_held") == 0
            assert now.value("nimbus_notifier_consumer_ack_pending") == 0
            key = {"webhook": ok.id, "outcome": "succeeded"}
            assert now.value("nimbus_notifier_deliveries_total", **key) == 2

        await until(released)

        # A receiver answering 503: every attempt fails, the delivery is dead-lettered after
        # the last one, and the receiver's circuit is open.
        await push(client, "app/web", "broken", make_image((900,), seed=13))

        async def dead() -> Scrape:
            now = await scrape(notifier_metrics)
            assert now.value("nimbus_notifier_dead_letters_total", webhook=failing.id) == 1
            return now

        note2 = await until(dead)
        assert (
            note2.value("nimbus_notifier_attempts_total", webhook=failing.id, outcome="failed")
            == MAX_ATTEMPTS
        )
        assert len(bad.requests) == MAX_ATTEMPTS
        assert (
            note2.value("nimbus_notifier_deliveries_total", webhook=failing.id, outcome="dead") == 1
        )
        assert note2.value("nimbus_notifier_deliveries_total", webhook=ok.id, outcome="dead") == 0
        assert MAX_ATTEMPTS >= BREAKER_FAILURES
        assert note2.value("nimbus_notifier_circuit_breakers", state="open") == 1
        assert note2.value("nimbus_notifier_circuit_breakers", state="closed") == 1
        assert note2.value("nimbus_notifier_attempt_duration_seconds_count") == 2 + MAX_ATTEMPTS
        # Deliveries that failed add no push-to-delivery latency.
        assert note2.value("nimbus_notifier_delivery_latency_seconds_count") == 2
    finally:
        await client.close()
        await good.stop()
        await bad.stop()
