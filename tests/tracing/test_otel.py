"""nimbus.otel against an OTLP/HTTP collector of the test's own (protobuf export requests).

The span helpers run in a child process (the tracer provider is process-wide): a push span under a
client's `traceparent`, its publish, and a replica copy continuing the push's `traceparent` as an
event carries it; the collector must receive them in one trace with the right parent links.
"""

from __future__ import annotations

import asyncio
import os
import sys

from tests.tracing.collector import Collector

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

SCRIPT = f"""
from nimbus import otel
assert otel.configure("nimbus-registry")
with otel.push_span("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "library/app") as push:
    with otel.publish_span(push.traceparent):
        pass
with otel.copy_span(push.traceparent, "http://peer:5000", "library/app") as copy:
    copy.set("http.response.status_code", 201)
print(push.traceparent)
otel.shutdown()
"""

OFF_SCRIPT = """
import sys
from nimbus import otel
assert not otel.configure("nimbus-registry")
with otel.push_span("00-%s-%s-01", "library/app") as push:
    pass
print(push.traceparent)
print(any(name.startswith("opentelemetry") for name in sys.modules))
"""


async def _run(script: str, env: dict[str, str]) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode().split()


async def test_push_publish_and_copy_spans_are_one_trace() -> None:
    collector = await Collector().start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        (carried,) = await _run(SCRIPT, env)
    finally:
        await collector.stop()
    spans = {r.span.name: r.span for r in collector.spans()}
    assert set(spans) == {"registry.push", "registry.publish", "replicator.copy"}
    push, publish, copy = (
        spans["registry.push"],
        spans["registry.publish"],
        spans["replicator.copy"],
    )
    assert {s.trace_id.hex() for s in spans.values()} == {CLIENT_TRACE}
    assert push.parent_span_id.hex() == CLIENT_SPAN
    assert publish.parent_span_id == push.span_id
    assert copy.parent_span_id == push.span_id
    # The traceparent handed on (the event's) is the push span's own context.
    assert carried == f"00-{CLIENT_TRACE}-{push.span_id.hex()}-01"
    attributes = {a.key: a.value.string_value for a in copy.attributes}
    assert attributes["nimbus.peer"] == "http://peer:5000"
    assert attributes["nimbus.repository"] == "library/app"


async def test_off_by_default_no_spans_no_import() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    carried, imported = await _run(OFF_SCRIPT % (CLIENT_TRACE, CLIENT_SPAN), env)
    assert carried.startswith(f"00-{CLIENT_TRACE}-") and CLIENT_SPAN not in carried
    assert imported == "False"
