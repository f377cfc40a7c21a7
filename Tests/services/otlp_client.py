"""A real OpenTelemetry Python SDK client: makes spans, metrics and logs with known content,
exports them through the chosen OTLP exporter, and prints (as JSON) what it sent and whether
each export was acknowledged. Runs in the proto venv (http, grpc) or the JSON venv (json).

usage: otlp_client.py PROTOCOL ENDPOINT [--gzip] [--tag TAG] [--header K=V ...] [--count N]
"""
import argparse
import json
import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor, InMemoryLogRecordExporter


def exporters(protocol, endpoint, gzip, headers):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        c = Compression.Gzip if gzip else Compression.NoCompression
        return (OTLPSpanExporter(endpoint=endpoint + "/v1/traces", compression=c, headers=headers),
                OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", compression=c, headers=headers),
                OTLPLogExporter(endpoint=endpoint + "/v1/logs", compression=c, headers=headers))
    if protocol == "json":
        from opentelemetry.exporter.otlp.common.http import Compression
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter
        c = Compression.GZIP if gzip else Compression.NONE
        return (OTLPSpanExporter(endpoint=endpoint + "/v1/traces", compression=c, headers=headers),
                OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", compression=c, headers=headers),
                OTLPLogExporter(endpoint=endpoint + "/v1/logs", compression=c, headers=headers))
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    c = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    h = tuple(headers.items())
    return (OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=c, headers=h),
            OTLPMetricExporter(endpoint=endpoint, insecure=True, compression=c, headers=h),
            OTLPLogExporter(endpoint=endpoint, insecure=True, compression=c, headers=h))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("protocol", choices=["http", "grpc", "json"])
    p.add_argument("endpoint")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--tag", default="t")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--count", type=int, default=3)
    a = p.parse_args()
    headers = dict(h.split("=", 1) for h in a.header)
    span_exporter, metric_exporter, log_exporter = exporters(a.protocol, a.endpoint, a.gzip, headers)
    resource = Resource.create({"service.name": "svc-" + a.tag})

    memory = InMemorySpanExporter()
    tracer = TracerProvider(resource=resource)
    tracer.add_span_processor(SimpleSpanProcessor(memory))
    t = tracer.get_tracer("scope-" + a.tag)
    for i in range(a.count):
        with t.start_as_current_span("parent-%s-%d" % (a.tag, i), attributes={"i": i, "tag": a.tag, "ratio": 0.5}):
            with t.start_as_current_span("child-%s-%d" % (a.tag, i)) as child:
                child.add_event("evt", {"k": "v"})
    spans = memory.get_finished_spans()
    sent_spans = [{"trace_id": "%032x" % s.context.trace_id, "span_id": "%016x" % s.context.span_id,
                   "parent": "%016x" % s.parent.span_id if s.parent else "", "name": s.name,
                   "attributes": {k: v for k, v in s.attributes.items()}} for s in spans]
    traces_ok = span_exporter.export(spans).name == "SUCCESS"

    reader = InMemoryMetricReader()
    meter = MeterProvider(resource=resource, metric_readers=[reader]).get_meter("scope-" + a.tag)
    counter = meter.create_counter("requests-" + a.tag)
    counter.add(a.count, {"tag": a.tag})
    meter.create_histogram("latency-" + a.tag, unit="ms").record(12.5, {"tag": a.tag})
    metrics_ok = metric_exporter.export(reader.get_metrics_data()).name == "SUCCESS"

    logs_memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs_memory))
    log = logging.getLogger("client-" + a.tag)
    log.propagate = False
    log.addHandler(LoggingHandler(logger_provider=provider))
    with t.start_as_current_span("log-parent-" + a.tag):
        for i in range(a.count):
            log.warning("hello %s %d", a.tag, i)
    records = [r.log_record if hasattr(r, "log_record") else r for r in logs_memory.get_finished_logs()]
    logs_ok = log_exporter.export(logs_memory.get_finished_logs()).name == "SUCCESS"
    sent_logs = [{"body": str(r.body), "trace_id": "%032x" % (r.trace_id or 0)} for r in records]

    json.dump({"traces_ok": traces_ok, "metrics_ok": metrics_ok, "logs_ok": logs_ok, "spans": sent_spans,
               "metrics": ["requests-" + a.tag, "latency-" + a.tag], "logs": sent_logs}, sys.stdout)


if __name__ == "__main__":
    main()
