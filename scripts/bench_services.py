#!/usr/bin/env python3
"""`make bench-services` (issue 15): the two services under load, one run, honest numbers.

S1  acceptor OTLP/HTTP protobuf: wrk at 1/16/64/256 connections, requests of 1, 10 and 100 spans
    (bodies from the OpenTelemetry Python SDK, scripts/bench/make_bodies.py), three servers:
    the acceptor durable (ACCEPTOR_WAL_DURABILITY=group, the default), the acceptor with
    durability none, and the ceiling: signaldb-bench-baseline, the acceptor's own HTTP and gRPC
    receivers and Ingestor with the envelope discarded instead of appended to the WAL.
S3  end to end (acceptor -> writer -> SQLite): the highest held spans/s with a bounded backlog,
    against a ceiling measured in the same run (signaldb-bench-baseline sqlite-ceiling: the same
    bodies mapped to rows and committed to a SQLiteStore in the writer's transaction size).
S2  acceptor OTLP/gRPC: h2load with a gRPC-framed body, success counted from /metrics.
S4  acceptor start-up with a 256 MiB and a 1 GiB backlog: time to /readyz, peak RSS while it
    forwards the backlog.
S5  peak RSS under sustained load (from S1 and S3).

Writes docs/bench/services-results.{json,md,svg}; the Makefile target puts the Markdown section
into BENCHMARKS.md. Knobs (environment): BENCH_SECONDS (per S1/S2 point, default 10),
BENCH_HOLD_SECONDS (S3 hold, default 60), BENCH_SECTIONS (default "S1,S3,S2,S4,S1b"; S1b: the S1 target point again, the three servers
alternating, 3 rounds), BENCH_MERGE=1 (add the sections to the existing results JSON),
BENCH_S3_FRACTIONS (fractions of the saturation drain rate to hold, first bounded wins; default 0.9,0.8,0.7,0.6),
BENCH_PYTHON (a python with opentelemetry-sdk), BENCH_CONNECTIONS (default 1,16,64,256),
BENCH_S4_MIB (default 256,1024), BENCH_OUT (another output folder; BENCHMARKS.md is then not touched).
"""
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, ".build", "release")
ACCEPTOR = os.path.join(RELEASE, "signaldb-acceptor")
WRITER = os.path.join(RELEASE, "signaldb-writer")
BASELINE = os.path.join(RELEASE, "signaldb-bench-baseline")
LUA = os.path.join(ROOT, "scripts", "bench", "otlp_post.lua")
DEFAULT_OUT = os.path.join(ROOT, "docs", "bench")
OUT = os.environ.get("BENCH_OUT", DEFAULT_OUT)  # elsewhere: BENCHMARKS.md is left alone

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
HOLD_SECONDS = int(os.environ.get("BENCH_HOLD_SECONDS", "60"))
SECTIONS = os.environ.get("BENCH_SECTIONS", "S1,S3,S2,S4,S1b").split(",")
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,16,64,256").split(",")]
SPANS = [1, 10, 100]
PYTHON = os.environ.get("BENCH_PYTHON", os.path.join(ROOT, ".venv-services", "bin", "python"))
SCRATCH = os.environ.get("BENCH_SCRATCH", os.path.join(ROOT, ".run", "bench-services"))
# The writer's committer defaults (WriterSettings.swift): rows and records per transaction.
STORE_BATCH_ROWS, STORE_BATCH_RECORDS = 10000, 1024

NONCE = [int(time.time()) % 60000]


def log(*a):
    print("[%s]" % time.strftime("%H:%M:%S"), *a, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def next_nonce():
    NONCE[0] = (NONCE[0] + 1) % 65536
    return NONCE[0]


class Service:
    def __init__(self, name, binary, env, log_path, args=()):
        self.name = name
        self.env = dict(os.environ)
        self.env.update({k: str(v) for k, v in env.items()})
        self.binary, self.args, self.log_path = binary, list(args), log_path
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([self.binary] + self.args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.admin_port, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout=120, ports=()):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (self.name, self.proc.returncode, self.log_path))
            if self.ready():
                try:
                    for p in ports:
                        socket.create_connection(("127.0.0.1", p), timeout=1).close()
                    return time.monotonic() - self.started
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("%s not ready in %ss; see %s" % (self.name, timeout, self.log_path))

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.admin_port, timeout=10) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    values[name] = float(value)
                except ValueError:
                    pass
        return values

    def metric(self, prefix, **labels):
        return metric_sum(self.metrics(), prefix, **labels)

    def rss_kib(self, field="VmRSS"):
        """VmRSS (all resident pages, including mapped WAL segment pages: file-backed, reclaimable) or
        RssAnon (the process's own heap and stacks)."""
        if self.proc is None:
            return 0
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def metric_sum(values, prefix, **labels):
    total = 0.0
    for name, value in values.items():
        if name == prefix or name.startswith(prefix + "{"):
            if all('%s="%s"' % (k, v) in name for k, v in labels.items()):
                total += value
    return total


