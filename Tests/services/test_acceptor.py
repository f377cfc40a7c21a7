"""signaldb-acceptor with real clients: the OpenTelemetry Python SDK's exporters (HTTP protobuf,
HTTP JSON, gRPC; with and without gzip), raw HTTP for every status code, gRPC status details,
authentication, tenant limits, backpressure with the writer down, kill -9 and SIGTERM, dead
letters. Each test checks what the WAL holds (`signalwal dump`) or what the writer received.

Run: make test-services (or python -m unittest -v test_acceptor from this folder, with
SIGNALDB_BUILD pointing at a build containing signaldb-acceptor and signalwal)."""
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import zlib

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from harness import (ACCEPTOR, REDUCED, Acceptor, FakeWriter, decode_envelope, post, wal_records)

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_PYTHON = os.environ.get("SIGNALDB_PROTO_PYTHON", sys.executable)
JSON_PYTHON = os.environ.get("SIGNALDB_JSON_PYTHON")
REQUEST_TYPES = {"traces": trace_service_pb2.ExportTraceServiceRequest,
                 "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
                 "logs": logs_service_pb2.ExportLogsServiceRequest}


def span_request(n=1, name="s", trace_id=None, span_id=None, attr_bytes=0):
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "raw"
    ss = rs.scope_spans.add()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = trace_id if trace_id is not None else os.urandom(16)
        sp.span_id = span_id if span_id is not None else os.urandom(8)
        sp.name = "%s-%d" % (name, i)
        sp.kind = trace_pb2.Span.SPAN_KIND_SERVER
        if attr_bytes:
            a = sp.attributes.add()
            a.key, a.value.string_value = "blob", "x" * attr_bytes
    return req


def decoded_wal(wal_dir):
    out = []
    for lsn, payload in wal_records(wal_dir):
        env = decode_envelope(payload)
        msg = REQUEST_TYPES[env["signal"]].FromString(env["payload"])
        out.append((lsn, env, msg))
    return out


def spans_of(msg):
    return [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]


class AcceptorTestCase(unittest.TestCase):
    writer_key = None
    acceptor_env = {}

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="acceptor-test-")
        self.wal = os.path.join(self.tmp, "wal")
        self.writer = FakeWriter(required_key=self.writer_key).start()
        self.acceptor = Acceptor(self.wal, self.writer.port, **self.acceptor_env).start()

    def tearDown(self):
        self.acceptor.kill()
        self.writer.stop()
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def wal_count(self):
        """Records appended so far: the highest LSN on disk (LSNs start at 1 and none is
        skipped; older segments may already be recycled once the writer took them)."""
        records = wal_records(self.wal)
        return max((lsn for lsn, _ in records), default=0)

    def client(self, protocol, gzip=False, tag="t", headers=(), python=None):
        endpoint = self.acceptor.grpc_target if protocol == "grpc" else self.acceptor.http
        cmd = [python or PROTO_PYTHON, os.path.join(HERE, "otlp_client.py"), protocol, endpoint, "--tag", tag]
        if gzip:
            cmd.append("--gzip")
        for h in headers:
            cmd += ["--header", h]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        return json.loads(out.stdout)


