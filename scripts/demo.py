#!/usr/bin/env python3
"""`make demo`: the pipeline loses nothing it acknowledged, with real OpenTelemetry clients.

Starts signaldb-writer and signaldb-acceptor in a scratch directory (.run/demo-<timestamp>/:
both WALs, the SQLite store, both logs) on free loopback ports, so a running `make run` is not
disturbed. Four client threads export batches of spans with the OpenTelemetry Python SDK's
OTLPSpanExporter (two over http/protobuf, two over gRPC), each span id of every export that
returns SUCCESS counting as acknowledged. After ~3 s both services are killed with SIGKILL
(writer, then acceptor), restarted ~1 s later, and the clients run ~3 s more. Then the demo
waits (up to 60 s) until the store holds every acknowledged span, prints what it found, stops
both services with SIGTERM, and exits 1 if any acknowledged span is missing or stored twice.

Run it with the repository's .venv-services/bin/python (`make service-venvs` creates it).
SIGNALDB_BIN: folder holding the two binaries [the repository's .build/debug].
"""

import logging
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("SIGNALDB_BIN") or os.path.join(HERE, "..", ".build", "debug")

RUN_SECONDS_BEFORE_KILL = 3.0
DOWN_SECONDS = 1.0
RUN_SECONDS_AFTER_RESTART = 3.0
STORE_WAIT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 120.0
SPANS_PER_EXPORT = 20
EXPORT_TIMEOUT_SECONDS = 5

DUPLICATES_SQL = ("SELECT span_id, COUNT(*) FROM spans GROUP BY tenant, dataset, trace_id, span_id "
                  "HAVING COUNT(*) > 1")


def free_ports(n):
    """n distinct free loopback ports (all bound at once, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def say(text=""):
    print(text, flush=True)


class Service:
    """One service process, logging (appending, across restarts) to <dir>/<name>.log."""

    def __init__(self, name, env, admin_port, log_path):
        self.name = name
        self.binary = os.path.join(BIN, name)
        self.env = env
        self.admin_port = admin_port
        self.log_path = log_path
        self.proc = None
        self.log_start = 0

    def start(self):
        self.log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, "ab") as log:
            log.write(("==== demo: starting %s at %s ====\n" % (self.name, time.strftime("%H:%M:%S"))).encode())
            log.flush()
            # Its own session: a Ctrl-C in the terminal reaches the demo, which stops it.
            self.proc = subprocess.Popen([self.binary], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def crashed(self):
        """Whether this run of it hit a Swift runtime trap (it may still be alive, backtracing)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return b"Fatal error" in f.read()
        except OSError:
            return False

    def ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.admin_port, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self):
        """SIGKILL to its whole process group: a service that crashed may have a swift-backtrace
        helper attached, which holds the listening sockets until it is gone too."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def terminate(self, timeout=60):
        """SIGTERM, then the exit code (None if it had to be killed after timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def log_tail(self, lines=30):
        """The log's last lines; for a crash, its message and the crashed thread's top frames
        instead (a Swift backtrace ends in registers and images)."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        all_lines = text.splitlines()
        crash = [i for i, line in enumerate(all_lines) if "Fatal error" in line or line.endswith(" crashed:")]
        if crash:
            picked = []
            for i in crash:
                picked.extend(all_lines[i:i + (10 if all_lines[i].endswith(" crashed:") else 1)])
            return "\n".join(picked)
        return "\n".join(all_lines[-lines:])


class Failure(Exception):
    pass


def wait_ready(services, timeout=READY_TIMEOUT_SECONDS):
    deadline = time.time() + timeout
    pending = list(services)
    while pending:
        for s in list(pending):
            if not s.running():
                raise Failure("%s exited (code %s) before it was ready; last lines of %s:\n%s"
                              % (s.name, s.proc.returncode, s.log_path, s.log_tail()))
            if s.ready():
                pending.remove(s)
        if pending and time.time() > deadline:
            raise Failure("%s not ready after %.0f s; last lines of its log:\n%s"
                          % (pending[0].name, timeout, pending[0].log_tail()))
        time.sleep(0.05)


def check_alive(services):
    for s in services:
        if s.crashed():
            raise Failure("%s crashed; from %s:\n%s" % (s.name, s.log_path, s.log_tail()))
        if not s.running():
            raise Failure("%s exited on its own (code %s); last lines of %s:\n%s"
                          % (s.name, s.proc.returncode, s.log_path, s.log_tail()))


def run_for(seconds, services):
    """Sleeps, checking every 0.1 s that the services are still up."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        check_alive(services)
        time.sleep(0.1)
    check_alive(services)


class Client(threading.Thread):
    """Exports batches of SPANS_PER_EXPORT spans until stopped; remembers what was acknowledged."""

    def __init__(self, index, protocol, exporter, stop):
        super().__init__(name="client-%d-%s" % (index, protocol), daemon=True)
        self.protocol = protocol
        self.exporter = exporter
        self.stop = stop
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "demo-client-%d" % index}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("signaldb-demo")
        self.acknowledged = []  # (trace_id hex, span_id hex, export number, time acknowledged)
        self.exports_ok = 0
        self.exports_failed = 0
        self.error = None

    def batch(self, n):
        with self.tracer.start_as_current_span("request-%d" % n, attributes={"demo.batch": n}):
            for i in range(SPANS_PER_EXPORT - 1):
                with self.tracer.start_as_current_span("step", attributes={"demo.step": i}):
                    pass
        spans = self.memory.get_finished_spans()
        self.memory.clear()
        return spans

    def run(self):
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                spans = self.batch(n)
                result = self.exporter.export(spans)
                if result == SpanExportResult.SUCCESS:
                    self.exports_ok += 1
                    now = time.time()
                    for s in spans:
                        self.acknowledged.append((format(s.context.trace_id, "032x"),
                                                  format(s.context.span_id, "016x"), n, now))
                else:
                    self.exports_failed += 1
                    self.stop.wait(0.05)
        except Exception as e:  # the summary reports it
            self.error = e
        finally:
            self.exporter.shutdown()


