"""Writes the OTLP/HTTP protobuf request bodies `make bench-services` posts: spans built with the
OpenTelemetry Python SDK and serialized exactly as its OTLP exporters do
(trace_encoder.encode_spans(spans).SerializeToString()).

Usage: python make_bodies.py OUT_DIR [N ...]   (default N: 1 10 100) -> OUT_DIR/spans-N.pb

Every span of one request shares a trace id that starts with the 8 bytes "SWBENCH!"; the
benchmark's wrk script (and the SQLite ceiling) replaces the 8 bytes after them with a counter,
so every request is a new trace and the writer stores every span (none is a duplicate)."""
import os
import sys

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

MARKER = b"SWBENCH!"


class MarkedTraceIds(RandomIdGenerator):
    def generate_trace_id(self):
        return int.from_bytes(MARKER + b"\x00" * 7 + b"\x01", "big")


def body(n):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "service.version": "1.4.2",
                                  "deployment.environment": "bench", "host.name": "bench-host-01"}),
        id_generator=MarkedTraceIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("signalwal.bench", "1.0")
    # A request handler and its children: an HTTP server span, then client and internal spans.
    with tracer.start_as_current_span("POST /api/checkout", kind=SpanKind.SERVER, attributes={
            "http.request.method": "POST", "http.route": "/api/checkout", "url.scheme": "https",
            "http.response.status_code": 200, "server.address": "shop.example.com",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) bench"}) as root:
        for i in range(n - 1):
            kind = SpanKind.CLIENT if i % 2 == 0 else SpanKind.INTERNAL
            with tracer.start_as_current_span("SELECT orders" if i % 2 == 0 else "render.step", kind=kind, attributes={
                    "db.system": "postgresql", "db.operation.name": "SELECT", "db.collection.name": "orders",
                    "server.port": 5432, "step": i}) as span:
                if i % 10 == 3:
                    span.add_event("retry", {"attempt": 1})
                    span.set_status(Status(StatusCode.ERROR, "timeout"))
        root.set_attribute("app.items", n)
    provider.shutdown()
    spans = exporter.get_finished_spans()
    assert len(spans) == n, (len(spans), n)
    data = encode_spans(spans).SerializeToString()
    assert MARKER in data
    return data


def main():
    out = sys.argv[1]
    counts = [int(a) for a in sys.argv[2:]] or [1, 10, 100]
    os.makedirs(out, exist_ok=True)
    for n in counts:
        data = body(n)
        with open(os.path.join(out, "spans-%d.pb" % n), "wb") as f:
            f.write(data)
        print("spans-%d.pb %d bytes" % (n, len(data)))


if __name__ == "__main__":
    main()
