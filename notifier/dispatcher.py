"""From the event stream to receivers: the delivery engine of the notifier.

Replicas share one durable pull consumer, so JetStream hands each event to one replica. An event
is matched against the webhooks and becomes one job per matching webhook, queued on a lane per
(webhook, repository): a lane sends its jobs one after the other, so one repository's events
reach a webhook in stream order, while other lanes (other webhooks, other repositories) go on.

The event's message is acknowledged only once each of its deliveries has a final record
(succeeded or dead-lettered) in the deliveries bucket; until then progress acks keep it from
being handed to another replica. A replica that dies leaves its messages unacknowledged, so
JetStream hands them out again after `ack_wait`.

Progress acks can come late (a replica starved of CPU, a message waiting long in its lane), so
JetStream may hand a message to a second replica while the first still works on it. Hence a
delivery is sent only under its claim: its record in the deliveries bucket, created atomically
before the first attempt and rewritten (so renewed) with each attempt and with the progress
acks. A replica that finds another's claim sends nothing: it holds the message until the record
is final (then acknowledges it), or takes the claim over once its owner has not renewed it for
a whole lease (the owner died or lost NATS).

A delivery that fails inside the notifier (an event that cannot be rendered, a webhook stored
without validation) is tried a few times, then recorded dead with the error (`internal error:`
in its attempt), and its lane goes on with the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from nimbus import otel, tracing
from nimbus.events import UndecodableEvent, decode
from nimbus.lanes import LaneConsumer, LaneHandler, LaneSettings, Unreadable
from nimbus.streams import EVENTS_STREAM, EVENTS_SUBJECTS, NOTIFIER_CONSUMER
from notifier import bodies, signing
from notifier.config import NotifierConfig
from notifier.deliveries import (
    EXCERPT_CHARS,
    FINAL,
    Claim,
    Conflict,
    DeliveryStore,
    Finished,
    Holder,
    Rival,
    delivery_id,
)
from notifier.errors import InvalidArgument, NotFound, Unavailable
from notifier.filters import matches
from notifier.metrics import FAILED, REFUSED, SUCCEEDED, NotifierMetrics
from notifier.receivers import Receiver, Receivers
from notifier.sender import SYSTEM_TLS, Outcome, ReceiverTls, Sender
from notifier.store import WebhookStore
from proto.nimbus.v1 import events_pb2, webhooks_pb2

log = logging.getLogger("nimbus.notifier.dispatcher")

EVENT_TYPE_HEADER = "Nimbus-Event-Type"
Status = webhooks_pb2.DeliveryStatus
# A claim's lease, in ack waits: an owner is replaced only after renewing nothing this long.
# Renewals go out with the progress acks, every third of an ack wait, so several in a row may be
# late or lost first.
LEASE_ACK_WAITS = 2
# Seconds between tries at most while NATS is away, and before a message handed back returns.
NATS_RETRY_MAX = 10.0
# Revision-checked writes of a redelivery's attempt before giving up.
REDELIVER_WRITES = 5


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("retry")
        self.retry_after = retry_after


class _Expired(Exception):
    """The delivery reached its age limit while the receiver's circuit was open."""


class _Lost(Exception):
    """The claim may be gone (taken over, or not renewed in time) or the record changed under
    it: look again before sending anything more."""


@dataclass(slots=True)
class Job:
    """One event to one webhook."""

    webhook_id: str
    event: events_pb2.Event
    # Bodies by format, rendered once for all the event's webhooks.
    renders: dict[int, tuple[bytes, str]]


def _stamp(ts: Timestamp) -> None:
    """Now, without GetCurrentTime's trip through datetime (a few per delivery add up)."""
    ts.FromNanoseconds(time.time_ns())


def base_record(
    webhook: webhooks_pb2.Webhook, event: events_pb2.Event, ident: str
) -> webhooks_pb2.Delivery:
    """A delivery's record without its request (no body: none may have been made)."""
    record = webhooks_pb2.Delivery(
        id=ident,
        webhook_id=webhook.id,
        event_id=event.id,
        action=event.action,
        repository=event.target.repository,
        tag=event.target.tag,
        digest=event.target.digest,
        status=webhooks_pb2.DELIVERY_STATUS_RETRYING,
        url=webhook.url,
    )
    _stamp(record.created_at)
    record.updated_at.CopyFrom(record.created_at)
    return record