class RSSSampler:
    """Samples VmRSS of the given services every 100 ms; peak per service (KiB)."""

    def __init__(self, services):
        self.services = services
        self.peak = {s.name: 0 for s in services}
        self.peak_anon = {s.name: 0 for s in services}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_flag.is_set():
            for s in self.services:
                self.peak[s.name] = max(self.peak[s.name], s.rss_kib())
                self.peak_anon[s.name] = max(self.peak_anon[s.name], s.rss_kib("RssAnon"))
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop_flag.set()
        self.thread.join()


def acceptor_env(wal_dir, http, grpc, admin, writer_port, durability="group", **extra):
    env = {
        "ACCEPTOR_WAL_DIR": wal_dir,
        "ACCEPTOR_HTTP_ADDR": "127.0.0.1:%d" % http,
        "ACCEPTOR_GRPC_ADDR": "127.0.0.1:%d" % grpc,
        "ACCEPTOR_ADMIN_ADDR": "127.0.0.1:%d" % admin,
        "ACCEPTOR_WRITER_ADDR": "127.0.0.1:%d" % writer_port,
        "ACCEPTOR_WAL_DURABILITY": durability,
        "LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


def start_acceptor(kind, scratch, writer_port, durability="group", wal_dir=None, **extra):
    """kind: acceptor or baseline. Returns the started (ready) service."""
    http, grpc, admin = free_port(), free_port(), free_port()
    wal_dir = wal_dir or os.path.join(scratch, "%s-%s-wal-%d" % (kind, durability, time.monotonic_ns()))
    env = acceptor_env(wal_dir, http, grpc, admin, writer_port, durability, **extra)
    binary = ACCEPTOR if kind == "acceptor" else BASELINE
    s = Service(kind if kind == "baseline" else "acceptor", binary, env, wal_dir + ".log")
    s.admin_port, s.http_port, s.grpc_port, s.wal_dir = admin, http, grpc, wal_dir
    s.start()
    s.ready_seconds = s.wait_ready(ports=(http, grpc))
    return s


def start_writer(scratch, port=None, **extra):
    d = os.path.join(scratch, "writer-%d" % time.monotonic_ns())
    os.makedirs(os.path.join(d, "store"), exist_ok=True)
    port = port or free_port()
    admin = free_port()
    env = {
        "WRITER_WAL_DIR": os.path.join(d, "wal"),
        "WRITER_STORE": "sqlite:" + os.path.join(d, "store", "signaldb.sqlite"),
        "WRITER_GRPC_ADDR": "127.0.0.1:%d" % port,
        "WRITER_ADMIN_ADDR": "127.0.0.1:%d" % admin,
        "LOG_LEVEL": "warning",
    }
    env.update(extra)
    s = Service("writer", WRITER, env, d + ".log")
    s.admin_port, s.port, s.dir = admin, port, d
    s.start()
    s.wait_ready(ports=(port,))
    return s


def run_wrk(port, body, connections, seconds, delay_ms=0):
    threads = 1 if connections == 1 else 2
    env = dict(os.environ, BENCH_BODY=body, BENCH_NONCE=str(next_nonce()), BENCH_DELAY_MS=str(delay_ms))
    cmd = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--timeout", "30s", "--latency", "-s", LUA,
           "http://127.0.0.1:%d/v1/traces" % port]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.M)
    if not m:
        raise RuntimeError("wrk failed: %s %s" % (out.stdout, out.stderr))
    r = json.loads(m.group(1))
    r["wrk_output"] = out.stdout
    r["seconds"] = r["duration_us"] / 1e6
    r["ok"] = r["requests"] - r["non2xx"]
    return r


