"""The whole pipeline, signaldb-acceptor into signaldb-writer into SQLite, with real clients:
the OpenTelemetry Python SDK's exporters end to end, a retried and reordered forward, a store
outage, SIGTERM under load, and the writer's start-up errors and dead-letter commands (kill -9
and power cuts under load are test_soak's). Every check reads the store the way a user
would (sqlite3).

Run: make test-services (or python -m unittest -v test_pipeline from this folder, with
SIGNALDB_BUILD pointing at a build holding signaldb-acceptor, signaldb-writer and signalwal)."""
import json
import logging
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from harness import (REDUCED, SIGNALWAL, WRITER, Acceptor, ForwardRequest, ForwardResponse, Writer, post)
from test_acceptor import JSON_PYTHON, PROTO_PYTHON, span_request, spans_of

HERE = os.path.dirname(os.path.abspath(__file__))


def encode_envelope(payload, signal=1, items=1, tenant="default", dataset="default", received_ns=1):
    """docs/ENVELOPE.md: the acceptor's record format."""
    t, d = tenant.encode(), dataset.encode()
    return b"SDBE" + struct.pack("<BBBBQHHI", 1, signal, 1, 0, received_ns, len(t), len(d), items) + t + d + payload


def log_request(bodies):
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "raw-logs"
    sl = rl.scope_logs.add()
    for body in bodies:
        r = sl.log_records.add()
        r.body.string_value = body
        r.time_unix_nano = time.time_ns()
        r.severity_text = "INFO"
    return req