class TestRealClients(AcceptorTestCase):
    """The SDK's exporters; the WAL and then the writer hold exactly what they sent."""

    def check_client(self, protocol, gzip, python=None):
        tag = "%s%s" % (protocol, "gz" if gzip else "")
        sent = self.client(protocol, gzip=gzip, tag=tag, python=python)
        self.assertTrue(sent["traces_ok"] and sent["metrics_ok"] and sent["logs_ok"], sent)
        records = decoded_wal(self.wal)
        by_signal = {}
        for _, env, msg in records:
            self.assertEqual((env["tenant"], env["dataset"]), ("default", "default"))
            self.assertEqual(env["encoding"], "json" if protocol == "json" else "protobuf")
            by_signal.setdefault(env["signal"], []).append((env, msg))
        # Traces: every span with its ids, name, parent and attributes.
        got = {}
        for env, msg in by_signal["traces"]:
            self.assertEqual(env["items"], len(spans_of(msg)))
            for rs in msg.resource_spans:
                service = [a.value.string_value for a in rs.resource.attributes if a.key == "service.name"]
                self.assertEqual(service, ["svc-" + tag])
            for s in spans_of(msg):
                attrs = {}
                for a in s.attributes:
                    v = a.value
                    attrs[a.key] = v.string_value if v.HasField("string_value") else v.int_value if v.HasField("int_value") else v.double_value
                got[s.span_id.hex()] = {"trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                                        "parent": s.parent_span_id.hex(), "name": s.name, "attributes": attrs}
        self.assertEqual(len(got), len(sent["spans"]))
        for span in sent["spans"]:
            self.assertEqual(got[span["span_id"]], span)
        # Metrics: both instruments, by name. Logs: bodies and the trace id they carry.
        names = {m.name for env, msg in by_signal["metrics"] for rm in msg.resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics}
        self.assertEqual(names, set(sent["metrics"]))
        logs = [(r.body.string_value, r.trace_id.hex()) for env, msg in by_signal["logs"] for rl in msg.resource_logs
                for sl in rl.scope_logs for r in sl.log_records]
        self.assertEqual(sorted(logs), sorted((l["body"], l["trace_id"]) for l in sent["logs"]))
        # Forwarded: the writer holds every record the WAL holds, byte for byte.
        self.assertTrue(self.writer.wait_for(lambda w: len(w.stored) == len(records)), self.acceptor.read_log())
        stored = {lsn: env for (_, lsn), env in self.writer.envelopes().items()}
        for lsn, env, msg in records:
            self.assertEqual(stored[lsn]["payload"], env["payload"])

    def test_http_protobuf(self):
        self.check_client("http", gzip=False)

    def test_http_protobuf_gzip(self):
        self.check_client("http", gzip=True)

    def test_grpc(self):
        self.check_client("grpc", gzip=False)

    def test_grpc_gzip(self):
        self.check_client("grpc", gzip=True)

    @unittest.skipUnless(JSON_PYTHON, "SIGNALDB_JSON_PYTHON (the OTLP/JSON exporter's venv) is not set")
    def test_http_json(self):
        self.check_client("json", gzip=False, python=JSON_PYTHON)

    @unittest.skipUnless(JSON_PYTHON, "SIGNALDB_JSON_PYTHON (the OTLP/JSON exporter's venv) is not set")
    def test_http_json_gzip(self):
        self.check_client("json", gzip=True, python=JSON_PYTHON)


class TestStatusCodes(AcceptorTestCase):
    """Every status the OTLP spec names, from a real HTTP client; nothing appended for errors.
    The writer is down, so every record stays in the WAL to be decoded."""
    acceptor_env = {"ACCEPTOR_WAL_MAX_BYTES": "64MiB"}

    def setUp(self):
        super().setUp()
        self.writer.mode = "down"

    def assert_refused(self, status, expect, body, content_type="application/x-protobuf"):
        self.assertEqual(status[0], expect, status[2][:300])
        if content_type == "application/json":
            doc = json.loads(status[2])
            self.assertIn("message", doc)
            self.assertIn("code", doc)
        else:
            from google.rpc import status_pb2  # noqa: shipped with googleapis-common-protos
            st = status_pb2.Status.FromString(status[2])
            self.assertTrue(st.message)

    def test_every_error_status_and_nothing_appended(self):
        good = span_request(2).SerializeToString()
        url = self.acceptor.http + "/v1/traces"
        before = self.wal_count()
        cases = [
            ("wrong path", post(self.acceptor.http + "/v1/spans", good), 404),
            ("GET", post(url, None, method="GET"), 405),
            ("PUT", post(url, good, method="PUT"), 405),
            ("text/plain", post(url, good, content_type="text/plain"), 415),
            ("no content type", post(url, good, content_type=None), 415),
            ("brotli", post(url, good, headers={"Content-Encoding": "br"}), 415),
            ("malformed protobuf", post(url, b"\xff\xff\xff\xff\x0f garbage"), 400),
            ("truncated protobuf", post(url, good[:len(good) // 2]), 400),
            ("truncated gzip", post(url, gzip.compress(good)[:-12], headers={"Content-Encoding": "gzip"}), 400),
            ("gzip of garbage", post(url, b"\x1f\x8b" + os.urandom(64), headers={"Content-Encoding": "gzip"}), 400),
            ("gzip bomb", post(url, gzip.compress(b"\0" * (64 << 20)), headers={"Content-Encoding": "gzip"}), 413),
            ("deflate bomb", post(url, zlib.compress(b"\0" * (8 << 20)), headers={"Content-Encoding": "deflate"}), 413),
            ("oversize body", post(url, b"\0" * (600 << 10)), 413),
            ("zero trace id", post(url, span_request(3, trace_id=b"\0" * 16).SerializeToString()), 400),
            ("short span id", post(url, span_request(1, span_id=b"\1" * 4).SerializeToString()), 400),
            ("bad tenant", post(url, good, headers={"X-Tenant-ID": "a/b"}), 400),
        ]
        for name, status, expect in cases:
            with self.subTest(name):
                self.assert_refused(status, expect, good)
        json_cases = [
            ("invalid JSON", b"{not json", 400),
            ("hex id with non-hex digits", json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
                {"traceId": "zz" * 16, "spanId": "ab" * 8, "name": "x"}]}]}]}).encode(), 400),
            ("hex id of the wrong length", json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
                {"traceId": "ab" * 12, "spanId": "ab" * 8, "name": "x"}]}]}]}).encode(), 400),
        ]
        for name, body, expect in json_cases:
            with self.subTest(name):
                self.assert_refused(post(url, body, content_type="application/json"), expect, body, "application/json")
        self.assertEqual(self.wal_count(), before, "a refused request was appended")
        # The metrics count them by status.
        self.assertGreaterEqual(self.acceptor.metric_sum("signaldb_acceptor_requests_total", status="400"), 9)

    def test_partial_success_stores_only_valid_spans(self):
        req = span_request(3, name="ok")
        bad = spans_of(req)[1]
        bad.trace_id = b"\0" * 16
        status, headers, body = post(self.acceptor.http + "/v1/traces", req.SerializeToString())
        self.assertEqual(status, 200)
        resp = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
        self.assertEqual(resp.partial_success.rejected_spans, 1)
        self.assertIn("trace_id", resp.partial_success.error_message)
        [(lsn, env, msg)] = decoded_wal(self.wal)
        self.assertTrue(env["filtered"])
        self.assertEqual([s.name for s in spans_of(msg)], ["ok-0", "ok-2"])

    def test_otlp_json_quirks(self):
        doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]},
                                  "futureField": {"x": 1},
                                  "scopeSpans": [{"scope": {"name": "sc"}, "spans": [
                                      {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174",
                                       "parentSpanId": "", "name": "a", "kind": "SPAN_KIND_CLIENT",
                                       "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000000000001,
                                       "links": [{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"}],
                                       "someNewSpanField": [1, 2, 3]},
                                      {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
                                       "name": "b", "kind": 2}]}]}]}
        status, headers, body = post(self.acceptor.http + "/v1/traces", json.dumps(doc).encode(), content_type="application/json")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("Content-Type"), "application/json")
        self.assertEqual(json.loads(body), {})
        [(lsn, env, msg)] = decoded_wal(self.wal)
        a, b = spans_of(msg)
        self.assertEqual(a.trace_id.hex(), "5b8efff798038103d269b633813fc60c")
        self.assertEqual(a.span_id.hex(), "eee19b7ec3c1b174")
        self.assertEqual(a.kind, trace_pb2.Span.SPAN_KIND_CLIENT)
        self.assertEqual((a.start_time_unix_nano, a.end_time_unix_nano), (1700000000000000000, 1700000000000000001))
        self.assertEqual(a.links[0].trace_id.hex(), "0102030405060708090a0b0c0d0e0f10")
        self.assertEqual(b.kind, trace_pb2.Span.SPAN_KIND_SERVER)
        # Logs and exemplars carry hex ids too.
        logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "5", "severityNumber": "SEVERITY_NUMBER_WARN",
                                                                 "body": {"stringValue": "hi"},
                                                                 "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}]}
        self.assertEqual(post(self.acceptor.http + "/v1/logs", json.dumps(logs).encode(), content_type="application/json")[0], 200)
        metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": {"dataPoints": [
            {"asInt": "7", "timeUnixNano": "9", "exemplars": [{"asDouble": 1.5, "traceId": "5b8efff798038103d269b633813fc60c",
                                                               "spanId": "eee19b7ec3c1b174"}]}]}}]}]}]}
        self.assertEqual(post(self.acceptor.http + "/v1/metrics", json.dumps(metrics).encode(), content_type="application/json")[0], 200)
        records = decoded_wal(self.wal)
        log = records[1][2].resource_logs[0].scope_logs[0].log_records[0]
        self.assertEqual((log.trace_id.hex(), log.span_id.hex(), log.severity_number), ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", 13))
        point = records[2][2].resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
        self.assertEqual((point.as_int, point.exemplars[0].trace_id.hex()), (7, "5b8efff798038103d269b633813fc60c"))

    def test_random_sizes_across_the_limit(self):
        """Random bodies from 1 KiB to 1 MiB, raw, gzip and deflate, against the 512 KiB limit:
        200 exactly when the decoded body fits, and one WAL record per 200."""
        rng = random.Random(int(os.environ.get("SEED", "12")))
        limit = 512 << 10
        accepted = 0
        for i in range(12 if REDUCED else 40):
            size = rng.choice([rng.randrange(1 << 10, 1 << 20), limit - rng.randrange(0, 200), limit + rng.randrange(1, 200)])
            req = span_request(1, name="sz%d" % i, attr_bytes=max(0, size - 120))
            body = req.SerializeToString()
            coding = rng.choice(["identity", "gzip", "deflate"])
            data = {"identity": body, "gzip": gzip.compress(body), "deflate": zlib.compress(body)}[coding]
            headers = {} if coding == "identity" else {"Content-Encoding": coding}
            status = post(self.acceptor.http + "/v1/traces", data, headers=headers)[0]
            with self.subTest(size=len(body), coding=coding):
                self.assertEqual(status, 200 if len(body) <= limit else 413)
            accepted += status == 200
        self.assertEqual(self.wal_count(), accepted)


class TestGRPCStatus(AcceptorTestCase):
    def test_invalid_argument_for_bad_data(self):
        channel = grpc.insecure_channel(self.acceptor.grpc_target)
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with self.assertRaises(grpc.RpcError) as ctx:
            export(b"\xff\xff\xff garbage")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as ctx:
            export(span_request(1, trace_id=b"\0" * 16).SerializeToString())
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        ok = export(span_request(2).SerializeToString())
        self.assertEqual(trace_service_pb2.ExportTraceServiceResponse.FromString(ok).partial_success.rejected_spans, 0)
        self.assertEqual(self.wal_count(), 1)


class TestAuthentication(AcceptorTestCase):
    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="keys-")
        self.keys = os.path.join(tmp, "keys.json")
        with open(self.keys, "w") as f:
            json.dump({"keys": [{"key": "key-acme-123", "tenant": "acme", "signals": ["traces"]},
                                {"key": "key-globex-9", "tenant": "globex"}]}, f)
        self.acceptor_env = {"ACCEPTOR_API_KEYS_FILE": self.keys}
        super().setUp()

    def test_keys(self):
        url = self.acceptor.http + "/v1/traces"
        body = span_request(1).SerializeToString()
        cases = [
            ("no key", {}, 401), ("unknown key", {"Authorization": "Bearer nope-nope-nope"}, 401),
            ("not bearer", {"Authorization": "Basic a2V5LWFjbWUtMTIz"}, 401),
            ("other tenant", {"Authorization": "Bearer key-acme-123", "X-Tenant-ID": "globex"}, 403),
        ]
        for name, headers, expect in cases:
            with self.subTest(name):
                self.assertEqual(post(url, body, headers=headers)[0], expect)
        self.assertEqual(post(self.acceptor.http + "/v1/logs", logs_service_pb2.ExportLogsServiceRequest().SerializeToString(),
                              headers={"Authorization": "Bearer key-acme-123"})[0], 403)
        self.assertEqual(self.wal_count(), 0)
        self.assertEqual(post(url, body, headers={"Authorization": "Bearer key-acme-123"})[0], 200)
        self.assertEqual(post(url, body, headers={"Authorization": "Bearer key-globex-9", "X-Dataset-ID": "prod"})[0], 200)
        tenants = [(env["tenant"], env["dataset"]) for _, env, _ in decoded_wal(self.wal)]
        self.assertEqual(tenants, [("acme", "default"), ("globex", "prod")])
        # gRPC: the same keys in metadata.
        channel = grpc.insecure_channel(self.acceptor.grpc_target)
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with self.assertRaises(grpc.RpcError) as ctx:
            export(body)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        export(body, metadata=(("authorization", "Bearer key-globex-9"),))
        self.assertEqual(self.wal_count(), 3)