def s1(results, scratch, bodies):
    """The acceptor over HTTP: baseline, none, group. The three servers run side by side and each
    point loads them in turn (baseline, none, group), so drift on a shared machine (another
    build, page cache, CPU frequency) hits the three alike; only the loaded one does work."""
    rows = []
    dead_writer = free_port()  # nothing listens: see the notes (the writer is not running in S1/S2)
    servers = []
    try:
        for label, kind, durability in [("no-WAL handler (baseline)", "baseline", "group"),
                                        ("acceptor, durability none", "acceptor", "none"),
                                        ("acceptor, durability group", "acceptor", "group")]:
            svc = start_acceptor(kind, scratch, dead_writer, durability, ACCEPTOR_WAL_MAX_BYTES="64GiB")
            svc.label, svc.kind, svc.durability = label, kind, durability
            servers.append(svc)
        for spans in SPANS:
            body = bodies[spans]
            for svc in servers:
                run_wrk(svc.http_port, body["path"], 16, 2)  # warm-up
            for c in CONNECTIONS:
                for svc in servers:
                    before = svc.metric("signaldb_acceptor_items_accepted_total")
                    with RSSSampler([svc]) as rss:
                        r = run_wrk(svc.http_port, body["path"], c, SECONDS)
                    after = svc.metric("signaldb_acceptor_items_accepted_total")
                    rps = r["ok"] / r["seconds"]
                    row = {"server": svc.label, "kind": svc.kind, "durability": svc.durability if svc.kind == "acceptor" else None,
                           "transport": "http", "spans_per_request": spans, "body_bytes": body["bytes"],
                           "connections": c, "requests": r["requests"], "non2xx": r["non2xx"],
                           "socket_errors": r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"],
                           "seconds": r["seconds"], "requests_per_second": rps, "spans_per_second": rps * spans,
                           "mb_per_second": rps * body["bytes"] / 1e6, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                           "spans_counted_by_server": after - before, "peak_rss_mib": rss.peak[svc.name] / 1024,
                           "peak_rss_anon_mib": rss.peak_anon[svc.name] / 1024, "loadavg_1m_after": os.getloadavg()[0],
                           "interleaved": True}
                    rows.append(row)
                    log("S1 %-28s spans=%-3d c=%-3d %9.0f req/s p50 %.2f ms p99 %.2f ms non2xx %d rss %.0f MiB (anon %.0f)" % (
                        svc.label, spans, c, rps, row["p50_ms"], row["p99_ms"], r["non2xx"], row["peak_rss_mib"], row["peak_rss_anon_mib"]))
    finally:
        for svc in servers:
            svc.stop()
            shutil.rmtree(svc.wal_dir, ignore_errors=True)
    results["s1"] = rows
    return rows


def s1_alternating(results, scratch, bodies, rounds=3):
    """The S1 target point (10 spans, 64 connections) again, the three servers started together
    and loaded in turn, `rounds` times: drift on a shared machine hits all three alike."""
    dead_writer = free_port()
    servers = []
    try:
        for label, kind, durability in [("no-WAL handler (baseline)", "baseline", "group"),
                                        ("acceptor, durability none", "acceptor", "none"),
                                        ("acceptor, durability group", "acceptor", "group")]:
            svc = start_acceptor(kind, scratch, dead_writer, durability, ACCEPTOR_WAL_MAX_BYTES="64GiB")
            svc.label = label
            servers.append(svc)
        body = bodies[10]
        for svc in servers:
            run_wrk(svc.http_port, body["path"], 16, 2)
        rows = []
        for rnd in range(1, rounds + 1):
            for svc in servers:
                with RSSSampler([svc]) as rss:
                    r = run_wrk(svc.http_port, body["path"], 64, SECONDS)
                rps = r["ok"] / r["seconds"]
                rows.append({"round": rnd, "server": svc.label, "spans_per_request": 10, "connections": 64,
                             "requests_per_second": rps, "non2xx": r["non2xx"], "p50_ms": r["p50_us"] / 1000,
                             "p99_ms": r["p99_us"] / 1000, "loadavg_1m_after": os.getloadavg()[0],
                             "peak_rss_mib": rss.peak[svc.name] / 1024, "peak_rss_anon_mib": rss.peak_anon[svc.name] / 1024})
                log("S1b round %d %-28s %9.0f req/s p50 %.2f ms p99 %.2f ms" % (rnd, svc.label, rps, r["p50_us"] / 1000, r["p99_us"] / 1000))
        results["s1_alternating"] = rows
    finally:
        for svc in servers:
            svc.stop()
            shutil.rmtree(svc.wal_dir, ignore_errors=True)