def new_record(
    webhook: webhooks_pb2.Webhook,
    event: events_pb2.Event,
    ident: str,
    renders: dict[int, tuple[bytes, str]] | None = None,
) -> webhooks_pb2.Delivery:
    """A delivery not attempted yet; `renders` shares bodies among an event's webhooks."""
    renders = {} if renders is None else renders
    if webhook.body_format not in renders:
        renders[webhook.body_format] = bodies.render(event, webhook.body_format)
    body, content_type = renders[webhook.body_format]
    record = base_record(webhook, event, ident)
    record.body = body
    record.body_excerpt = body[:EXCERPT_CHARS].decode("utf-8", errors="replace")
    headers = {"Content-Type": content_type, EVENT_TYPE_HEADER: event.action, **webhook.headers}
    # The delivery is a span of the push's trace (every attempt sends it). With OTel on, the
    # push's own context is kept here: each attempt's span is its child and sends its own.
    trace = (
        str(tracing.parse(event.traceparent) or "")
        if otel.enabled()
        else tracing.continued(event.traceparent)
    )
    if trace:
        headers[tracing.HEADER] = trace
    record.request_headers.extend(webhooks_pb2.Header(name=k, value=v) for k, v in headers.items())
    return record


def ping_event(webhook: webhooks_pb2.Webhook) -> events_pb2.Event:
    event = events_pb2.Event(id=f"ping_{uuid.uuid4().hex}", action="ping")
    event.timestamp.GetCurrentTime()
    return event