class TestTenantLimits(AcceptorTestCase):
    acceptor_env = {"ACCEPTOR_TENANT_MAX_REQUESTS_PER_SECOND": "3"}

    def test_one_tenant_over_its_rate_does_not_stall_another(self):
        url = self.acceptor.http + "/v1/traces"
        body = span_request(1).SerializeToString()
        statuses = [post(url, body, headers={"X-Tenant-ID": "noisy"}) for _ in range(8)]
        codes = [s[0] for s in statuses]
        self.assertIn(429, codes)
        self.assertTrue(all(s[1].get("Retry-After", "").isdigit() for s in statuses if s[0] == 429))
        self.assertEqual(post(url, body, headers={"X-Tenant-ID": "quiet"})[0], 200)
        self.assertEqual(self.wal_count(), codes.count(200) + 1)
        channel = grpc.insecure_channel(self.acceptor.grpc_target)
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        codes = []
        for _ in range(8):
            try:
                export(body, metadata=(("x-tenant-id", "noisy2"),))
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code())
                details = dict(e.trailing_metadata() or ())
                self.assertIn("grpc-status-details-bin", details, "RESOURCE_EXHAUSTED without RetryInfo is dropped by clients")
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)


class TestBackpressure(AcceptorTestCase):
    acceptor_env = {"ACCEPTOR_WAL_MAX_BYTES": "4MiB"}

    def test_writer_down_then_bound_then_drains(self):
        self.writer.mode = "down"
        url = self.acceptor.http + "/v1/traces"
        acked = {}
        refused = None
        for i in range(200):
            req = span_request(1, name="bp%d" % i, attr_bytes=100 << 10)
            status, headers, _ = post(url, req.SerializeToString())
            if status == 200:
                acked[spans_of(req)[0].span_id] = req
            else:
                refused = (status, headers)
                break
        self.assertIsNotNone(refused, "the bound was never reached")
        self.assertEqual(refused[0], 503)
        self.assertTrue(refused[1].get("Retry-After", "").isdigit(), refused)
        self.assertGreater(len(acked), 10)
        # gRPC says UNAVAILABLE with RetryInfo.
        export = grpc.insecure_channel(self.acceptor.grpc_target).unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with self.assertRaises(grpc.RpcError) as ctx:
            export(span_request(1, attr_bytes=100 << 10).SerializeToString())
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("grpc-status-details-bin", dict(ctx.exception.trailing_metadata()))
        # The writer comes back: everything acknowledged arrives, once, and the acceptor takes data again.
        self.writer.mode = "ok"
        self.assertTrue(self.writer.wait_for(lambda w: len(w.stored) >= len(acked), timeout=60), self.acceptor.read_log())
        got = {}
        for env in self.writer.envelopes().values():
            for s in spans_of(trace_service_pb2.ExportTraceServiceRequest.FromString(env["payload"])):
                got[s.span_id] = got.get(s.span_id, 0) + 1
        self.assertEqual(set(got), set(acked))
        self.assertTrue(all(c == 1 for c in got.values()))
        deadline = time.time() + 30
        while time.time() < deadline and post(url, span_request(1).SerializeToString())[0] != 200:
            time.sleep(0.2)
        self.assertEqual(post(url, span_request(1).SerializeToString())[0], 200)


