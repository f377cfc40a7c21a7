"""Shared pieces of the service tests: free ports, the acceptor and writer processes, a fake writer that
speaks the project's Writer proto, WAL inspection through `signalwal dump`, and envelope
decoding (docs/ENVELOPE.md)."""
import base64
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("SIGNALDB_BUILD", os.path.join(ROOT, ".build", "debug"))
ACCEPTOR = os.path.join(BUILD, "signaldb-acceptor")
WRITER = os.path.join(BUILD, "signaldb-writer")
SIGNALWAL = os.path.join(BUILD, "signalwal")
REDUCED = os.environ.get("SIGNALWAL_REDUCED") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward_messages():
    """Message classes for signaldb.internal.v1, from protoc's descriptor set of forward.proto."""
    out = os.path.join(tempfile.gettempdir(), "signaldb-forward-%d.fds" % os.getpid())
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "Generated", "protos"), "-o", out,
                    "signaldb/internal/v1/forward.proto"], check=True)
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return get("signaldb.internal.v1.ForwardRequest"), get("signaldb.internal.v1.ForwardResponse")


ForwardRequest, ForwardResponse = _forward_messages()

SIGNALS = {1: "traces", 2: "metrics", 3: "logs"}


def decode_envelope(b):
    """The envelope fields and the OTLP payload bytes (docs/ENVELOPE.md)."""
    assert b[:4] == b"SDBE", b[:8]
    version, sig, enc, flags, t, tl, dl, items = struct.unpack_from("<BBBBQHHI", b, 4)
    assert version == 1
    tenant = b[24:24 + tl].decode()
    dataset = b[24 + tl:24 + tl + dl].decode()
    return {"signal": SIGNALS[sig], "encoding": {1: "protobuf", 2: "json"}[enc], "filtered": bool(flags & 1),
            "received_ns": t, "tenant": tenant, "dataset": dataset, "items": items, "payload": b[24 + tl + dl:]}