class PipelineTestCase(unittest.TestCase):
    writer_env = {}
    acceptor_env = {}

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pipeline-test-")
        self.writer = Writer(os.path.join(self.tmp, "writer"), **self.writer_env).start()
        self.acceptor = Acceptor(os.path.join(self.tmp, "acceptor-wal"), self.writer.port, **self.acceptor_env).start()

    def tearDown(self):
        self.acceptor.kill()
        self.writer.kill()
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self, protocol, tag, python=None):
        endpoint = self.acceptor.grpc_target if protocol == "grpc" else self.acceptor.http
        out = subprocess.run([python or PROTO_PYTHON, os.path.join(HERE, "otlp_client.py"), protocol, endpoint, "--tag", tag],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        return json.loads(out.stdout)

    def assert_stored_once(self, acked, what="spans"):
        """Every acknowledged span is in `spans` exactly once, and no span id appears twice."""
        self.assertTrue(self.writer.wait_for(lambda w: acked <= set(w.span_ids()), timeout=90),
                        "%d acknowledged spans never reached the store\nwriter:\n%s\nacceptor:\n%s"
                        % (len(acked - set(self.writer.span_ids())), self.writer.read_log()[-3000:], self.acceptor.read_log()[-3000:]))
        repeated = self.writer.query("SELECT span_id, COUNT(*) FROM spans GROUP BY span_id HAVING COUNT(*) > 1")
        self.assertEqual(repeated, [], "span ids stored more than once")


class TestEndToEnd(PipelineTestCase):
    """The SDK's exporters: what they sent is in SQLite with the right ids, names, attributes,
    resource and values."""

    def check(self, protocol, python=None):
        tag = protocol
        sent = self.client(protocol, tag, python=python)
        self.assertTrue(sent["traces_ok"] and sent["metrics_ok"] and sent["logs_ok"], sent)
        expected_logs = len(sent["logs"])
        self.assertTrue(self.writer.wait_for(lambda w: len(w.query("SELECT 1 FROM spans")) == len(sent["spans"])
                                             and len(w.query("SELECT 1 FROM logs")) == expected_logs
                                             and len(w.query("SELECT 1 FROM metric_points")) >= 2), self.writer.read_log())
        rows = {r[1]: r for r in self.writer.query(
            "SELECT trace_id, span_id, parent_span_id, name, attributes, service_name, scope_name, events, tenant, dataset, kind, "
            "start_time_unix_nano <= end_time_unix_nano FROM spans")}
        for span in sent["spans"]:
            row = rows[span["span_id"]]
            self.assertEqual(row[0], span["trace_id"])
            self.assertEqual(row[2] or "", span["parent"])
            self.assertEqual(row[3], span["name"])
            self.assertEqual(json.loads(row[4]), span["attributes"])
            self.assertEqual((row[5], row[6], row[8], row[9]), ("svc-" + tag, "scope-" + tag, "default", "default"))
            self.assertEqual(row[11], 1)
            if span["name"].startswith("child"):
                self.assertEqual([e["name"] for e in json.loads(row[7])], ["evt"])
        points = {r[0]: r for r in self.writer.query(
            "SELECT metric_name, type, value, int_value, histogram, unit, json_extract(attributes, '$.tag'), service_name FROM metric_points")}
        counter, histogram = points["requests-" + tag], points["latency-" + tag]
        self.assertEqual(counter[1:4], ("sum", 3.0, 3))
        self.assertEqual((counter[6], counter[7]), (tag, "svc-" + tag))
        self.assertEqual(histogram[1], "histogram")
        self.assertEqual(histogram[5], "ms")
        h = json.loads(histogram[4])
        self.assertEqual((h["count"], h["sum"]), (1, 12.5))
        self.assertEqual(sum(h["bucket_counts"]), 1)
        logs = self.writer.query("SELECT json_extract(body, '$'), trace_id, service_name, severity_number FROM logs")
        self.assertEqual(sorted((l[0], l[1]) for l in logs), sorted((l["body"], l["trace_id"]) for l in sent["logs"]))
        self.assertEqual({l[2] for l in logs}, {"svc-" + tag})
        self.assertEqual({l[3] for l in logs}, {13}, "logging.warning is severity WARN (13)")

    def test_http_protobuf(self):
        self.check("http")

    def test_grpc(self):
        self.check("grpc")

    @unittest.skipUnless(JSON_PYTHON, "SIGNALDB_JSON_PYTHON (the OTLP/JSON exporter's venv) is not set")
    def test_http_json(self):
        self.check("json", python=JSON_PYTHON)


class TestForwardRetries(PipelineTestCase):
    """The writer's exactly-once filter seen from the link: retried, overlapping and reordered
    forwards from one acceptor id are stored once, also after the writer is killed."""

    def setUp(self):
        super().setUp()
        self.acceptor.kill()  # this test is the acceptor
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.writer.port)
        self.forward = self.channel.unary_unary("/signaldb.internal.v1.Writer/Forward",
                                                request_serializer=lambda m: m.SerializeToString(),
                                                response_deserializer=ForwardResponse.FromString)
        self.spans = {lsn: span_request(1, name="lsn%d" % lsn) for lsn in range(1, 41)}

    def tearDown(self):
        self.channel.close()
        super().tearDown()

    def send(self, lsns, settled=0, acceptor="test-acceptor"):
        req = ForwardRequest(acceptor_id=acceptor, settled_lsn=settled)
        for lsn in lsns:
            r = req.records.add()
            r.lsn = lsn
            r.envelope = encode_envelope(self.spans[lsn].SerializeToString())
        response = self.forward(req, timeout=30)
        self.assertEqual(sorted(response.durable_lsns), sorted(lsns))
        return response

    def test_a_retried_forward_batch_is_stored_once(self):
        self.send(range(1, 11))
        self.send(range(1, 11))               # the same batch again (its answer was lost)
        self.send(range(21, 31))              # a later batch first (several in flight)
        self.send(range(5, 21))               # overlapping the first, filling the gap
        threads = [threading.Thread(target=self.send, args=(range(25, 41),)) for _ in range(4)]
        for t in threads:                     # four racing copies of one batch
            t.start()
        for t in threads:
            t.join()
        expected = {s.span_id for lsn in range(1, 41) for s in spans_of(self.spans[lsn])}
        self.assertTrue(self.writer.wait_for(lambda w: set(w.span_ids()) == expected), self.writer.read_log())
        self.writer.kill()                    # the marks are rebuilt from the store and the WAL
        self.writer.start()
        self.send(range(1, 41))
        self.send(range(30, 41), settled=29)  # the acceptor checkpointed 29
        time.sleep(1)
        self.assertEqual(len(self.writer.query("SELECT 1 FROM spans")), 40)
        skipped = self.writer.metric_sum("signaldb_writer_duplicates_skipped_total", kind="forward")
        self.assertGreaterEqual(skipped, 40 + 11)
        self.assertEqual(self.writer.metric_sum("signaldb_writer_duplicates_skipped_total", kind="span"), 0,
                         "the (acceptor, LSN) filter, not the span key, caught every repeat")
        progress = dict(self.writer.query("SELECT source, high_water_lsn FROM ingest_progress"))
        self.assertEqual(progress["acceptor:test-acceptor"], 40)
        # The same LSNs from another acceptor are other records.
        self.spans = {lsn: span_request(1, name="other%d" % lsn) for lsn in range(1, 41)}
        self.send(range(1, 6), acceptor="other-acceptor")
        self.assertTrue(self.writer.wait_for(lambda w: len(w.query("SELECT 1 FROM spans")) == 45))

    def test_unstorable_record_is_dead_lettered_listed_and_replayed_once(self):
        req = ForwardRequest(acceptor_id="test-acceptor")
        bad = req.records.add()
        bad.lsn = 1
        bad.envelope = encode_envelope(b"\xff\xff\xff not protobuf")
        good = req.records.add()
        good.lsn = 2
        good.envelope = encode_envelope(self.spans[2].SerializeToString())
        invalid = req.records.add()
        invalid.lsn = 3
        invalid.envelope = b"SDBX not an envelope at all......"
        response = self.forward(req, timeout=30)
        self.assertEqual(sorted(response.durable_lsns), [1, 2])
        self.assertEqual([r.lsn for r in response.rejected], [3])
        self.assertTrue(self.writer.wait_for(lambda w: w.metric_sum("signaldb_writer_dead_letters_total") == 1), self.writer.read_log())
        self.assertEqual(len(self.writer.span_ids()), 1, "the good record beside it was stored")
        env = dict(self.writer.env)
        listing = subprocess.run([WRITER, "dead-letters", "list"], env=env, capture_output=True, text=True)
        self.assertEqual(listing.returncode, 0, listing.stdout + listing.stderr)
        self.assertIn("1 dead letter(s)", listing.stdout)
        self.assertIn("not a valid traces export request", listing.stdout)
        show = subprocess.run([WRITER, "dead-letters", "show", "1"], env=env, capture_output=True, text=True)
        self.assertIn('"acceptor_lsn" : 1', show.stdout)
        busy = subprocess.run([WRITER, "dead-letters", "replay"], env=env, capture_output=True, text=True)
        self.assertNotEqual(busy.returncode, 0)
        self.assertIn("stop signaldb-writer first", busy.stdout)
        self.assertEqual(self.writer.terminate(), 0)
        replay = subprocess.run([WRITER, "dead-letters", "replay"], env=env, capture_output=True, text=True)
        self.assertEqual(replay.returncode, 0, replay.stdout + replay.stderr)
        self.assertIn("1 dead letter(s) appended", replay.stdout)
        self.assertEqual(len(os.listdir(os.path.join(self.writer.wal_dir, "dead-letters", "replayed"))), 2)
        # Still unstorable: dead-lettered again, once, under its new writer LSN.
        self.writer.start()
        self.assertTrue(self.writer.wait_for(lambda w: w.metric_sum("signaldb_writer_dead_letters_total") == 1), self.writer.read_log())
        again = subprocess.run([WRITER, "dead-letters", "replay"], env=env, capture_output=True, text=True)
        self.assertIn("stop signaldb-writer first", again.stdout)


