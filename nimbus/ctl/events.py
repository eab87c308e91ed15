"""`nimbus ctl events watch`: live registry events from the notifier, as they happen."""

from __future__ import annotations

from datetime import UTC, datetime

from nimbus.ctl.command import Commands, Ctl, add_command, add_noun
from proto.nimbus.v1 import events_pb2
from proto.nimbus.v1 import webhooks_pb2 as pb
from proto.nimbus.v1 import webhooks_pb2_grpc as pb_grpc

SERVICE = "notifier"


def _line(event: events_pb2.Event) -> str:
    t = event.target
    when = datetime.fromtimestamp(event.timestamp.ToNanoseconds() / 1e9, UTC)
    what = f"{t.repository}:{t.tag}" if t.tag else t.repository
    site = event.source.site
    if event.source.origin_site and event.source.origin_site != site:
        site += f" (from {event.source.origin_site})"
    return f"{when:%H:%M:%S.%f}"[:-3] + f"  {event.action:<6}  {what}  {t.digest}  {site}"


async def watch(ctl: Ctl) -> None:
    a = ctl.args
    selector = pb.EventFilter(
        actions=a.action or [],
        repositories=a.repo or [],
        tags=a.tag or [],
        media_types=a.media_type or [],
    )
    stub = pb_grpc.WebhooksStub(ctl.channel(SERVICE))
    # No deadline: the stream lasts until interrupted.
    async for event in stub.WatchEvents(pb.WatchEventsRequest(filter=selector)):
        ctl.out.stream_item(event, _line(event))


def register(commands: Commands) -> None:
    events = add_noun(commands, "events", "registry events")
    p = add_command(events, "watch", watch, SERVICE, "print events as they happen (Ctrl-C stops)")
    p.add_argument("--action", action="append", help="push, pull, delete, mount")
    p.add_argument("--repo", action="append", help="repository glob (team/*)")
    p.add_argument("--tag", action="append", help="tag glob (v*)")
    p.add_argument("--media-type", action="append", help="media type glob")