class TestCrashAndShutdown(AcceptorTestCase):
    def send_loop(self, stop, acked, lock, seed):
        rng = random.Random(seed)
        url = self.acceptor.http + "/v1/traces"
        while not stop.is_set():
            req = span_request(rng.randrange(1, 20), name="k%d" % rng.randrange(1 << 30), attr_bytes=rng.choice([0, 100, 5000]))
            try:
                status = post(url, req.SerializeToString())[0]
            except OSError:
                continue
            if status == 200:
                with lock:
                    for s in spans_of(req):
                        acked.add(s.span_id)

    def test_kill_9_loses_nothing_acknowledged(self):
        """kill -9 at random moments under load from 4 clients; after each restart the WAL (and
        in the end the writer) holds every span of every acknowledged request."""
        self.writer.mode = "down"
        acked, lock = set(), threading.Lock()
        rng = random.Random(7)
        cycles = int(os.environ.get("SIGNALDB_KILL_CYCLES", 3 if REDUCED else 10))
        for cycle in range(cycles):
            stop = threading.Event()
            threads = [threading.Thread(target=self.send_loop, args=(stop, acked, lock, cycle * 10 + t)) for t in range(4)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.3, 1.5))
            self.acceptor.kill()
            stop.set()
            for t in threads:
                t.join()
            in_wal = {s.span_id for _, env, msg in decoded_wal(self.wal) for s in spans_of(msg)}
            missing = acked - in_wal
            self.assertFalse(missing, "cycle %d: %d acknowledged spans not in the WAL" % (cycle, len(missing)))
            self.acceptor.start()
        self.assertGreater(len(acked), 50)
        print("\nkill -9: %d cycles, %d acknowledged spans, all in the WAL after every restart" % (cycles, len(acked)))
        self.writer.mode = "ok"
        self.assertTrue(self.writer.wait_for(lambda w: len(w.stored) >= len(wal_records(self.wal)), timeout=60))
        at_writer = {s.span_id for env in self.writer.envelopes().values()
                     for s in spans_of(trace_service_pb2.ExportTraceServiceRequest.FromString(env["payload"]))}
        self.assertFalse(acked - at_writer)

    def test_sigterm_under_load_stops_both_listeners(self):
        self.writer.mode = "down"  # keep every record in the WAL to be checked
        acked, lock = set(), threading.Lock()
        stop = threading.Event()
        threads = [threading.Thread(target=self.send_loop, args=(stop, acked, lock, t)) for t in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        started = time.time()
        code = self.acceptor.terminate(timeout=20)
        elapsed = time.time() - started
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(code, 0, self.acceptor.read_log())
        self.assertLess(elapsed, 15)
        for port in (self.acceptor.http_port, self.acceptor.grpc_port, self.acceptor.admin_port):
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        in_wal = {s.span_id for _, env, msg in decoded_wal(self.wal) for s in spans_of(msg)}
        self.assertFalse(acked - in_wal)
        self.assertGreater(len(acked), 0)


class TestDrain(AcceptorTestCase):
    acceptor_env = {"ACCEPTOR_SHUTDOWN_DRAIN_SECONDS": "2"}

    def test_readiness_goes_false_first_and_requests_are_still_served(self):
        import urllib.request
        self.acceptor.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.acceptor.admin_port, timeout=2)
            self.fail("/readyz still 200 after SIGTERM")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 503)
            self.assertIn(b"shutting down", e.read())
        self.assertEqual(post(self.acceptor.http + "/v1/traces", span_request(1).SerializeToString())[0], 200)
        self.assertEqual(self.acceptor.proc.wait(timeout=20), 0)
        self.assertEqual(self.wal_count(), 1)