class Dispatcher(LaneHandler[Job]):
    def __init__(
        self,
        js: JetStreamContext,
        webhooks: WebhookStore,
        deliveries: DeliveryStore,
        sender: Sender,
        config: NotifierConfig,
        metrics: NotifierMetrics | None = None,
    ) -> None:
        self._js = js
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._sender = sender
        self._config = config
        d = config.delivery
        self._receivers = Receivers(d.concurrency, d.breaker_failures, d.breaker_cooldown)
        self.metrics = metrics or NotifierMetrics()
        self.metrics.watch_breakers(self._receivers.states)
        # Names this process in claims: a restarted replica is another owner than before.
        self._holder = Holder.of(
            f"{config.instance}/{uuid.uuid4().hex[:8]}", LEASE_ACK_WAITS * config.consumer.ack_wait
        )
        # How often a replica waiting on another's claim looks again.
        self._poll = min(1.0, config.consumer.ack_wait / 3)
        # Claims held, by delivery id; renewed with the progress acks.
        self._claims: dict[str, Claim] = {}
        c = config.consumer
        settings = LaneSettings(
            ack_wait=c.ack_wait,
            max_in_flight=c.max_ack_pending,
            fetch_batch=c.fetch_batch,
            attempts=c.job_attempts,
            retry_initial=d.backoff_initial,
            # Also how long NATS may be back before a waiting lane notices.
            retry_max=min(d.backoff_max, NATS_RETRY_MAX),
        )
        self._consumer = LaneConsumer(self, settings, log, {"consumer": NOTIFIER_CONSUMER})
        self._sub: JetStreamContext.PullSubscription | None = None

    # -- consuming ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Bind to the shared durable consumer, creating it when this is the first replica.

        Waits for the event stream (the registry creates it) when it does not exist yet.
        """
        waiting_logged = False
        while True:
            try:
                await self._js.stream_info(EVENTS_STREAM)
                break
            except NotFoundError:
                if not waiting_logged:
                    log.warning("waiting for the event stream", extra={"stream": EVENTS_STREAM})
                    waiting_logged = True
                await asyncio.sleep(1)
        consumer = api.ConsumerConfig(
            durable_name=NOTIFIER_CONSUMER,
            # A new notifier starts from now: no webhook existed before it to want history.
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._config.consumer.ack_wait,
            max_ack_pending=self._config.consumer.max_ack_pending,
            max_deliver=-1,
            filter_subject=EVENTS_SUBJECTS,
        )
        await self._js.add_consumer(EVENTS_STREAM, consumer)
        self._sub = await self._js.pull_subscribe_bind(NOTIFIER_CONSUMER, stream=EVENTS_STREAM)

    async def run(self) -> None:
        """Consume until cancelled; messages still held then are handed back (nak)."""
        if self._sub is None:
            await self.open()
        sub = self._sub
        assert sub is not None
        log.info("consuming events", extra={"consumer": NOTIFIER_CONSUMER})
        try:
            await self._consumer.run(sub)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- the lane handler ----------------------------------------------------------------------

    def route(self, msg: Msg) -> list[tuple[Hashable, Job]]:
        """One job per enabled webhook whose filter matches, on the lane of (webhook,
        repository)."""
        try:
            event = decode(msg.data)
        except UndecodableEvent as error:
            raise Unreadable(str(error)) from None
        hooks = [w for w in self._webhooks.cached() if w.enabled and matches(w.filter, event)]
        renders: dict[int, tuple[bytes, str]] = {}
        return [
            ((webhook.id, event.target.repository), Job(webhook.id, event, renders))
            for webhook in hooks
        ]

    async def handle(self, job: Job) -> None:
        await self._deliver(job)

    def describe(self, job: Job) -> dict[str, str]:
        return {"webhook": job.webhook_id, "event": job.event.id}

    async def give_up(self, job: Job, error: Exception) -> None:
        """A delivery the notifier itself failed: recorded dead with the error, for the API."""
        ident = delivery_id(job.webhook_id, job.event.id)
        webhook = self._current(job.webhook_id)
        claim = self._claims.pop(ident, None)
        if webhook is not None:
            stored = await self._deliveries.read(webhook.id, ident)
            record, revision = stored.record, stored.revision
            if record is None or record.status not in FINAL:
                if record is None:
                    record = base_record(webhook, job.event, ident)
                attempt = webhooks_pb2.DeliveryAttempt(
                    number=len(record.attempts) + 1,
                    instance=self._config.instance,
                    error=f"internal error: {type(error).__name__}: {error}",
                )
                _stamp(attempt.started_at)
                record.attempts.append(attempt)
                record.status = webhooks_pb2.DELIVERY_STATUS_DEAD
                _stamp(record.updated_at)
                try:
                    # Final, so unclaimed: whoever held it has nothing more to send.
                    await self._deliveries.write(record, revision)
                    self.metrics.dead(webhook.id)
                    return
                except Conflict:
                    # Another replica recorded it meanwhile: its record stands.
                    log.info("delivery recorded by another replica", extra={"delivery": ident})
        if claim is not None:
            await self._deliveries.release(claim)

    async def renew(self) -> None:
        await asyncio.gather(
            *(self._deliveries.renew(claim) for claim in list(self._claims.values())),
            return_exceptions=True,  # NATS away: `Claim.live` stops new attempts meanwhile
        )

    async def stopped(self) -> None:
        # Released, the other replicas take these deliveries at once instead of after a lease.
        claims = list(self._claims.values())
        self._claims.clear()
        await asyncio.gather(*(self._deliveries.release(claim) for claim in claims))

    async def _deliver(self, job: Job) -> None:
        ident = delivery_id(job.webhook_id, job.event.id)
        await self._settle(job, ident)
        # Final (its last write gave the claim up), or nothing owed: the claim ends here.
        # (After an error it is kept, and renewed, for the next try.)
        self._claims.pop(ident, None)

    async def _settle(self, job: Job, ident: str) -> None:
        """Until the delivery has a final record: send it while holding its claim, or wait while
        another replica holds it."""
        while True:
            webhook = self._current(job.webhook_id)
            if webhook is None or not webhook.enabled:
                return  # deleted or disabled since the event came: nothing is owed
            claim = self._claims.get(ident)
            if claim is not None and claim.live():
                claim.restore()  # a try that failed may have left an unrecorded attempt
            else:
                self._claims.pop(ident, None)
                got: Claim | Rival | Finished | None = await self._deliveries.claim(
                    webhook.id,
                    ident,
                    self._holder,
                    functools.partial(new_record, webhook, job.event, ident, job.renders),
                )
                if isinstance(got, Rival):
                    got = await self._wait_for(got, ident)
                if isinstance(got, Finished):
                    return
                if not isinstance(got, Claim):
                    continue  # released or gone meanwhile: claim it afresh
                claim = self._claims[ident] = got
            if claim.record.status in FINAL:
                return
            try:
                await self._attempts(claim, job.event.timestamp.ToNanoseconds() / 1e9)
                return
            except _Lost:
                pass

    async def _wait_for(self, rival: Rival, ident: str) -> Claim | Finished | None:
        """While another replica holds the delivery: its final record, or its claim once the
        owner stayed silent a whole lease, or None once the claim is free to take."""
        log.info(
            "delivery claimed by another replica; waiting",
            extra={"delivery": ident, "owner": rival.owner},
        )
        # Its owner is alive as long as it renews (the revision moves); silent for a whole
        # lease, as this replica measures it, the delivery is ours to finish.
        seen = time.monotonic()
        while True:
            await asyncio.sleep(self._poll)
            now = await self._deliveries.inspect(rival, self._holder)
            if isinstance(now, Finished):
                log.info(
                    "delivery finished by another replica",
                    extra={"delivery": ident, "owner": rival.owner},
                )
                return now
            if now is None:
                return None
            if now.revision != rival.revision or not rival.revision:
                rival, seen = now, time.monotonic()
                continue
            if time.monotonic() - seen >= rival.lease:
                claim = await self._deliveries.take_over(rival, self._holder)
                if claim is not None:
                    log.warning(
                        "delivery taken over from a silent replica",
                        extra={"delivery": ident, "owner": rival.owner},
                    )
                    return claim

    def _current(self, webhook_id: str) -> webhooks_pb2.Webhook | None:
        return self._webhooks.cached_get(webhook_id)

    # -- attempts -----------------------------------------------------------------------------

    def _pause(self, retries: int, error: _Retry) -> float:
        """Before retry number `retries` (from 1): the receiver's Retry-After, capped, or
        exponential backoff with jitter."""
        d = self._config.delivery
        if error.retry_after is not None:
            return min(error.retry_after, d.retry_after_max)
        try:
            wait = d.backoff_initial * 2.0 ** (retries - 1)
        except OverflowError:
            wait = d.backoff_max
        return max(0.0, min(wait + random.uniform(0, d.backoff_initial), d.backoff_max))

    async def _attempts(self, claim: Claim, event_time: float = 0.0) -> None:
        d = self._config.delivery
        record = claim.record
        # Age counts from the event (the push), however long it waited for its turn.
        born = record.created_at.ToNanoseconds() / 1e9
        if event_time:
            born = min(born, event_time)
        age = time.time() - born
        deadline = time.monotonic() + max(0.0, d.max_age - age)
        receiver = self._receivers.get(record.url)
        retries = 0
        try:
            while True:
                try:
                    await self._attempt(claim, receiver, deadline)
                    break
                except _Retry as error:
                    retries += 1
                    pause = self._pause(retries, error)
                    if len(record.attempts) >= d.max_attempts or (
                        time.monotonic() + pause >= deadline
                    ):
                        raise
                    await asyncio.sleep(pause)
        except (_Retry, _Expired):
            record.status = webhooks_pb2.DELIVERY_STATUS_DEAD
            _stamp(record.updated_at)
            await self._save(claim)
            self.metrics.dead(record.webhook_id)
            log.warning(
                "delivery dead-lettered",
                extra={
                    "delivery": record.id,
                    "webhook": record.webhook_id,
                    "attempts": len(record.attempts),
                },
            )
            return
        if record.status == webhooks_pb2.DELIVERY_STATUS_SUCCEEDED:
            self.metrics.delivered(record.webhook_id, event_time)

    async def _attempt(self, claim: Claim, receiver: Receiver, deadline: float) -> None:
        record = claim.record
        if not await receiver.breaker.admit(deadline):
            raise _Expired
        try:
            outcome = await self._send(record, receiver, claim)
        except BaseException:
            await asyncio.shield(receiver.breaker.release_probe())
            raise
        await receiver.breaker.record(healthy=not outcome.receiver_failure)
        record.attempts.append(outcome.attempt)
        record.status = (
            webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
            if outcome.succeeded
            else webhooks_pb2.DELIVERY_STATUS_RETRYING
        )
        _stamp(record.updated_at)
        if outcome.succeeded or outcome.retryable:
            await self._save(claim)
        if outcome.retryable:
            raise _Retry(outcome.retry_after)
        if not outcome.succeeded:
            raise _Expired  # a 4xx that retrying will not change: dead-letter now

    async def _save(self, claim: Claim) -> None:
        try:
            await self._deliveries.save(claim)
        except Conflict:
            raise _Lost from None

    async def _send(
        self, record: webhooks_pb2.Delivery, receiver: Receiver, claim: Claim
    ) -> Outcome:
        webhook = self._current(record.webhook_id)
        # The newest secrets sign every attempt, so a rotation applies to retries too.
        secrets = list(webhook.secrets) if webhook is not None else []
        return await self._send_as(record, receiver, secrets, claim, ReceiverTls.of(webhook))

    async def _send_as(
        self,
        record: webhooks_pb2.Delivery,
        receiver: Receiver,
        secrets: list[str],
        claim: Claim | None = None,
        tls: ReceiverTls = SYSTEM_TLS,
    ) -> Outcome:
        headers = {h.name: h.value for h in record.request_headers}
        headers.update(signing.signed_headers(record.id, int(time.time()), record.body, secrets))
        async with receiver.slots:
            # Checked last thing before sending (a slot may take long to come): only a claim
            # renewed recently enough is sure not to be taken over meanwhile.
            if claim is not None and not claim.live():
                raise _Lost
            with self.metrics.sending(), self._span(headers, record.webhook_id) as span:
                outcome = await self._sender.send(
                    record.url, record.body, headers, len(record.attempts) + 1, tls
                )
                span.set("http.response.status_code", outcome.attempt.status_code)
                if not outcome.succeeded:
                    span.error(outcome.attempt.error or f"HTTP {outcome.attempt.status_code}")
        result = SUCCEEDED if outcome.succeeded else FAILED if outcome.retryable else REFUSED
        self.metrics.attempted(record.webhook_id, result, outcome.attempt.latency_ms / 1000)
        return outcome

    @staticmethod
    @contextlib.contextmanager
    def _span(headers: dict[str, str], webhook_id: str) -> Iterator[otel.Span]:
        """The attempt's span when OTel is on; the `traceparent` sent becomes its own."""
        if not otel.enabled() or tracing.HEADER not in headers:
            yield otel.Span(headers.get(tracing.HEADER, ""))
            return
        with otel.delivery_span(headers[tracing.HEADER], webhook_id) as span:
            headers[tracing.HEADER] = span.traceparent
            yield span

    # -- operator requests ---------------------------------------------------------------------

    async def redeliver(self, ident: str) -> webhooks_pb2.Delivery:
        """One attempt now for a recorded delivery, whatever its circuit says; recorded."""
        record = await self._deliveries.get(ident)
        if record is None:
            raise NotFound(f"no delivery {ident!r}")
        webhook = self._current(record.webhook_id) or await self._webhooks.get(record.webhook_id)
        if webhook is None:
            raise NotFound(f"the webhook of delivery {ident!r} no longer exists")
        if not record.body:
            raise InvalidArgument(f"delivery {ident!r} failed before its body was made")
        receiver = self._receivers.get(record.url)
        outcome = await self._send_as(
            record, receiver, list(webhook.secrets), tls=ReceiverTls.of(webhook)
        )
        await receiver.breaker.record(healthy=not outcome.receiver_failure)
        # Recorded over the record as it is now, revision-checked: an attempt written
        # meanwhile (another redelivery, another replica) is kept, never overwritten.
        for _ in range(REDELIVER_WRITES):
            stored = await self._deliveries.read(record.webhook_id, record.id)
            current, revision = stored.record, stored.revision
            if current is None:
                raise NotFound(f"delivery {ident!r} was removed while it was redelivered")
            attempt = current.attempts.add()
            attempt.CopyFrom(outcome.attempt)
            attempt.number = len(current.attempts)
            if outcome.succeeded:
                current.status = webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
            _stamp(current.updated_at)
            # A replica's claim on it is kept (it is still sending, or will see the change);
            # a final record has none.
            holder = stored.holder if current.status not in FINAL else None
            try:
                await self._deliveries.write(current, revision, holder)
            except Conflict:
                continue
            return current
        raise Unavailable(f"delivery {ident!r} kept changing; its attempt was not recorded")

    async def test(self, webhook: webhooks_pb2.Webhook) -> webhooks_pb2.DeliveryAttempt:
        if not webhook.url:
            raise InvalidArgument("the webhook has no url")
        record = new_record(webhook, ping_event(webhook), f"msg_{uuid.uuid4().hex}")
        receiver = self._receivers.get(webhook.url)
        outcome = await self._send_as(
            record, receiver, list(webhook.secrets), tls=ReceiverTls.of(webhook)
        )
        return outcome.attempt

    @property
    def held(self) -> int:
        """Events held (not yet acknowledged) by this replica."""
        return self._consumer.held

    async def refresh_metrics(self) -> None:
        """The gauges read when scraped: events held here, and the shared consumer's backlog."""
        self.metrics.events_held.set(self.held)
        info = await self._js.consumer_info(EVENTS_STREAM, NOTIFIER_CONSUMER)
        self.metrics.consumer_pending.set(int(info.num_pending or 0))
        self.metrics.consumer_ack_pending.set(int(info.num_ack_pending or 0))