def run_h2load(port, body_path, connections, seconds, scratch):
    log_file = os.path.join(scratch, "h2load-%d.log" % time.monotonic_ns())
    threads = 1 if connections == 1 else 2
    cmd = ["h2load", "-D", str(seconds), "-c", str(connections), "-t", str(threads), "-m", "1", "-d", body_path,
           "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", log_file,
           "http://127.0.0.1:%d/opentelemetry.proto.collector.trace.v1.TraceService/Export" % port]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out.stdout)
    if not m:
        raise RuntimeError("h2load failed: %s %s" % (out.stdout, out.stderr))
    lat = []
    with open(log_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    os.unlink(log_file)
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] / 1000 if lat else None
    return {"done": int(m.group(3)), "succeeded_http": int(m.group(4)), "failed": int(m.group(5)), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "output": out.stdout}


def s2(results, scratch, bodies):
    rows = []
    dead_writer = free_port()
    for label, kind, durability in [("no-WAL handler (baseline)", "baseline", "group"),
                                    ("acceptor, durability none", "acceptor", "none"),
                                    ("acceptor, durability group", "acceptor", "group")]:
        svc = start_acceptor(kind, scratch, dead_writer, durability, ACCEPTOR_WAL_MAX_BYTES="64GiB")
        try:
            for spans in [10]:
                grpc_body = bodies[spans]["grpc_path"]
                run_h2load(svc.grpc_port, grpc_body, 16, 2, scratch)
                for c in CONNECTIONS:
                    before = svc.metric("signaldb_acceptor_requests_total", transport="grpc", status="200")
                    t0 = time.monotonic()
                    r = run_h2load(svc.grpc_port, grpc_body, c, SECONDS, scratch)
                    elapsed = time.monotonic() - t0
                    after = svc.metric("signaldb_acceptor_requests_total", transport="grpc", status="200")
                    accepted = after - before
                    rps = accepted / SECONDS
                    row = {"server": label, "kind": kind, "durability": durability if kind == "acceptor" else None,
                           "transport": "grpc", "spans_per_request": spans, "body_bytes": bodies[spans]["bytes"] + 5,
                           "connections": c, "requests_done": r["done"], "accepted_by_counter": accepted,
                           "h2load_failed": r["failed"], "requests_per_second": rps, "spans_per_second": rps * spans,
                           "mb_per_second": rps * (bodies[spans]["bytes"] + 5) / 1e6, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                           "wall_seconds": elapsed, "loadavg_1m_after": os.getloadavg()[0]}
                    rows.append(row)
                    log("S2 %-28s spans=%-3d c=%-3d %9.0f req/s (counter %d of %d done) p50 %s p99 %s" % (
                        label, spans, c, rps, accepted, r["done"], row["p50_ms"], row["p99_ms"]))
        finally:
            svc.stop()
            shutil.rmtree(svc.wal_dir, ignore_errors=True)
    results["s2"] = rows


def backlog(acc, wr):
    a, w = acc.metrics(), wr.metrics()
    return {"t": time.monotonic(),
            "acceptor_lag_records": metric_sum(a, "signaldb_acceptor_forward_lag_records"),
            "writer_lag_records": metric_sum(w, "signaldb_writer_store_lag_records"),
            "writer_lag_seconds": metric_sum(w, "signaldb_writer_store_lag_seconds"),
            "stored_spans": metric_sum(w, "signaldb_writer_store_rows_total", table="spans"),
            "accepted_spans": metric_sum(a, "signaldb_acceptor_items_accepted_total")}


