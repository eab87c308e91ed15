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
delivery is sent only under its claim in the deliveries bucket: taken atomically before the
first attempt and renewed with the progress acks. A replica that finds another's claim sends
nothing: it holds the message until the record is final (then acknowledges it), or takes the
claim over once its owner has not renewed it for a whole lease (the owner died or lost NATS).

A delivery that fails inside the notifier (an event that cannot be rendered, a webhook stored
without validation) is tried a few times, then recorded dead with the error (`internal error:`
in its attempt), and its lane goes on with the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from nimbus import tracing
from nimbus.events import UndecodableEvent, decode
from nimbus.lanes import LaneConsumer, LaneHandler, LaneSettings, Unreadable
from nimbus.streams import EVENTS_STREAM, EVENTS_SUBJECTS, NOTIFIER_CONSUMER
from notifier import bodies, signing
from notifier.config import NotifierConfig
from notifier.deliveries import (
    EXCERPT_CHARS,
    Claim,
    Conflict,
    DeliveryStore,
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
FINAL = (webhooks_pb2.DELIVERY_STATUS_SUCCEEDED, webhooks_pb2.DELIVERY_STATUS_DEAD)
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


@dataclass(slots=True)
class _Owned:
    """A delivery this replica holds the claim of, with its record and the record's revision
    (0 while not stored yet)."""

    claim: Claim
    record: webhooks_pb2.Delivery
    revision: int


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
    record.created_at.GetCurrentTime()
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
    # The delivery is a span of the push's trace (every attempt sends it).
    trace = tracing.continued(event.traceparent)
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
        self._backoff = wait_exponential_jitter(
            initial=d.backoff_initial, max=d.backoff_max, jitter=d.backoff_initial
        )
        # Names this process in claims: a restarted replica is another owner than before.
        self._owner = f"{config.instance}/{uuid.uuid4().hex[:8]}"
        self._lease = LEASE_ACK_WAITS * config.consumer.ack_wait
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
        if webhook is not None:
            record, revision = await self._deliveries.read(webhook.id, ident)
            if record is None or record.status not in FINAL:
                if record is None:
                    record = base_record(webhook, job.event, ident)
                attempt = webhooks_pb2.DeliveryAttempt(
                    number=len(record.attempts) + 1,
                    instance=self._config.instance,
                    error=f"internal error: {type(error).__name__}: {error}",
                )
                attempt.started_at.GetCurrentTime()
                record.attempts.append(attempt)
                record.status = webhooks_pb2.DELIVERY_STATUS_DEAD
                record.updated_at.GetCurrentTime()
                try:
                    await self._deliveries.write(record, revision)
                    self.metrics.dead(webhook.id)
                except Conflict:
                    # Another replica recorded it meanwhile: its record stands.
                    log.info("delivery recorded by another replica", extra={"delivery": ident})
        claim = self._claims.pop(ident, None)
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
        # Final, or nothing owed: the claim ends here. (After an error it is kept, and renewed,
        # for the next try.)
        self._claims.pop(ident, None)

    async def _settle(self, job: Job, ident: str) -> None:
        """Until the delivery has a final record: send it while holding its claim, or wait while
        another replica holds it."""
        rival: Rival | None = None
        seen = 0.0
        while True:
            webhook = self._current(job.webhook_id)
            if webhook is None or not webhook.enabled:
                return  # deleted or disabled since the event came: nothing is owed
            claim = self._claims.get(ident)
            if claim is None or not claim.live():
                got = await self._deliveries.claim(webhook.id, ident, self._owner, self._lease)
                if isinstance(got, Rival):
                    self._claims.pop(ident, None)  # ours no more, if it was
                    claim = None
                    record, _ = await self._deliveries.read(webhook.id, ident)
                    if record is not None and record.status in FINAL:
                        log.info(
                            "delivery finished by another replica",
                            extra={"delivery": ident, "owner": got.owner},
                        )
                        return
                    # Its owner is alive as long as it renews (the revision moves); silent for
                    # a whole lease, as this replica measures it, the delivery is ours to finish.
                    now = time.monotonic()
                    if rival is None or got.revision != rival.revision:
                        if rival is None:
                            log.info(
                                "delivery claimed by another replica; waiting",
                                extra={"delivery": ident, "owner": got.owner},
                            )
                        rival, seen = got, now
                    elif now - seen >= got.lease:
                        claim = await self._deliveries.take_over(got, self._owner, self._lease)
                        if claim is not None:
                            log.warning(
                                "delivery taken over from a silent replica",
                                extra={"delivery": ident, "owner": got.owner},
                            )
                    if claim is None:
                        await asyncio.sleep(self._poll)
                        continue
                else:
                    claim = got
                self._claims[ident] = claim
            if claim.fresh:
                record, revision = None, 0  # never claimed before, so never recorded
            else:
                record, revision = await self._deliveries.read(webhook.id, ident)
                if record is not None and record.status in FINAL:
                    return
            claim.fresh = False
            if record is None:
                record = new_record(webhook, job.event, ident, job.renders)
            try:
                await self._attempts(
                    _Owned(claim, record, revision), job.event.timestamp.ToNanoseconds() / 1e9
                )
                return
            except _Lost:
                rival = None

    def _current(self, webhook_id: str) -> webhooks_pb2.Webhook | None:
        for webhook in self._webhooks.cached():
            if webhook.id == webhook_id:
                return webhook
        return None

    # -- attempts -----------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retry) and error.retry_after is not None:
            return min(error.retry_after, self._config.delivery.retry_after_max)
        return float(self._backoff(state))

    async def _attempts(self, owned: _Owned, event_time: float = 0.0) -> None:
        d = self._config.delivery
        record = owned.record
        # Age counts from the event (the push), however long it waited for its turn.
        born = record.created_at.ToNanoseconds() / 1e9
        if event_time:
            born = min(born, event_time)
        age = time.time() - born
        deadline = time.monotonic() + max(0.0, d.max_age - age)
        receiver = self._receivers.get(record.url)

        def stop(state: RetryCallState) -> bool:
            return (
                len(record.attempts) >= d.max_attempts
                or time.monotonic() + state.upcoming_sleep >= deadline
            )

        retrying = AsyncRetrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(owned, receiver, deadline)
        except (_Retry, _Expired):
            record.status = webhooks_pb2.DELIVERY_STATUS_DEAD
            record.updated_at.GetCurrentTime()
            await self._save(owned)
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

    async def _attempt(self, owned: _Owned, receiver: Receiver, deadline: float) -> None:
        record = owned.record
        if not await receiver.breaker.admit(deadline):
            raise _Expired
        try:
            outcome = await self._send(record, receiver, owned.claim)
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
        record.updated_at.GetCurrentTime()
        if outcome.succeeded or outcome.retryable:
            await self._save(owned)
        if outcome.retryable:
            raise _Retry(outcome.retry_after)
        if not outcome.succeeded:
            raise _Expired  # a 4xx that retrying will not change: dead-letter now

    async def _save(self, owned: _Owned) -> None:
        try:
            owned.revision = await self._deliveries.write(owned.record, owned.revision)
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
            with self.metrics.sending():
                outcome = await self._sender.send(
                    record.url, record.body, headers, len(record.attempts) + 1, tls
                )
        result = SUCCEEDED if outcome.succeeded else FAILED if outcome.retryable else REFUSED
        self.metrics.attempted(record.webhook_id, result, outcome.attempt.latency_ms / 1000)
        return outcome

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
            current, revision = await self._deliveries.read(record.webhook_id, record.id)
            if current is None:
                raise NotFound(f"delivery {ident!r} was removed while it was redelivered")
            attempt = current.attempts.add()
            attempt.CopyFrom(outcome.attempt)
            attempt.number = len(current.attempts)
            if outcome.succeeded:
                current.status = webhooks_pb2.DELIVERY_STATUS_SUCCEEDED
            current.updated_at.GetCurrentTime()
            try:
                await self._deliveries.write(current, revision)
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
