"""OpenTelemetry set-up and the span helpers of a push, its publish, deliveries and copies.

Off by default: unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
`OTEL_EXPORTER_OTLP_ENDPOINT` or the `endpoint` given to `configure`), no opentelemetry module
is imported and every helper falls back to `nimbus.tracing`'s plain `traceparent` handling, so
the behaviour without OTel is exactly what it was. When on, a span's own context IS the
`traceparent` it hands on (the push span's is the one the event carries), so the notifier's and
the replicator's spans are children of the push in the collector.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from nimbus import tracing

_provider: Any = None
_tracer: Any = None


def endpoint_from_env() -> str:
    """The OTLP/HTTP traces URL the standard environment names, "" when none."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else ""


def configure(service_name: str, endpoint: str = "") -> bool:
    """Start exporting spans (BatchSpanProcessor over OTLP/HTTP) when an endpoint is set;
    False, importing nothing, when none is."""
    global _provider, _tracer
    url = endpoint or endpoint_from_env()
    if not url or _provider is not None:
        return _provider is not None
    # Imported here only: a registry without OTel must not load it (footprint tests).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _provider = provider
    _tracer = provider.get_tracer("nimbus")
    return True


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Flush the spans still batched and stop exporting (clean shutdown). Blocking: call it
    from a thread (`asyncio.to_thread`) on the loop."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.force_flush()
        provider.shutdown()


@dataclass
class Span:
    """One span as its caller sees it: the `traceparent` to hand on, and attributes to add."""

    traceparent: str
    _span: Any = field(default=None, repr=False)

    def set(self, key: str, value: str | int) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def error(self, description: str) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))


def _format(span: Any) -> str:
    ctx = span.get_span_context()
    flags = f"{int(ctx.trace_flags):02x}"
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags}"


@contextmanager
def span(
    name: str,
    parent: str | None,
    kind: str = "internal",
    attributes: dict[str, str | int] | None = None,
    new_trace: bool = True,
) -> Iterator[Span]:
    """A span under the `traceparent` `parent`. Without OTel: `tracing.child(parent)` (or
    `tracing.continued` when `new_trace` is False), no span recorded."""
    if _tracer is None:
        value = tracing.child(parent) if new_trace else tracing.continued(parent)
        yield Span(value)
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    valid = tracing.parse(parent)
    context = (
        TraceContextTextMapPropagator().extract({tracing.HEADER: str(valid)}) if valid else None
    )
    kinds = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER}
    with _tracer.start_as_current_span(
        name, context=context, kind=kinds.get(kind, SpanKind.INTERNAL), attributes=attributes
    ) as current:
        yield Span(_format(current), current)


def push_span(parent: str | None, repository: str) -> Any:
    """The manifest PUT: a server span under the client's `traceparent` (a new trace without
    one); its `traceparent` is the one the push's event carries."""
    return span("registry.push", parent, "server", {"nimbus.repository": repository})


def publish_span(traceparent: str) -> Any:
    """The event's publish (outbox / JetStream), a child of the push. Nothing without OTel:
    its context is handed on to no one, so there is no `traceparent` to make on every event."""
    if _tracer is None:
        return nullcontext(Span(traceparent))
    return span("registry.publish", traceparent, "producer")


def copy_span(traceparent: str | None, peer: str, repository: str) -> Any:
    """One replica copy, a child of the event's `traceparent`."""
    attributes: dict[str, str | int] = {
        "nimbus.peer": peer[:200],
        "nimbus.repository": repository[:255],
    }
    return span("replicator.copy", traceparent, "client", attributes, new_trace=False)


def delivery_span(traceparent: str | None, webhook_id: str) -> Any:
    """One webhook delivery attempt, a child of the event's `traceparent`; the caller adds
    `span.set("http.response.status_code", status)`."""
    return span(
        "notifier.delivery",
        traceparent,
        "client",
        {"nimbus.webhook_id": webhook_id[:200]},
        new_trace=False,
    )