class TestAcceptorDeadLetterReplay(PipelineTestCase):
    """`signalwal dlq replay` on an acceptor's WAL sends a letter back through the forwarder,
    once, even when the replay is stopped between its append and its move."""

    def letter_from_wal(self, lsn):
        """Turns the acceptor's record `lsn` (a real envelope) into a dead letter file pair."""
        raw = subprocess.run([SIGNALWAL, "dump", self.acceptor.wal_dir, "--from", str(lsn), "--limit", "1", "--format", "raw"],
                             capture_output=True, timeout=30)
        self.assertEqual(raw.returncode, 0, raw.stderr)
        folder = os.path.join(self.acceptor.wal_dir, "dead-letters")
        os.makedirs(folder, exist_ok=True)
        base = os.path.join(folder, "lsn-%020d" % lsn)
        with open(base + ".envelope", "wb") as f:
            f.write(raw.stdout)
        with open(base + ".json", "w") as f:
            json.dump({"lsn": lsn, "reason": "test: refused by the writer", "tenant": "default", "items": 1}, f)
        return base

    def logs_stored(self):
        return len(self.writer.query("SELECT 1 FROM logs WHERE body = '\"replay-me\"' OR body = 'replay-me'"))

    def test_replay_sends_a_letter_again_once_and_an_interrupted_replay_is_finished_not_repeated(self):
        status, _, _ = post(self.acceptor.http + "/v1/logs", log_request(["replay-me"]).SerializeToString())
        self.assertEqual(status, 200)
        self.assertTrue(self.writer.wait_for(lambda w: self.logs_stored() == 1), self.writer.read_log())
        env = dict(self.acceptor.env)
        self.letter_from_wal(1)
        busy = subprocess.run([SIGNALWAL, "dlq", "replay", self.acceptor.wal_dir], env=env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(busy.returncode, 0)
        self.assertIn("stop signaldb-acceptor first", busy.stdout + busy.stderr)
        self.assertEqual(self.acceptor.terminate(), 0)
        listing = subprocess.run([SIGNALWAL, "dlq", "list", self.acceptor.wal_dir], capture_output=True, text=True, timeout=30)
        self.assertIn("1 dead letter(s)", listing.stdout)
        replay = subprocess.run([SIGNALWAL, "dlq", "replay", self.acceptor.wal_dir], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(replay.returncode, 0, replay.stdout + replay.stderr)
        self.assertIn("1 dead letter(s) appended", replay.stdout)
        again = subprocess.run([SIGNALWAL, "dlq", "replay", self.acceptor.wal_dir], env=env, capture_output=True, text=True, timeout=60)
        self.assertIn("no dead letters", again.stdout, "a replayed letter is not replayed again")
        self.acceptor.start()
        # Logs are not deduplicated by the writer, so a second copy is the replay, arriving once.
        self.assertTrue(self.writer.wait_for(lambda w: self.logs_stored() == 2), self.writer.read_log())
        self.assertEqual(self.acceptor.terminate(), 0)

        # A replay stopped after its append, before its move: the marker says which WAL LSN the
        # append got. The acceptor refuses to start past it; the next replay only moves.
        base = self.letter_from_wal(1)
        pending = json.loads(subprocess.run([SIGNALWAL, "inspect", self.acceptor.wal_dir, "--json"],
                                            capture_output=True, text=True, timeout=30).stdout)
        appended_as = int(pending["checkpointLSN"])  # the highest LSN the WAL holds, all forwarded
        with open(os.path.join(self.acceptor.wal_dir, "dead-letters", "replay-in-progress.json"), "w") as f:
            json.dump({"letterLSN": 1, "walLSN": appended_as}, f)
        self.acceptor.start(wait_ready=False)
        self.assertNotEqual(self.acceptor.proc.wait(timeout=60), 0)
        self.assertIn("dead-letter replay was interrupted", self.acceptor.read_log())
        finish = subprocess.run([SIGNALWAL, "dlq", "replay", self.acceptor.wal_dir], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(finish.returncode, 0, finish.stdout + finish.stderr)
        self.assertIn("was appended by the interrupted replay", finish.stdout)
        self.assertFalse(os.path.exists(base + ".json"))
        after = json.loads(subprocess.run([SIGNALWAL, "inspect", self.acceptor.wal_dir, "--json"],
                                          capture_output=True, text=True, timeout=30).stdout)
        self.assertEqual(after["pendingRecords"], 0, "nothing was appended a second time")
        self.acceptor.start()
        time.sleep(1)
        self.assertEqual(self.logs_stored(), 2)


class TestRestoredAcceptor(PipelineTestCase):
    """An acceptor restored from a backup older than what it had forwarded: with --store its
    new records get LSNs the writer has never seen, so none is dropped as a resend, and the
    backup's backlog is stored once."""

    def logs(self, prefix):
        return self.writer.query("SELECT body FROM logs WHERE body LIKE ?", ("%" + prefix + "%",))

    def post_logs(self, acceptor, prefix, count):
        for i in range(count):
            status, _, _ = post(acceptor.http + "/v1/logs", log_request(["%s-%d" % (prefix, i)]).SerializeToString())
            self.assertEqual(status, 200)

    def test_restore_with_the_store_loses_no_new_record_and_stores_the_backlog_once(self):
        self.post_logs(self.acceptor, "before", 5)
        self.assertTrue(self.writer.wait_for(lambda w: len(self.logs("before")) == 5), self.writer.read_log())
        backup = os.path.join(self.tmp, "acceptor.tar")
        out = subprocess.run([SIGNALWAL, "backup", self.acceptor.wal_dir, backup], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        # Forwarded after the backup: LSNs the restored WAL would hand out again without a floor.
        self.post_logs(self.acceptor, "after", 5)
        self.assertTrue(self.writer.wait_for(lambda w: len(self.logs("after")) == 5), self.writer.read_log())
        self.assertEqual(self.acceptor.terminate(), 0)
        restored = os.path.join(self.tmp, "restored-wal")
        refused = subprocess.run([SIGNALWAL, "restore", backup, restored], capture_output=True, text=True, timeout=60)
        self.assertEqual(refused.returncode, 2, refused.stdout + refused.stderr)
        out = subprocess.run([SIGNALWAL, "restore", backup, restored, "--store", self.writer.db_path],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        again = Acceptor(restored, self.writer.port, **self.acceptor_env).start()
        try:
            self.post_logs(again, "new", 5)
            self.assertTrue(self.writer.wait_for(lambda w: len(self.logs("new")) == 5, timeout=30),
                            "records acknowledged by the restored acceptor never reached the store\n" + self.writer.read_log()[-2000:])
            time.sleep(1)
            self.assertEqual(len(self.logs("before")), 5, "the backup's backlog was stored once")
            self.assertEqual(len(self.logs("after")), 5)
            # A restart finds the jump to the restore's floor is no damage (nothing was handed
            # out in between), and nothing is sent twice.
            self.assertEqual(again.terminate(), 0)
            again.start()
            self.assertEqual(again.metric_sum("signalwal_recovery_damaged_ranges"), 0, again.read_log()[-2000:])
            self.assertEqual(again.metric_sum("signalwal_recovery_lost_records"), 0)
            self.assertNotIn("found damage", again.read_log())
            self.post_logs(again, "later", 2)
            self.assertTrue(self.writer.wait_for(lambda w: len(self.logs("later")) == 2, timeout=30), self.writer.read_log()[-2000:])
            self.assertEqual(len(self.logs("new")), 5)
        finally:
            again.kill()


class Load:
    """Clients under load: the SDK's span exporters over HTTP and gRPC (with their own retries,
    so a resent export can carry spans already stored), and raw OTLP/HTTP log posts that are
    never resent, each recording what was acknowledged."""

    def __init__(self, acceptor, seed):
        # The exporters log every retry while a service is down: expected here, and noise.
        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
        self.acceptor = acceptor
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.acked_spans, self.sent_spans = set(), set()
        self.acked_logs, self.sent_logs = set(), set()
        self.stop = threading.Event()
        self.threads = []

    def span_loop(self, protocol, seed):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter(endpoint=self.acceptor.grpc_target, insecure=True, timeout=3)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter(endpoint=self.acceptor.http + "/v1/traces", timeout=3)
        rng = random.Random(seed)
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "load-" + protocol}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("load")
        while not self.stop.is_set():
            memory.clear()
            for i in range(rng.randrange(1, 40)):
                with tracer.start_as_current_span("op-%d" % i, attributes={"blob": "x" * rng.choice([0, 50, 3000])}):
                    pass
            spans = memory.get_finished_spans()
            ids = {s.context.span_id.to_bytes(8, "big") for s in spans}
            with self.lock:
                self.sent_spans |= ids
            try:
                ok = exporter.export(spans).name == "SUCCESS"
            except Exception:
                ok = False
            if ok:
                with self.lock:
                    self.acked_spans |= ids
        exporter.shutdown()

    def log_loop(self, seed):
        rng = random.Random(seed)
        n = 0
        while not self.stop.is_set():
            bodies = ["log-%d-%d" % (seed, n + i) for i in range(rng.randrange(1, 30))]
            n += len(bodies)
            with self.lock:
                self.sent_logs |= set(bodies)
            try:
                status = post(self.acceptor.http + "/v1/logs", log_request(bodies).SerializeToString())[0]
            except OSError:
                continue
            if status == 200:
                with self.lock:
                    self.acked_logs |= set(bodies)

    def start(self):
        self.stop.clear()
        seed = self.rng.randrange(1 << 30)
        self.threads = [threading.Thread(target=self.span_loop, args=("http", seed)),
                        threading.Thread(target=self.span_loop, args=("grpc", seed + 1)),
                        threading.Thread(target=self.log_loop, args=(seed + 2,))]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


class TestStoreOutage(PipelineTestCase):
    """Another connection holds the database's write lock (SQLITE_BUSY for every commit): the
    writer keeps the data in its WAL, reports not ready, pushes back once its backlog reaches
    WRITER_WAL_MAX_BYTES, and catches up when the lock goes."""
    writer_env = {"WRITER_WAL_SEGMENT_BYTES": "1MiB", "WRITER_MAX_RECORD_BYTES": "600KiB", "WRITER_WAL_MAX_BYTES": "2MiB",
                  "WRITER_STORE_BUSY_TIMEOUT_SECONDS": "0.2"}

    def test_store_outage_delays_and_loses_nothing(self):
        url = self.acceptor.http + "/v1/traces"
        acked = set()
        db = sqlite3.connect(self.writer.db_path, timeout=10, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                req = span_request(20, attr_bytes=4000)
                if post(url, req.SerializeToString())[0] == 200:
                    acked |= {s.span_id for s in spans_of(req)}
                if self.writer.metric_sum("signaldb_writer_backpressure_total") > 0 \
                        and self.acceptor.metric_sum("signaldb_acceptor_forward_failures_total") > 0:
                    break
            self.assertGreater(self.writer.metric_sum("signaldb_writer_backpressure_total"), 0, self.writer.read_log())
            # A release build reaches the bound before its first commit has waited out the busy
            # timeout: wait for that failure rather than read the counter at once.
            self.assertTrue(self.writer.wait_for(
                lambda w: w.metric_sum("signaldb_writer_store_commit_failures_total", reason="busy") > 0, timeout=20),
                "no busy commit failure counted")
            self.assertEqual(self.writer.metric_sum("signaldb_writer_store_failing"), 1)
            self.assertFalse(self.writer.is_ready(), "/readyz must say not ready while the store fails")
            self.assertEqual(len(self.writer.query("SELECT 1 FROM spans")), 0, "nothing committed past the lock")
        finally:
            db.execute("ROLLBACK")
            db.close()
        self.assert_stored_once(acked)
        self.assertTrue(self.writer.wait_for(lambda w: w.is_ready()), "ready again once caught up")
        self.assertEqual(self.writer.metric_sum("signaldb_writer_store_failing"), 0)


@unittest.skipUnless(os.geteuid() == 0, "mounting a small tmpfs under the store needs root")
class TestStoreDiskFull(PipelineTestCase):
    """The store's filesystem fills up (a 2 MiB tmpfs): commits fail with SQLITE_FULL, the WAL
    keeps the data, and once the filesystem grows every acknowledged span is stored once."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pipeline-test-")
        store = os.path.join(self.tmp, "writer", "store")
        os.makedirs(store)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", store], check=True)
        self.mounted = store
        self.writer = Writer(os.path.join(self.tmp, "writer")).start()
        self.acceptor = Acceptor(os.path.join(self.tmp, "acceptor-wal"), self.writer.port).start()

    def tearDown(self):
        self.acceptor.kill()
        self.writer.kill()
        subprocess.run(["umount", "-l", self.mounted])
        super().tearDown()

    def test_full_disk_under_the_store_delays_and_loses_nothing(self):
        url = self.acceptor.http + "/v1/traces"
        acked = set()
        deadline = time.time() + 60
        while time.time() < deadline and self.writer.metric_sum("signaldb_writer_store_commit_failures_total", reason="full") == 0:
            req = span_request(20, attr_bytes=4000)
            if post(url, req.SerializeToString())[0] == 200:
                acked |= {s.span_id for s in spans_of(req)}
        self.assertGreater(self.writer.metric_sum("signaldb_writer_store_commit_failures_total", reason="full"), 0, self.writer.read_log())
        self.assertFalse(self.writer.is_ready())
        for _ in range(20):  # still accepted: the acceptor and the writer's WAL hold it
            req = span_request(5)
            if post(url, req.SerializeToString())[0] == 200:
                acked |= {s.span_id for s in spans_of(req)}
        subprocess.run(["mount", "-o", "remount,size=256m", self.mounted], check=True)
        self.assert_stored_once(acked)
        self.assertTrue(self.writer.wait_for(lambda w: w.is_ready()))


class TestShutdown(PipelineTestCase):
    def test_sigterm_under_load_loses_nothing_and_exits_in_bound(self):
        load = Load(self.acceptor, 5)
        load.start()
        time.sleep(1.5)
        started = time.time()
        code = self.writer.terminate(timeout=40)
        elapsed = time.time() - started
        self.assertEqual(code, 0, self.writer.read_log())
        self.assertLess(elapsed, 30)
        log = self.writer.read_log()
        stopped = [l for l in log.splitlines() if "signaldb-writer stopped" in l][-1]
        # Everything the WAL held was stored before the exit: the checkpoint is the last stored LSN.
        checkpoint = stopped.split("checkpoint=")[1].split()[0]
        self.assertEqual(stopped.split("storedThrough=")[1].split()[0], checkpoint, stopped)
        time.sleep(1)  # the acceptor keeps taking requests while the writer is away
        self.writer.start()
        time.sleep(1)
        load.finish()
        self.assertEqual(self.acceptor.terminate(timeout=40), 0, self.acceptor.read_log())
        self.acceptor.start()
        self.assert_stored_once(load.acked_spans)
        self.assertGreater(len(load.acked_spans), 50)


class TestWriterStartup(unittest.TestCase):
    def run_writer(self, env, args=()):
        full = dict(os.environ)
        full.update(env)
        return subprocess.run([WRITER, *args], env=full, capture_output=True, text=True, timeout=60)

    def test_help_lists_every_setting_with_its_default(self):
        out = self.run_writer({}, ["--help"])
        self.assertEqual(out.returncode, 0)
        for name, default in [("WRITER_GRPC_ADDR", "127.0.0.1:50061"), ("WRITER_ADMIN_ADDR", "127.0.0.1:9465"),
                              ("WRITER_WAL_DIR", ".wal/writer"), ("WRITER_STORE", "sqlite:.data/signaldb.sqlite"),
                              ("WRITER_WAL_MAX_BYTES", "1GiB"), ("SIGNALDB_INTERNAL_KEY", "unset")]:
            line = [l for l in out.stdout.splitlines() if l.strip().startswith(name + " ")]
            self.assertTrue(line and "[%s]" % default in line[0], (name, line))
        self.assertIn("dead-letters", out.stdout)

    def test_bad_settings_name_the_variable(self):
        for name, value in [("WRITER_STORE", "postgres://x"), ("WRITER_WAL_MAX_BYTES", "1MiB"), ("WRITER_GRPC_ADDR", "nope"),
                            ("WRITER_WAL_SEGMENT_BYTES", "1MiB"), ("WRITER_MAX_FORWARD_BYTES", "2MiB")]:
            out = self.run_writer({name: value})
            self.assertEqual(out.returncode, 78, (name, out.stderr))
            self.assertIn(name, out.stderr)

    def test_store_path_that_cannot_be_a_directory_is_a_clear_error(self):
        tmp = tempfile.mkdtemp(prefix="writer-start-")
        try:
            blocker = os.path.join(tmp, "file")
            open(blocker, "w").close()
            out = self.run_writer({"WRITER_WAL_DIR": os.path.join(tmp, "wal"), "WRITER_STORE": "sqlite:" + blocker + "/db.sqlite",
                                   "WRITER_GRPC_ADDR": "127.0.0.1:0", "WRITER_ADMIN_ADDR": "127.0.0.1:0"})
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("WRITER_STORE", out.stdout + out.stderr)
            self.assertIn(blocker, out.stdout + out.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