def stored_spans(store_path):
    """{(trace_id, span_id)} in the store, or None when it cannot be read yet."""
    if not os.path.exists(store_path):
        return None
    try:
        db = sqlite3.connect("file:%s?mode=ro" % store_path, uri=True, timeout=5)
        try:
            return set(db.execute("SELECT trace_id, span_id FROM spans"))
        finally:
            db.close()
    except sqlite3.Error:
        return None


def duplicates(store_path):
    db = sqlite3.connect("file:%s?mode=ro" % store_path, uri=True, timeout=5)
    try:
        return db.execute(DUPLICATES_SQL).fetchall()
    finally:
        db.close()


def main():
    for name in ("signaldb-writer", "signaldb-acceptor"):
        if not os.access(os.path.join(BIN, name), os.X_OK):
            say("demo: %s is missing (swift build --product %s, or set SIGNALDB_BIN)" % (os.path.join(BIN, name), name))
            return 1

    run_dir = os.path.join(".run", "demo-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    store_path = os.path.join(run_dir, "signaldb.sqlite")
    writer_grpc, writer_admin, http_port, grpc_port, acceptor_admin = free_ports(5)

    env = dict(os.environ)
    # Small WAL segments: recovery of a debug build reads every preallocated segment, and the
    # default 128 MiB ones would make each restart take many seconds. Exported values win.
    for key, value in {
        "ACCEPTOR_MAX_REQUEST_BYTES": "4MiB",
        "ACCEPTOR_WAL_SEGMENT_BYTES": "8MiB",
        "WRITER_MAX_RECORD_BYTES": "5MiB",
        "WRITER_WAL_SEGMENT_BYTES": "8MiB",
        "ACCEPTOR_FORWARD_BACKOFF_MAX_SECONDS": "2",
    }.items():
        env.setdefault(key, value)
    env.update({
        "WRITER_WAL_DIR": os.path.join(run_dir, "wal-writer"),
        "WRITER_STORE": "sqlite:" + store_path,
        "WRITER_GRPC_ADDR": "127.0.0.1:%d" % writer_grpc,
        "WRITER_ADMIN_ADDR": "127.0.0.1:%d" % writer_admin,
        "ACCEPTOR_WAL_DIR": os.path.join(run_dir, "wal-acceptor"),
        "ACCEPTOR_HTTP_ADDR": "127.0.0.1:%d" % http_port,
        "ACCEPTOR_GRPC_ADDR": "127.0.0.1:%d" % grpc_port,
        "ACCEPTOR_ADMIN_ADDR": "127.0.0.1:%d" % acceptor_admin,
        "ACCEPTOR_WRITER_ADDR": "127.0.0.1:%d" % writer_grpc,
    })
    for key in ("WRITER_CONFIG_FILE", "ACCEPTOR_CONFIG_FILE"):
        env.pop(key, None)

    # The SDK logs every failed attempt; while the services are down that is most of them.
    logging.basicConfig(filename=os.path.join(run_dir, "clients.log"), level=logging.WARNING,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    writer = Service("signaldb-writer", env, writer_admin, os.path.join(run_dir, "writer.log"))
    acceptor = Service("signaldb-acceptor", env, acceptor_admin, os.path.join(run_dir, "acceptor.log"))
    services = [writer, acceptor]
    stop = threading.Event()
    clients = []
    try:
        say("demo in %s (binaries from %s)" % (run_dir, os.path.normpath(BIN)))
        writer.start()
        wait_ready([writer])
        acceptor.start()
        wait_ready([acceptor])
        say("writer ready (gRPC 127.0.0.1:%d), acceptor ready (OTLP/HTTP 127.0.0.1:%d, OTLP/gRPC 127.0.0.1:%d)"
            % (writer_grpc, http_port, grpc_port))

        http_url = "http://127.0.0.1:%d/v1/traces" % http_port
        grpc_target = "127.0.0.1:%d" % grpc_port
        for i in range(4):
            if i < 2:
                exporter = HTTPSpanExporter(endpoint=http_url, timeout=EXPORT_TIMEOUT_SECONDS)
                clients.append(Client(i, "http/protobuf", exporter, stop))
            else:
                exporter = GRPCSpanExporter(endpoint=grpc_target, insecure=True, timeout=EXPORT_TIMEOUT_SECONDS)
                clients.append(Client(i, "grpc", exporter, stop))
        started = time.time()
        for c in clients:
            c.start()
        say("4 clients exporting %d spans per export (2 over http/protobuf, 2 over gRPC)" % SPANS_PER_EXPORT)

        run_for(RUN_SECONDS_BEFORE_KILL, services)
        acked_before_kill = sum(len(c.acknowledged) for c in clients)
        writer.kill()
        acceptor.kill()
        say("%.1f s: killed the writer and the acceptor with SIGKILL (%d spans acknowledged so far)"
            % (time.time() - started, acked_before_kill))

        time.sleep(DOWN_SECONDS)
        writer.start()
        acceptor.start()
        wait_ready(services)
        say("%.1f s: restarted both; ready again" % (time.time() - started))

        run_for(RUN_SECONDS_AFTER_RESTART, services)
        stop.set()
        for c in clients:
            c.join(timeout=60)
        say("%.1f s: clients stopped" % (time.time() - started))
        for c in clients:
            if c.error is not None:
                raise Failure("%s failed: %r" % (c.name, c.error))
            if c.is_alive():
                raise Failure("%s did not stop within 60 s" % c.name)

        acked = {}
        for c in clients:
            for trace_id, span_id, n, t in c.acknowledged:
                acked[(trace_id, span_id)] = (c.name, n, t)

        deadline = time.time() + STORE_WAIT_SECONDS
        while True:
            check_alive(services)
            stored = stored_spans(store_path)
            missing = set(acked) - (stored or set())
            if not missing or time.time() > deadline:
                break
            time.sleep(0.25)
        if stored is None:
            stored = set()
        dups = duplicates(store_path) if os.path.exists(store_path) else []

        say()
        for c in clients:
            say("  %-22s exports ok %4d, failed %3d" % (c.name, c.exports_ok, c.exports_failed))
        say("acknowledged spans:                   %d" % len(acked))
        say("spans in store:                       %d" % len(stored))
        say("acknowledged but missing from store:  %d" % len(missing))
        say("stored, never acknowledged:           %d  (durable when a kill cut off the answer; fine)"
            % len(stored - set(acked)))
        say("stored more than once:                %d" % len(dups))
        if missing:
            say("missing (first 20 of %d; client, export number, acknowledged at):" % len(missing))
            for key in sorted(missing, key=lambda k: acked[k][2])[:20]:
                name, n, t = acked[key]
                say("  trace %s span %s  %s export %d at %s.%03d" % (key[0], key[1], name, n,
                    time.strftime("%H:%M:%S", time.localtime(t)), int(t * 1000) % 1000))
        if dups:
            say("stored more than once (first 20): %s" % dups[:20])
        say("rerun:  sqlite3 %s %s" % (shlex.quote(store_path), shlex.quote(
            "SELECT COUNT(*), COUNT(DISTINCT trace_id || span_id) FROM spans")))
        say("        sqlite3 %s %s" % (shlex.quote(store_path), shlex.quote(DUPLICATES_SQL)))

        codes = {s.name: s.terminate() for s in reversed(services)}  # acceptor first
        say("stopped with SIGTERM: signaldb-acceptor exit %s, signaldb-writer exit %s  (logs %s/)"
            % (codes["signaldb-acceptor"], codes["signaldb-writer"], run_dir))
        ok = not missing and not dups and all(code == 0 for code in codes.values())
        say("ok: nothing acknowledged was lost or stored twice" if ok else "FAILED")
        return 0 if ok else 1
    except Failure as e:
        say("FAILED: %s" % e)
        acked = {(t, sp) for c in clients for t, sp, _, _ in c.acknowledged}
        stored = stored_spans(store_path) or set()
        say("at that point: %d spans acknowledged, %d in the store, %d acknowledged and not (yet) stored"
            % (len(acked), len(stored), len(acked - stored)))
        say("logs in %s/" % run_dir)
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        stop.set()
        for s in reversed(services):
            if s.running():
                s.terminate()


if __name__ == "__main__":
    sys.exit(main())