def slope(xs, ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def s3(results, scratch, bodies):
    spans = 10
    body = bodies[spans]
    out = {"spans_per_request": spans, "body_bytes": body["bytes"], "store_batch_rows": STORE_BATCH_ROWS,
           "store_batch_records": STORE_BATCH_RECORDS}
    # The ceiling: the same bodies, mapped and committed straight into a SQLiteStore.
    db = os.path.join(scratch, "ceiling-%d" % time.monotonic_ns(), "signaldb.sqlite")
    os.makedirs(os.path.dirname(db))
    r = subprocess.run([BASELINE, "sqlite-ceiling", db, "20", str(STORE_BATCH_ROWS), str(STORE_BATCH_RECORDS), body["path"]],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("sqlite-ceiling failed: %s %s" % (r.stdout, r.stderr))
    ceiling = json.loads(r.stdout.strip().splitlines()[-1])
    shutil.rmtree(os.path.dirname(db), ignore_errors=True)
    out["ceiling"] = ceiling
    log("S3 ceiling: %.0f spans/s (commit time only: %.0f spans/s), %d transactions" % (
        ceiling["spans_per_second"], ceiling["spans_per_commit_second"], ceiling["transactions"]))

    def pipeline():
        wr = start_writer(scratch, WRITER_WAL_MAX_BYTES="8GiB")
        acc = start_acceptor("acceptor", scratch, wr.port, "group", ACCEPTOR_WAL_MAX_BYTES="8GiB")
        return acc, wr

    def teardown(acc, wr):
        acc.kill()
        wr.kill()
        shutil.rmtree(acc.wal_dir, ignore_errors=True)
        shutil.rmtree(wr.dir, ignore_errors=True)

    # The drain rate under saturation: closed loop, 64 connections, the store's span counter.
    acc, wr = pipeline()
    try:
        samples = []
        done = threading.Event()
        def sample():
            while not done.is_set():
                samples.append(backlog(acc, wr))
                time.sleep(1)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        sat = run_wrk(acc.http_port, body["path"], 64, 30)
        done.set()
        t.join()
        window = [s for s in samples if s["t"] >= samples[0]["t"] + 10]
        drain = (window[-1]["stored_spans"] - window[0]["stored_spans"]) / (window[-1]["t"] - window[0]["t"])
        accepted_rate = sat["ok"] * spans / sat["seconds"]
        out["saturation"] = {"seconds": sat["seconds"], "accepted_spans_per_second": accepted_rate,
                             "drain_spans_per_second": drain, "backlog_at_end_records": samples[-1]["acceptor_lag_records"] + samples[-1]["writer_lag_records"]}
        log("S3 saturation: acceptor took %.0f spans/s, the store drained %.0f spans/s" % (accepted_rate, drain))
    finally:
        teardown(acc, wr)

    # Hold a fraction of the drain rate for HOLD_SECONDS; bounded = the backlog does not grow.
    holds = []
    c = 64
    for fraction in [float(f) for f in os.environ.get("BENCH_S3_FRACTIONS", "0.9,0.8,0.7,0.6").split(",")]:
        target = fraction * drain
        req_rate = target / spans
        acc, wr = pipeline()
        try:
            # wrk's delay() is per connection and in whole ms: rate ~= c * 1000 / (delay + latency).
            delay = max(1, int(round(c * 1000.0 / req_rate)))
            calib = run_wrk(acc.http_port, body["path"], c, 5, delay)
            got = calib["ok"] / calib["seconds"]
            delay = max(1, int(round(delay * got / req_rate)))
            samples = []
            done = threading.Event()
            def sample():
                while not done.is_set():
                    samples.append(backlog(acc, wr))
                    time.sleep(1)
            with RSSSampler([acc, wr]) as rss:
                t = threading.Thread(target=sample, daemon=True)
                t.start()
                held = run_wrk(acc.http_port, body["path"], c, HOLD_SECONDS, delay)
                done.set()
                t.join()
            xs = [s["t"] - samples[0]["t"] for s in samples]
            ys = [s["acceptor_lag_records"] + s["writer_lag_records"] for s in samples]
            rate = held["ok"] * spans / held["seconds"]
            growth = slope(xs, ys)  # records/s
            arrivals = held["ok"] / held["seconds"]
            # Bounded: over the hold the backlog grows (least-squares slope x duration) by less than one
            # store transaction's worth of records, and it ends under 2 s of arrivals. The backlog is a
            # sawtooth of up to a transaction's records, so a shorter trend is noise.
            bounded = growth * HOLD_SECONDS < STORE_BATCH_RECORDS and ys[-1] < 2 * arrivals
            h = {"fraction_of_drain": fraction, "delay_ms": delay, "connections": c, "held_spans_per_second": rate,
                 "held_requests_per_second": arrivals, "non2xx": held["non2xx"], "p50_ms": held["p50_us"] / 1000,
                 "p99_ms": held["p99_us"] / 1000, "backlog_growth_records_per_second": growth,
                 "backlog_max_records": max(ys), "backlog_end_records": ys[-1],
                 "writer_lag_seconds_max": max(s["writer_lag_seconds"] for s in samples),
                 "bounded": bounded, "loadavg_1m_after": os.getloadavg()[0], "peak_rss_mib": {k: v / 1024 for k, v in rss.peak.items()},
                 "samples": [{"t": round(x, 1), "backlog_records": y} for x, y in zip(xs, ys)]}
            holds.append(h)
            log("S3 hold %.0f%% of drain: %.0f spans/s for %ds, backlog slope %.1f rec/s, max %d, end %d -> %s" % (
                fraction * 100, rate, HOLD_SECONDS, growth, max(ys), ys[-1], "bounded" if bounded else "GROWING"))
        finally:
            teardown(acc, wr)
        if bounded:
            break
    out["holds"] = holds
    best = [h for h in holds if h["bounded"]]
    out["sustained_spans_per_second"] = best[0]["held_spans_per_second"] if best else None
    out["ratio_to_ceiling"] = (best[0]["held_spans_per_second"] / ceiling["spans_per_second"]) if best else None
    results["s3"] = out


def s4(results, scratch, bodies):
    out = []
    body = bodies[100]
    for size_mib in [int(x) for x in os.environ.get("BENCH_S4_MIB", "256,1024").split(",")]:
        wal_dir = os.path.join(scratch, "s4-wal-%d" % size_mib)
        shutil.rmtree(wal_dir, ignore_errors=True)
        writer_port = free_port()
        # Fill with the writer down (durability none: filling is not what is measured).
        acc = start_acceptor("acceptor", scratch, writer_port, "none", wal_dir=wal_dir, ACCEPTOR_WAL_MAX_BYTES="4GiB")
        fill_t0 = time.monotonic()
        while True:
            if acc.metric("signalwal_live_bytes") >= size_mib << 20:
                break
            run_wrk(acc.http_port, body["path"], 16, 3)
            if time.monotonic() - fill_t0 > 300:
                break
        records = acc.metric("signaldb_acceptor_forward_lag_records")
        backlog_bytes = acc.metric("signalwal_live_bytes")
        acc.stop()
        on_disk = dir_bytes(wal_dir)
        # Restart with the same WAL (group, the default), sample RSS from the start.
        http, grpc, admin = free_port(), free_port(), free_port()
        env = acceptor_env(wal_dir, http, grpc, admin, writer_port, "group", ACCEPTOR_WAL_MAX_BYTES="4GiB")
        svc = Service("acceptor", ACCEPTOR, env, wal_dir + "-restart.log")
        svc.admin_port = admin
        wr = None
        with RSSSampler([svc]) as rss:
            svc.start()
            while svc.proc is None:
                time.sleep(0.01)
            ready = svc.wait_ready(ports=(http, grpc))
            rss_at_ready = rss.peak["acceptor"]
            anon_at_ready = rss.peak_anon["acceptor"]
            wr = start_writer(scratch, port=writer_port, WRITER_WAL_MAX_BYTES="8GiB", WRITER_WAL_SEGMENT_BYTES="128MiB")
            t0 = time.monotonic()
            drained = None
            while time.monotonic() - t0 < 180:
                if svc.metric("signaldb_acceptor_forward_lag_records") == 0:
                    drained = time.monotonic() - t0
                    break
                time.sleep(0.5)
        row = {"backlog_mib": backlog_bytes / (1 << 20), "wal_dir_mib": on_disk / (1 << 20), "backlog_records": records, "spans_per_record": 100,
               "ready_seconds": ready, "peak_rss_mib_until_ready": rss_at_ready / 1024, "peak_rss_anon_mib_until_ready": anon_at_ready / 1024,
               "peak_rss_mib_while_forwarding": rss.peak["acceptor"] / 1024, "forwarded_in_seconds": drained,
               "peak_rss_anon_mib_while_forwarding": rss.peak_anon["acceptor"] / 1024, "body_bytes": body["bytes"]}
        out.append(row)
        log("S4 backlog %.0f MiB (%d records): ready in %.2f s, peak RSS %.0f MiB, forwarded in %s s" % (
            row["backlog_mib"], records, ready, row["peak_rss_mib_while_forwarding"], drained))
        svc.kill()
        wr.kill()
        shutil.rmtree(wal_dir, ignore_errors=True)
        shutil.rmtree(wr.dir, ignore_errors=True)
    results["s4"] = out


def dir_bytes(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dp, f)).st_blocks * 512
            except OSError:
                pass
    return total


def main():
    for b in (ACCEPTOR, WRITER, BASELINE):
        if not os.access(b, os.X_OK):
            sys.exit("missing %s: run `make bench-services` (it builds the release binaries)" % b)
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            sys.exit("missing %s: apt-get install -y wrk nghttp2-client" % tool)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    os.makedirs(SCRATCH)
    body_dir = os.path.join(SCRATCH, "bodies")
    subprocess.run([PYTHON, os.path.join(ROOT, "scripts", "bench", "make_bodies.py"), body_dir] + [str(s) for s in SPANS], check=True)
    bodies = {}
    for s in SPANS:
        p = os.path.join(body_dir, "spans-%d.pb" % s)
        data = open(p, "rb").read()
        gp = p[:-3] + ".grpc"
        with open(gp, "wb") as f:
            f.write(b"\x00" + len(data).to_bytes(4, "big") + data)
        bodies[s] = {"path": p, "grpc_path": gp, "bytes": len(data)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "commit": commit + ("+dirty" if dirty else ""), "cores": os.cpu_count(), "kernel": os.uname().release,
               "seconds_per_point": SECONDS, "hold_seconds": HOLD_SECONDS,
               "body_bytes": {str(s): bodies[s]["bytes"] for s in SPANS},
               "wrk": (subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines() or [""])[0].strip(),
               "h2load": subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip(),
               "scratch": SCRATCH, "disk": subprocess.run(["df", "-h", SCRATCH], capture_output=True, text=True).stdout.splitlines()[-1]}
    os.makedirs(OUT, exist_ok=True)
    t0 = time.monotonic()

    def save():
        if results.get("merged_later") and results["merged_later"][-1]["date"] == started_at:
            results["merged_later"][-1]["seconds"] = time.monotonic() - t0
        else:
            results["total_seconds"] = time.monotonic() - t0
        with open(os.path.join(OUT, "services-results.json"), "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)

    started_at = results["date"]
    if os.environ.get("BENCH_MERGE") and os.path.exists(os.path.join(OUT, "services-results.json")):
        # Adds the sections run now to an earlier run's results (which keep their date and commit).
        earlier = json.load(open(os.path.join(OUT, "services-results.json")))
        earlier.setdefault("merged_later", []).append({"sections": SECTIONS, "date": results["date"], "commit": results["commit"]})
        results = earlier
        keys = {"S1": "s1", "S3": "s3", "S2": "s2", "S4": "s4", "S1b": "s1_alternating"}
        for name in SECTIONS:
            if keys.get(name) in results:  # what the section measured before stays, under earlier_runs
                results.setdefault("earlier_runs", {}).setdefault(keys[name], []).append(results.pop(keys[name]))
    for name, fn in (("S1", s1), ("S3", s3), ("S2", s2), ("S4", s4), ("S1b", s1_alternating)):
        if name in SECTIONS:
            log("--- %s" % name)
            try:
                fn(results, SCRATCH, bodies)
            except Exception as e:  # keep what was measured
                log("%s failed: %r" % (name, e))
                results.setdefault("failures", {})[name] = repr(e)
            save()
    save()
    import bench_services_report
    bench_services_report.write(results, OUT, benchmarks_md=os.path.abspath(OUT) == DEFAULT_OUT)
    log("done in %.0f s: %s" % (time.monotonic() - t0, os.path.join(OUT, "services-results.md")))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