class TestDeadLetters(AcceptorTestCase):
    def test_permanent_rejection_is_dead_lettered_and_does_not_block(self):
        self.writer.reject = lambda env: "poison (test)" if decode_envelope(env)["tenant"] == "poison" else None
        url = self.acceptor.http + "/v1/traces"
        for i in range(6):
            tenant = "poison" if i % 3 == 1 else "good"
            self.assertEqual(post(url, span_request(1).SerializeToString(), headers={"X-Tenant-ID": tenant})[0], 200)
        self.assertTrue(self.writer.wait_for(lambda w: len(w.stored) == 4), self.acceptor.read_log())
        folder = os.path.join(self.wal, "dead-letters")
        deadline = time.time() + 10
        while time.time() < deadline and len(os.listdir(folder) if os.path.isdir(folder) else []) < 4:
            time.sleep(0.1)
        names = sorted(os.listdir(folder))
        self.assertEqual(len(names), 4, names)
        meta = []
        for n in names:
            if n.endswith(".json"):
                with open(os.path.join(folder, n)) as f:
                    meta.append(json.load(f))
        self.assertEqual({m["tenant"] for m in meta}, {"poison"})
        self.assertTrue(all(m["reason"] == "poison (test)" for m in meta))
        for n in names:
            if n.endswith(".envelope"):
                with open(os.path.join(folder, n), "rb") as f:
                    self.assertEqual(decode_envelope(f.read())["tenant"], "poison")
        deadline = time.time() + 10
        while time.time() < deadline and self.acceptor.metric_sum("signaldb_acceptor_forward_lag_records") > 0:
            time.sleep(0.1)
        self.assertEqual(self.acceptor.metric_sum("signaldb_acceptor_dead_letters_total"), 2)
        self.assertEqual(self.acceptor.metric_sum("signaldb_acceptor_forward_lag_records"), 0)


