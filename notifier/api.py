"""The `nimbus.v1.Webhooks` gRPC servicer: unpacks requests, calls the services, maps errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import nats.errors
from nats.js import JetStreamContext

from nimbus.grpcerrors import Context, error_mapper
from notifier.deliveries import DeliveryStore
from notifier.dispatcher import Dispatcher
from notifier.errors import InvalidArgument, NotFound, NotifierError
from notifier.history import recent_events
from notifier.watch import EventWatch
from notifier.webhooks import WebhookService
from proto.nimbus.v1 import events_pb2, webhooks_pb2, webhooks_pb2_grpc

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotifierError, grpc.StatusCode.UNAVAILABLE),
    (nats.errors.Error, grpc.StatusCode.UNAVAILABLE),
]


_mapped = error_mapper(_CODES)


class WebhooksServicer(webhooks_pb2_grpc.WebhooksServicer):  # type: ignore[misc]
    def __init__(
        self,
        webhooks: WebhookService,
        deliveries: DeliveryStore,
        dispatcher: Dispatcher,
        js: JetStreamContext,
    ) -> None:
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._dispatcher = dispatcher
        self._js = js

    @_mapped
    async def CreateWebhook(
        self, request: webhooks_pb2.CreateWebhookRequest, context: Context
    ) -> webhooks_pb2.Webhook:
        return await self._webhooks.create(request.webhook)

    @_mapped
    async def GetWebhook(
        self, request: webhooks_pb2.GetWebhookRequest, context: Context
    ) -> webhooks_pb2.Webhook:
        return await self._webhooks.get(request.id)

    @_mapped
    async def ListWebhooks(
        self, request: webhooks_pb2.ListWebhooksRequest, context: Context
    ) -> webhooks_pb2.ListWebhooksResponse:
        return webhooks_pb2.ListWebhooksResponse(webhooks=await self._webhooks.list())

    @_mapped
    async def UpdateWebhook(
        self, request: webhooks_pb2.UpdateWebhookRequest, context: Context
    ) -> webhooks_pb2.Webhook:
        return await self._webhooks.update(request.webhook, list(request.update_mask.paths))

    @_mapped
    async def DeleteWebhook(
        self, request: webhooks_pb2.DeleteWebhookRequest, context: Context
    ) -> webhooks_pb2.DeleteWebhookResponse:
        await self._webhooks.delete(request.id)
        return webhooks_pb2.DeleteWebhookResponse()

    @_mapped
    async def TestWebhook(
        self, request: webhooks_pb2.TestWebhookRequest, context: Context
    ) -> webhooks_pb2.DeliveryAttempt:
        return await self._dispatcher.test(await self._webhooks.stored(request.id))

    @_mapped
    async def ListDeliveries(
        self, request: webhooks_pb2.ListDeliveriesRequest, context: Context
    ) -> webhooks_pb2.ListDeliveriesResponse:
        if not request.webhook_id:
            raise InvalidArgument("webhook_id: required")
        await self._webhooks.get(request.webhook_id)
        deliveries, token = await self._deliveries.list(
            request.webhook_id,
            statuses=list(request.statuses),
            since=request.since if request.HasField("since") else None,
            until=request.until if request.HasField("until") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return webhooks_pb2.ListDeliveriesResponse(deliveries=deliveries, next_page_token=token)

    @_mapped
    async def GetDelivery(
        self, request: webhooks_pb2.GetDeliveryRequest, context: Context
    ) -> webhooks_pb2.Delivery:
        delivery = await self._deliveries.get(request.id)
        if delivery is None:
            raise NotFound(f"no delivery {request.id!r}")
        return delivery

    @_mapped
    async def Redeliver(
        self, request: webhooks_pb2.RedeliverRequest, context: Context
    ) -> webhooks_pb2.Delivery:
        return await self._dispatcher.redeliver(request.id)

    @_mapped
    async def ListEvents(
        self, request: webhooks_pb2.ListEventsRequest, context: Context
    ) -> webhooks_pb2.ListEventsResponse:
        events = await recent_events(self._js, request.filter, request.limit)
        return webhooks_pb2.ListEventsResponse(events=events)

    async def WatchEvents(
        self, request: webhooks_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[events_pb2.Event]:
        try:
            async with EventWatch(self._js, request.filter) as watch:
                # Headers go out once subscribed: a client that awaits them misses no event.
                await context.send_initial_metadata(())
                async for event in watch:
                    yield event
        except nats.errors.Error as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error) or "NATS unavailable")