def wal_records(wal_dir, from_lsn=1):
    """Every record the WAL holds from `from_lsn` (including ones below the checkpoint still on disk)."""
    out = subprocess.run([SIGNALWAL, "dump", wal_dir, "--from", str(from_lsn), "--format", "jsonl"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    records = []
    for line in out.stdout.splitlines():
        if line.strip():
            r = json.loads(line)
            records.append((r["lsn"], base64.b64decode(r["payload"])))
    return records


class FakeWriter:
    """A Writer service: makes records 'durable' in memory, keyed by (acceptor id, LSN), so a
    resent record is acknowledged without being stored twice. Modes: 'ok', 'down' (every call
    UNAVAILABLE), and a `reject` predicate for permanent rejections."""

    def __init__(self, port=None, required_key=None):
        self.port = port or free_port()
        self.required_key = required_key
        self.mode = "ok"
        self.reject = lambda env: None
        self.lock = threading.Lock()
        self.stored = {}      # (acceptor, lsn) -> envelope bytes
        self.calls = 0
        self.duplicates = 0
        self.unauthenticated = 0
        self.server = None

    def _forward(self, request_bytes, context):
        request = ForwardRequest.FromString(request_bytes)
        with self.lock:
            self.calls += 1
            if self.required_key is not None:
                keys = [v for k, v in context.invocation_metadata() if k == "x-signaldb-internal-key"]
                if keys != [self.required_key]:
                    self.unauthenticated += 1
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "internal key missing or wrong")
            if self.mode == "down":
                context.abort(grpc.StatusCode.UNAVAILABLE, "writer down (test)")
            response = ForwardResponse()
            for r in request.records:
                reason = self.reject(r.envelope)
                if reason:
                    rej = response.rejected.add()
                    rej.lsn = r.lsn
                    rej.reason = reason
                    continue
                key = (request.acceptor_id, r.lsn)
                if key in self.stored:
                    self.duplicates += 1
                    assert self.stored[key] == r.envelope, "same LSN, different bytes"
                else:
                    self.stored[key] = bytes(r.envelope)
                response.durable_lsns.append(r.lsn)
            return response.SerializeToString()

    def start(self):
        handler = grpc.method_handlers_generic_handler("signaldb.internal.v1.Writer", {
            "Forward": grpc.unary_unary_rpc_method_handler(self._forward),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.max_receive_message_length", 256 << 20)])
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port("127.0.0.1:%d" % self.port)
        self.server.start()
        return self

    def stop(self):
        if self.server:
            self.server.stop(0).wait()
            self.server = None

    def envelopes(self):
        with self.lock:
            return {k: decode_envelope(v) for k, v in self.stored.items()}

    def wait_for(self, predicate, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if predicate(self):
                    return True
            time.sleep(0.05)
        return False


class ServiceProcess:
    """One service process on free loopback ports, logging to `<dir>.log`."""
    binary = None
    name = "service"

    def __init__(self, data_dir, env):
        self.env = dict(os.environ)
        self.env.update({k: str(v) for k, v in env.items()})
        self.proc = None
        self.log = None
        self.log_path = data_dir.rstrip("/") + ".log"

    def ready_ports(self):
        """Ports that must accept connections before the service counts as started."""
        return []

    def start(self, wait_ready=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready()
        return self

    def is_ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.admin_port, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s; log:\n%s" % (self.name, self.proc.returncode, self.read_log()))
            if self.is_ready():
                try:
                    for port in self.ready_ports():
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError("%s not ready in %ss; log:\n%s" % (self.name, timeout, self.read_log()))

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.log:
            self.log.close()

    def terminate(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        if self.log:
            self.log.close()
        return self.proc.returncode

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.admin_port, timeout=5) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def metric_sum(self, prefix, **labels):
        total = 0.0
        for name, value in self.metrics().items():
            if name == prefix or name.startswith(prefix + "{"):
                if all('%s="%s"' % (k, v) in name for k, v in labels.items()):
                    total += value
        return total


class Acceptor(ServiceProcess):
    """One signaldb-acceptor process on free loopback ports with a small WAL."""
    binary = ACCEPTOR
    name = "acceptor"

    def __init__(self, wal_dir, writer_port, **env):
        self.wal_dir = wal_dir
        self.http_port, self.grpc_port, self.admin_port = free_port(), free_port(), free_port()
        defaults = {
            "ACCEPTOR_WAL_DIR": wal_dir,
            "ACCEPTOR_HTTP_ADDR": "127.0.0.1:%d" % self.http_port,
            "ACCEPTOR_GRPC_ADDR": "127.0.0.1:%d" % self.grpc_port,
            "ACCEPTOR_ADMIN_ADDR": "127.0.0.1:%d" % self.admin_port,
            "ACCEPTOR_WRITER_ADDR": "127.0.0.1:%d" % writer_port,
            "ACCEPTOR_WAL_SEGMENT_BYTES": "2MiB",
            "ACCEPTOR_MAX_REQUEST_BYTES": "512KiB",
            "ACCEPTOR_WAL_MAX_BYTES": "16MiB",
            "ACCEPTOR_WAL_MIN_FREE_BYTES": "0",
            "ACCEPTOR_FORWARD_BACKOFF_MAX_SECONDS": "0.5",
        }
        defaults.update(env)
        super().__init__(wal_dir, defaults)

    @property
    def http(self):
        return "http://127.0.0.1:%d" % self.http_port

    @property
    def grpc_target(self):
        return "127.0.0.1:%d" % self.grpc_port

    def ready_ports(self):
        # Readiness goes true a moment before the OTLP listeners have bound (docs/ACCEPTOR.md):
        # wait for both, or a first post can be refused.
        return [self.http_port, self.grpc_port]


class Writer(ServiceProcess):
    """One signaldb-writer process: its WAL in `<dir>/wal`, its SQLite store in `<dir>/store`,
    small segments so tests cross segment boundaries and reach the backlog bound quickly."""
    binary = WRITER
    name = "writer"

    def __init__(self, data_dir, port=None, **env):
        self.data_dir = data_dir
        self.wal_dir = os.path.join(data_dir, "wal")
        self.db_path = os.path.join(data_dir, "store", "signaldb.sqlite")
        self.port = port or free_port()
        self.admin_port = free_port()
        defaults = {
            "WRITER_WAL_DIR": self.wal_dir,
            "WRITER_STORE": "sqlite:" + self.db_path,
            "WRITER_GRPC_ADDR": "127.0.0.1:%d" % self.port,
            "WRITER_ADMIN_ADDR": "127.0.0.1:%d" % self.admin_port,
            "WRITER_WAL_SEGMENT_BYTES": "2MiB",
            "WRITER_MAX_RECORD_BYTES": "1MiB",
            "WRITER_WAL_MAX_BYTES": "16MiB",
            "WRITER_STORE_BACKOFF_MAX_SECONDS": "0.5",
        }
        defaults.update(env)
        super().__init__(data_dir, defaults)

    def ready_ports(self):
        return [self.port]

    def query(self, sql, args=()):
        """Rows from the store, read through a separate SQLite connection (as a user would)."""
        if not os.path.exists(self.db_path):
            return []
        db = sqlite3.connect(self.db_path, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def span_ids(self):
        return [bytes.fromhex(r[0]) for r in self.query("SELECT span_id FROM spans")]

    def wait_for(self, predicate, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate(self):
                return True
            time.sleep(0.1)
        return False


def post(url, body, content_type="application/x-protobuf", headers=None, method="POST"):
    """(status, headers, body) from a real HTTP request, never raising for 4xx/5xx."""
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