class TestInternalKey(AcceptorTestCase):
    writer_key = "link-secret"

    def test_unauthenticated_forward_is_refused_then_retried_with_the_key(self):
        url = self.acceptor.http + "/v1/traces"
        self.assertEqual(post(url, span_request(1).SerializeToString())[0], 200)
        self.assertTrue(self.writer.wait_for(lambda w: w.unauthenticated > 0))
        self.assertEqual(len(self.writer.stored), 0)
        self.acceptor.terminate()
        self.acceptor.env["SIGNALDB_INTERNAL_KEY"] = "link-secret"
        self.acceptor.start()
        self.assertTrue(self.writer.wait_for(lambda w: len(w.stored) == 1), self.acceptor.read_log())


class TestStartup(unittest.TestCase):
    def test_help_lists_every_setting_with_its_default(self):
        out = subprocess.run([ACCEPTOR, "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        for name, default in [("ACCEPTOR_HTTP_ADDR", "127.0.0.1:4318"), ("ACCEPTOR_GRPC_ADDR", "127.0.0.1:4317"),
                              ("ACCEPTOR_ADMIN_ADDR", "127.0.0.1:9464"), ("ACCEPTOR_WAL_DIR", ".wal/acceptor"),
                              ("ACCEPTOR_WAL_MAX_BYTES", "1GiB"), ("ACCEPTOR_WRITER_ADDR", "127.0.0.1:50061"),
                              ("ACCEPTOR_API_KEYS_FILE", "unset"), ("SIGNALDB_INTERNAL_KEY", "unset")]:
            self.assertRegex(out.stdout, r"%s .*\[%s\]" % (name, default))

    def test_bad_setting_names_the_variable(self):
        env = dict(os.environ, ACCEPTOR_WAL_MAX_BYTES="lots")
        out = subprocess.run([ACCEPTOR], capture_output=True, text=True, env=env, timeout=30)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("ACCEPTOR_WAL_MAX_BYTES='lots'", out.stderr)

    def test_admin_port_in_use_ends_the_acceptor(self):
        tmp = tempfile.mkdtemp(prefix="acceptor-admin-")
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            acceptor = Acceptor(os.path.join(tmp, "wal"), 1)
            acceptor.env["ACCEPTOR_ADMIN_ADDR"] = "127.0.0.1:%d" % busy.getsockname()[1]
            acceptor.start(wait_ready=False)
            code = acceptor.proc.wait(timeout=30)
            acceptor.log.close()
        self.assertEqual(code, 1)
        self.assertIn("the admin listener stopped", acceptor.read_log())
        shutil.rmtree(tmp, ignore_errors=True)

    def test_unwritable_wal_directory_is_a_clear_error(self):
        if os.geteuid() == 0:
            path = "/proc/signaldb-cannot-exist/wal"
        else:
            path = "/signaldb-cannot-exist/wal"
        env = dict(os.environ, ACCEPTOR_WAL_DIR=path, ACCEPTOR_HTTP_ADDR="127.0.0.1:0", ACCEPTOR_GRPC_ADDR="127.0.0.1:0",
                   ACCEPTOR_ADMIN_ADDR="127.0.0.1:0")
        out = subprocess.run([ACCEPTOR], capture_output=True, text=True, env=env, timeout=30)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(path.rsplit("/", 1)[0], out.stdout + out.stderr)


if __name__ == "__main__":
    unittest.main()
