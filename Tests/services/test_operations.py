"""Operating the services: Prometheus scraping both admin ports and evaluating the committed
alert rules (deploy/prometheus/alerts.yml) against them, the disk alert on a nearly full WAL
filesystem, a read-only root filesystem with uid 1000 and the volumes and settings of
deploy/docker and deploy/k8s, the file modes SIGNALDB_FILE_ACCESS gives, and SIGNALDB_LOG_FILE.

TestPrometheus and TestReadOnlyRoot need root (private mount namespaces with a tmpfs or bind
mounts at /data/wal and /data/store, setpriv); TestPrometheus needs Debian's `prometheus`
(apt-get install -y prometheus; make service-venvs installs it).

Run: make test-services (or python -m unittest -v test_operations from this folder, with
SIGNALDB_BUILD pointing at a build holding signaldb-acceptor and signaldb-writer)."""
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from harness import ACCEPTOR, ROOT, WRITER, Acceptor, Writer, free_port, post
from test_acceptor import span_request

ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SERVICES = {"signaldb-acceptor", "signaldb-writer"}
MIB = 1 << 20
IS_ROOT = os.geteuid() == 0


def post_spans(acceptor, requests=5, spans=10, name="ops"):
    """Posts `requests` OTLP/HTTP protobuf trace requests; the span ids, all acknowledged."""
    ids = set()
    for i in range(requests):
        req = span_request(spans, name="%s%d" % (name, i))
        status, _, body = post(acceptor.http + "/v1/traces", req.SerializeToString())
        assert status == 200, (status, body[:500])
        ids |= {s.span_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
    return ids


def wait_until(predicate, timeout, interval=0.2):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() >= deadline:
            return value
        time.sleep(interval)


def modes_under(top, skip=()):
    """{relative path: (is_dir, mode bits, uid, gid)} for everything under `top` (not `top`)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if path in skip:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:   # e.g. .checkpoint.next renamed away meanwhile
                continue
            out[os.path.relpath(path, top)] = (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def make_dirs(path):
    """Creates `path` and its missing parents; the ones created, outermost first."""
    created, missing = [], path
    while not os.path.exists(missing):
        created.insert(0, missing)
        missing = os.path.dirname(missing)
    os.makedirs(path, exist_ok=True)
    return created


def remove_dirs(created):
    """Removes what make_dirs created (empty mount points), innermost first."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            pass


def wrong_modes(entries, dir_mode, file_mode):
    return {p: oct(m) for p, (d, m, _, _) in entries.items() if m != (dir_mode if d else file_mode)}


def wait_exit(service, timeout=30):
    """The exit code of a service expected to fail start-up (never one that became ready)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if service.proc.poll() is not None:
            service.log.close()
            return service.proc.returncode
        time.sleep(0.05)
    ready = service.is_ready()
    service.kill()
    raise AssertionError("%s still running after %ss (ready=%s); log:\n%s" % (service.name, timeout, ready, service.read_log()))


# ---------------------------------------------------------------------------------------------
# PromQL: the quantity an alert compares


def _top_level_ops(expr, ops):
    """(index, op) of each occurrence of one of `ops` outside (), [], {} and quotes."""
    found, depth, quote, i = [], 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for op in ops:
                if expr.startswith(op, i):
                    if op.isalpha() and not (expr[i - 1:i].isspace() and expr[i + len(op):i + len(op) + 1].isspace()):
                        continue
                    found.append((i, op))
                    i += len(op) - 1
                    break
        i += 1
    return found


def _unwrap(expr):
    """`expr` without parentheses around all of it."""
    expr = expr.strip()
    while expr.startswith("(") and _closing(expr) == len(expr) - 1:
        expr = expr[1:-1].strip()
    return expr


def _closing(expr):
    """The index of the parenthesis closing expr[0] (None if unbalanced)."""
    depth, quote, i = 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def alert_quantities(expr):
    """The quantities an alert expression compares: each operand of a top-level and/or/unless,
    with its final comparison with a number (`> N`, `== N`, `< N`, ...) stripped, and absent(x)
    read as x."""
    expr = _unwrap(expr)
    parts, start = [], 0
    for i, op in _top_level_ops(expr, ["unless", "and", "or"]):
        parts.append(expr[start:i])
        start = i + len(op)
    parts.append(expr[start:])
    out = []
    for part in parts:
        part = _unwrap(re.sub(r"^\s*(on|ignoring)\s*\([^)]*\)", "", part))
        comparisons = _top_level_ops(part, ["==", "!=", ">=", "<=", ">", "<"])
        if comparisons:
            i, op = comparisons[-1]
            if re.fullmatch(r"\s*(bool\s+)?[-+]?[0-9.eE+]+\s*", part[i + len(op):]):
                part = part[:i]
        part = _unwrap(part)
        m = re.fullmatch(r"absent(_over_time)?\((.*)\)", part, re.S)
        if m:
            part = m.group(2)
            if m.group(1):
                part = re.sub(r"\[[^\]]*\]\s*$", "", part)
        out.append(_unwrap(part))
    return out


class TestAlertQuantities(unittest.TestCase):
    """The PromQL splitting the Prometheus test relies on (no services needed)."""

    def test_final_comparison_is_stripped(self):
        self.assertEqual(alert_quantities('disk_used_bytes / disk_size_bytes > 0.85'), ["disk_used_bytes / disk_size_bytes"])
        self.assertEqual(alert_quantities('increase(signalwal_flush_failures_total[5m]) > 0'),
                         ["increase(signalwal_flush_failures_total[5m])"])
        self.assertEqual(alert_quantities('signaldb_acceptor_ready{job="a"} == 0'), ['signaldb_acceptor_ready{job="a"}'])
        self.assertEqual(alert_quantities('(max by (service) (x{a=~"b>c"}) < 1)'), ['max by (service) (x{a=~"b>c"})'])
        self.assertEqual(alert_quantities('x > 1 and y == 0'), ["x", "y"])
        self.assertEqual(alert_quantities('absent(up{job="signaldb-writer"})'), ['up{job="signaldb-writer"}'])
        self.assertEqual(alert_quantities('sum(rate(x[1m])) by (service) > 0'), ["sum(rate(x[1m])) by (service)"])
        self.assertEqual(alert_quantities('(a) / (b) >= 1'), ["(a) / (b)"])
        self.assertEqual(alert_quantities('x{a="or b"} or y'), ['x{a="or b"}', "y"])


# ---------------------------------------------------------------------------------------------
# Prometheus


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping `targets` ({job: host:port}) every
    second and evaluating `rule_files` every second."""

    def __init__(self, directory, targets, rule_files):
        self.port = free_port()
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()],
        }
        self.config_path = os.path.join(directory, "prometheus.yml")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)   # JSON is YAML
        self.log_path = os.path.join(directory, "prometheus.log")
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PROMETHEUS, "--config.file=" + self.config_path,
                                      "--storage.tsdb.path=" + os.path.join(self.directory, "tsdb"),
                                      "--web.listen-address=127.0.0.1:%d" % self.port],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited with %s:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus not ready in 30 s:\n" + self.read_log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def api(self, path, **params):
        url = self.url + "/api/v1/" + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
        if body.get("status") != "success":
            raise AssertionError("%s: %s" % (url, body))
        return body["data"]

    def query(self, q):
        """[(labels, value)] of an instant query (a vector; a scalar comes back without labels)."""
        data = self.api("query", query=q)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def alerting_rules(self):
        return [(g["file"], r) for g in self.api("rules", type="alert")["groups"] for r in g["rules"]]

    def alerts(self, name):
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name]


def ours(labels):
    return labels.get("service") in SERVICES or labels.get("job") in SERVICES


@unittest.skipUnless(IS_ROOT, "needs root (mounts a tmpfs)")
class TestPrometheus(unittest.TestCase):
    """Prometheus (1 s scrapes and evaluations) scrapes both services and evaluates the committed
    alert rules: every alert's quantity has series from our services, the disk alert goes off
    when the WAL filesystem passes 85%, and the flush-duration gauge is sane. Both WALs and the
    store are on one 64 MiB tmpfs mounted, in a private mount namespace, at the mount point
    WALDiskSpaceHigh selects (/data/wal, where deploy/ mounts the WAL volume)."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(PROMETHEUS):
            raise AssertionError("prometheus is not installed: apt-get install -y prometheus")
        if not os.path.exists(ALERTS):
            raise AssertionError("%s does not exist" % ALERTS)
        cls.tmp = tempfile.mkdtemp(prefix="ops-prometheus-")
        cls.writer = cls.acceptor = cls.prometheus = cls.holder = None
        cls.created = []
        try:
            # Ports first, so that Prometheus (and the rules it loaded) can come up before the services.
            cls.writer = Writer("/nonexistent", WRITER_WAL_SEGMENT_BYTES="2MiB",
                                WRITER_MAX_RECORD_BYTES="1MiB", WRITER_WAL_MAX_BYTES="8MiB")
            cls.acceptor = Acceptor("/nonexistent", cls.writer.port,
                                    ACCEPTOR_WAL_SEGMENT_BYTES="2MiB", ACCEPTOR_MAX_REQUEST_BYTES="1MiB",
                                    ACCEPTOR_WAL_MAX_BYTES="8MiB", ACCEPTOR_WAL_MIN_FREE_BYTES="1MiB")
            cls.prometheus = Prometheus(os.path.join(cls.tmp, "prometheus"), {
                "signaldb-acceptor": "127.0.0.1:%d" % cls.acceptor.admin_port,
                "signaldb-writer": "127.0.0.1:%d" % cls.writer.admin_port}, [ALERTS]).start()
            cls.mnt = cls.disk_rule_mountpoint() or os.path.join(cls.tmp, "walfs")
            cls.start_services()
            cls.sent = post_spans(cls.acceptor, requests=10, spans=20)
            up = wait_until(lambda: {l.get("job") for l, v in cls.prometheus.query('up{job=~"signaldb-.*"}') if v == 1} == SERVICES, 20)
            assert up, "prometheus never scraped both services: %s\n%s" % (
                cls.prometheus.api("targets"), cls.prometheus.read_log())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def disk_rule_mountpoint(cls):
        """The mount point WALDiskSpaceHigh names (mountpoint="..."), if it names one."""
        rules = wait_until(lambda: cls.prometheus.alerting_rules(), 10)
        for _, rule in rules:
            if rule["name"] == "WALDiskSpaceHigh":
                m = re.search(r'mountpoint\s*=\s*"([^"]+)"', rule["query"])
                return m.group(1) if m else None
        return None

    @classmethod
    def start_services(cls):
        """Both services in one private mount namespace where a 64 MiB tmpfs is mounted at
        `cls.mnt` (so their disk metrics say mountpoint=<cls.mnt>; the host never sees the mount).
        A `sleep` holds the namespace; the test reaches the tmpfs through /proc/<pid>/root."""
        cls.created += make_dirs(cls.mnt)
        cls.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o size=64m,mode=0755 tmpfs "$0" && echo mounted && exec sleep 100000', cls.mnt],
            stdout=subprocess.PIPE, text=True)
        assert cls.holder.stdout.readline().strip() == "mounted", "could not mount a tmpfs at %s" % cls.mnt
        cls.fs = "/proc/%d/root%s" % (cls.holder.pid, cls.mnt)   # the tmpfs, seen from here
        assert os.statvfs(cls.fs).f_blocks * os.statvfs(cls.fs).f_frsize == 64 * MIB
        cls.ballast = os.path.join(cls.fs, "ballast")
        wrapper = os.path.join(cls.tmp, "in-namespace.sh")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nexec nsenter --mount=/proc/%d/ns/mnt -- "$NAMESPACE_EXEC"\n' % cls.holder.pid)
        os.chmod(wrapper, 0o755)
        for service, binary, wal_dir in ((cls.writer, WRITER, os.path.join(cls.mnt, "writer", "wal")),
                                         (cls.acceptor, ACCEPTOR, os.path.join(cls.mnt, "acceptor"))):
            service.wal_dir = wal_dir
            service.binary = wrapper
            service.log_path = os.path.join(cls.tmp, service.name + ".log")
            service.env["NAMESPACE_EXEC"] = binary
        cls.writer.env.update(WRITER_WAL_DIR=cls.writer.wal_dir,
                              WRITER_STORE="sqlite:" + os.path.join(cls.mnt, "writer", "store", "signaldb.sqlite"))
        cls.acceptor.env["ACCEPTOR_WAL_DIR"] = cls.acceptor.wal_dir
        cls.writer.start()
        cls.acceptor.start()

    @classmethod
    def tearDownClass(cls):
        for p in (cls.prometheus, cls.acceptor, cls.writer):
            if p is not None:
                (p.stop if isinstance(p, Prometheus) else p.kill)()
        if cls.holder is not None:
            cls.holder.kill()   # the namespace, and with it the tmpfs, goes with its last process
            cls.holder.wait()
        remove_dirs(cls.created)
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def wait_query(self, q, predicate, timeout=15):
        """The result of `q` once predicate(result) holds (or the last result, after `timeout`)."""
        result = []

        def check():
            nonlocal result
            result = self.prometheus.query(q)
            return predicate(result)
        wait_until(check, timeout, interval=0.5)
        return result

    def test_alerts_file_passes_promtool_and_prometheus_loads_every_rule(self):
        out = subprocess.run([PROMTOOL, "check", "rules", ALERTS], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        rules = self.prometheus.alerting_rules()
        self.assertGreater(len(rules), 0, "no alerting rules loaded from %s" % ALERTS)
        self.assertEqual({f for f, _ in rules}, {ALERTS})
        names = [r["name"] for _, r in rules]
        self.assertIn("WALDiskSpaceHigh", names)
        self.assertEqual(len(names), len(set(names)), "alert names repeat: %s" % names)
        # Every rule has been evaluated without an error (health "ok", not "err"/"unknown").
        wait_until(lambda: all(r["health"] == "ok" for _, r in self.prometheus.alerting_rules()), 10)
        bad = {r["name"]: (r["health"], r.get("lastError")) for _, r in self.prometheus.alerting_rules() if r["health"] != "ok"}
        self.assertEqual(bad, {})

    def test_every_alert_quantity_has_series_from_our_services(self):
        post_spans(self.acceptor, requests=3, spans=5, name="quantity")
        pending = {"%s: %s" % (rule["name"], q): q for _, rule in self.prometheus.alerting_rules()
                   for q in alert_quantities(rule["query"])}
        self.assertGreater(len(pending), 0)
        missing, deadline = {}, time.time() + 15   # increase(...) needs two scrapes
        while pending and time.time() < deadline:
            missing = {}
            for key, q in list(pending.items()):
                result = self.prometheus.query(q)
                if any(ours(labels) for labels, _ in result):
                    del pending[key]
                else:
                    missing[key] = result[:3]
            time.sleep(0.5)
        self.assertEqual(missing, {}, "alert quantities with no series labelled service/job = one of %s" % sorted(SERVICES))

    def test_every_contract_metric_is_exported_by_its_service(self):
        # The contract's metric names (the issue's), each scraped from the service that owns it;
        # the counters from start-up, so that increase() sees their first step.
        engine = ["disk_used_bytes", "disk_size_bytes", "wal_flush_duration_seconds", "signalwal_flush_duration_seconds_bucket",
                  "signalwal_flush_duration_seconds_sum", "signalwal_flush_duration_seconds_count", "signalwal_segment_files",
                  "signalwal_live_segments", "signalwal_live_bytes", "signalwal_max_live_bytes", "signalwal_backlog_records",
                  "signalwal_oldest_unprocessed_age_seconds", "signalwal_flush_failures_total",
                  "signalwal_out_of_space_errors_total", "signalwal_backlog_full_errors_total", "signalwal_failed",
                  "signalwal_recovery_lost_records", "signalwal_recovery_damaged_ranges"]
        expected = {(n, job) for n in engine for job in SERVICES}
        expected |= {(n, "signaldb-acceptor") for n in [
            "signaldb_acceptor_ready", "signaldb_acceptor_forward_lag_records", "signaldb_acceptor_forward_lag_seconds",
            "signaldb_acceptor_dead_letters_total", "signaldb_acceptor_forward_failures_total",
            "signaldb_acceptor_backpressure_total", "signaldb_acceptor_requests_total", "signaldb_acceptor_items_accepted_total"]}
        expected |= {(n, "signaldb-writer") for n in [
            "signaldb_writer_ready", "signaldb_writer_store_lag_records", "signaldb_writer_store_lag_seconds",
            "signaldb_writer_store_failing", "signaldb_writer_dead_letters_total",
            "signaldb_writer_store_commit_failures_total", "signaldb_writer_backpressure_total"]}
        names = "|".join(sorted({n for n, _ in expected}))
        q = 'group by (__name__, job) ({__name__=~"%s", job=~"signaldb-.+"})' % names
        found = self.wait_query(q, lambda res: {(l["__name__"], l["job"]) for l, _ in res} >= expected, timeout=5)
        self.assertEqual(sorted(expected - {(l["__name__"], l["job"]) for l, _ in found}), [], "not exported")

    def test_engine_series_carry_service_label_matching_job_and_segment_files(self):
        pairs = self.wait_query('count by (job, service) ({__name__=~"signalwal_.+", job=~"signaldb-.+"})',
                                lambda res: {l.get("job") for l, _ in res} == SERVICES)
        self.assertEqual({(l.get("job"), l.get("service")) for l, _ in pairs},
                         {("signaldb-acceptor", "signaldb-acceptor"), ("signaldb-writer", "signaldb-writer")})
        self.assertEqual(self.prometheus.query('{__name__=~"signalwal_.+", job=~"signaldb-.+", service=""}'), [])
        files = self.prometheus.query('signalwal_segment_files{job=~"signaldb-.+"}')
        self.assertEqual({l["service"] for l, _ in files}, SERVICES, files)
        self.assertTrue(all(v >= 1 for _, v in files), files)
        self.assertEqual({l["wal"] for l, _ in files}, {self.acceptor.wal_dir, self.writer.wal_dir})

    def test_wal_flush_duration_gauge_is_between_0_and_1_second_under_light_load(self):
        post_spans(self.acceptor, requests=5, spans=5, name="flush")
        result = self.wait_query("wal_flush_duration_seconds", lambda res: {l.get("service") for l, _ in res} >= SERVICES)
        self.assertEqual({l.get("service") for l, _ in result}, SERVICES, result)
        self.assertEqual({l.get("wal") for l, _ in result}, {self.acceptor.wal_dir, self.writer.wal_dir}, result)
        for labels, value in result:
            self.assertGreaterEqual(value, 0, labels)
            self.assertLess(value, 1, labels)
        counts = self.prometheus.query('signalwal_flush_duration_seconds_count{job=~"signaldb-.+"}')
        self.assertEqual({l["service"] for l, v in counts if v > 0}, SERVICES, counts)

    def test_disk_alert_fires_when_wal_filesystem_passes_85_percent(self):
        rule = {r["name"]: r for _, r in self.prometheus.alerting_rules()}.get("WALDiskSpaceHigh")
        self.assertIsNotNone(rule, "no WALDiskSpaceHigh rule in %s" % ALERTS)
        # The rule's quantity, on our mount point only.
        (quantity,) = alert_quantities(rule["query"])
        if "mountpoint" in quantity:
            quantity = re.sub(r'mountpoint\s*(=~|!~|!=|=)\s*"[^"]*"', 'mountpoint="%s"' % self.mnt, quantity)
        on_mount = lambda res: [(l, v) for l, v in res if l.get("mountpoint") == self.mnt]

        used = self.wait_query('disk_used_bytes{mountpoint="%s"}' % self.mnt, lambda res: len(res) == 2)
        self.assertEqual({l.get("service") for l, _ in used}, SERVICES, used)
        self.assertEqual({l.get("wal") for l, _ in used}, {self.acceptor.wal_dir, self.writer.wal_dir}, used)
        size = self.prometheus.query('disk_size_bytes{mountpoint="%s"}' % self.mnt)
        self.assertEqual(sorted(v for _, v in size), [64.0 * MIB, 64.0 * MIB], size)
        before = self.wait_query(quantity, lambda res: len(on_mount(res)) == 2)
        self.assertEqual(len(on_mount(before)), 2, "%s has no series for mountpoint %s: %s" % (quantity, self.mnt, before))
        self.assertTrue(all(0 < v < 0.85 for _, v in on_mount(before)), before)
        # Evaluated on that data, the alert is quiet.
        seen = time.time()
        wait_until(lambda: self._last_evaluation("WALDiskSpaceHigh") > seen + 1, 10)
        self.assertEqual(self.prometheus.alerts("WALDiskSpaceHigh"), [])
        self.assertEqual(self._rule("WALDiskSpaceHigh")["state"], "inactive")

        vfs = os.statvfs(self.fs)
        total, free = vfs.f_blocks * vfs.f_frsize, vfs.f_bfree * vfs.f_frsize
        fd = os.open(self.ballast, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, free - int(total * 0.08))   # ~92% used
        finally:
            os.close(fd)
        try:
            vfs = os.statvfs(self.fs)
            self.assertGreater(1 - vfs.f_bfree / vfs.f_blocks, 0.85)
            after = self.wait_query(quantity, lambda res: len(on_mount(res)) == 2 and all(v > 0.85 for _, v in on_mount(res)))
            self.assertTrue(len(on_mount(after)) == 2 and all(v > 0.85 for _, v in on_mount(after)), after)
            ratio = self.prometheus.query('disk_used_bytes{mountpoint="%s"} / disk_size_bytes{mountpoint="%s"}' % (self.mnt, self.mnt))
            self.assertTrue(len(ratio) == 2 and all(v > 0.85 for _, v in ratio), ratio)
            firing = wait_until(lambda: [a for a in self.prometheus.alerts("WALDiskSpaceHigh")
                                         if a["state"] in ("pending", "firing")], 15)
            self.assertTrue(firing, "WALDiskSpaceHigh neither pending nor firing: rule %s" % self._rule("WALDiskSpaceHigh"))
            self.assertTrue(all(ours(a["labels"]) for a in firing), firing)
            if "mountpoint" in firing[0]["labels"]:
                self.assertEqual({a["labels"]["mountpoint"] for a in firing}, {self.mnt}, firing)
        finally:
            os.unlink(self.ballast)

    def _rule(self, name):
        return {r["name"]: r for _, r in self.prometheus.alerting_rules()}[name]

    def _last_evaluation(self, name):
        t = self._rule(name).get("lastEvaluation", "")
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", t)
        if not m or m.group(1).startswith("0001"):
            return 0
        return time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) - time.timezone + float(m.group(2) or 0)


# ---------------------------------------------------------------------------------------------
# Read-only root, uid 1000

INNER = r"""
set -u
# The volumes: each scratch directory bound onto its mount point (a fresh bind mount is writable).
for pair in $CONFINE_BINDS; do
  mount --bind "${pair%%:*}" "${pair#*:}" || { echo "confine: cannot bind $pair" >&2; exit 91; }
done
# Every other mount read-only.
awk '{print $5, $6}' /proc/self/mountinfo | while read -r m opts; do
  case ",$opts," in *,ro,*) continue;; esac
  keep=0; for pair in $CONFINE_BINDS; do [ "$m" = "${pair#*:}" ] && keep=1; done
  [ $keep = 1 ] && continue
  mount -o remount,bind,ro "$m" 2>/dev/null || case "$m" in
    /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;;
    *) echo "confine: cannot make $m read-only" >&2; exit 92;;
  esac
done
if [ $# -eq 0 ]; then set -- "$CONFINE_EXEC"; fi
exec setpriv --reuid 1000 --regid 1000 --clear-groups -- "$@"
"""


class Confinement:
    """Runs a command the way deploy/ runs the services: in a private mount namespace where
    only `binds` ({scratch dir: mount point}) are writable and everything else is read-only, as
    uid/gid 1000 with no supplementary groups. Everything execs, so the pid is the command's."""

    def __init__(self, directory, name, binds):
        self.binds = binds
        self.inner = os.path.join(directory, "confine-inner.sh")
        self.wrapper = os.path.join(directory, "confine-%s.sh" % name)
        with open(self.inner, "w") as f:
            f.write(INNER)
        with open(self.wrapper, "w") as f:
            f.write('#!/bin/sh\nexec unshare --mount --propagation private /bin/sh %s "$@"\n' % self.inner)
        os.chmod(self.inner, 0o755)
        os.chmod(self.wrapper, 0o755)

    def env(self, binary):
        return {"CONFINE_BINDS": " ".join("%s:%s" % kv for kv in self.binds.items()), "CONFINE_EXEC": binary}

    def run(self, script):
        env = dict(os.environ, **self.env("/bin/false"))
        return subprocess.run([self.wrapper, "/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)

    def confine(self, service, binary, **env):
        """A harness service that starts through this confinement, with `env` on top."""
        service.binary = self.wrapper
        service.env.update(self.env(binary))
        service.env.update(env)
        return service


@unittest.skipUnless(IS_ROOT, "needs root (unshare --mount, setpriv)")
class TestReadOnlyRoot(unittest.TestCase):
    """Both services as deploy/ runs them (Dockerfile, compose.yaml): read-only root filesystem,
    uid/gid 1000, writable only the volumes at /data/wal (both) and /data/store (writer), which
    exist beforehand owned by 1000:1000 with mode 0700, and the deploy's settings
    (ACCEPTOR_WAL_DIR=WRITER_WAL_DIR=/data/wal, WRITER_STORE=sqlite:/data/store/signaldb.sqlite).
    Each service has its own namespace, so both mount their own volume at /data/wal."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ops-readonly-")
        os.chmod(self.tmp, 0o755)
        self.created = make_dirs("/data/wal") + make_dirs("/data/store")
        self.vols = {}
        for name in ("acceptor-wal", "writer-wal", "writer-store"):
            self.vols[name] = os.path.join(self.tmp, name)
            os.mkdir(self.vols[name], 0o700)
            os.chown(self.vols[name], 1000, 1000)
        self.acceptor_confinement = Confinement(self.tmp, "acceptor", {self.vols["acceptor-wal"]: "/data/wal"})
        self.writer_confinement = Confinement(self.tmp, "writer", {self.vols["writer-wal"]: "/data/wal",
                                                                   self.vols["writer-store"]: "/data/store"})
        self.acceptor = self.writer = None

    def tearDown(self):
        for s in (self.acceptor, self.writer):
            if s is not None:
                s.kill()
        remove_dirs(self.created)
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def binaries(self):
        """The service binaries, copied where uid 1000 can run them if it cannot run the build's."""
        out = self.writer_confinement.run('test -r %s -a -x %s -a -r %s -a -x %s && echo runnable' % (ACCEPTOR, ACCEPTOR, WRITER, WRITER))
        if "runnable" in out.stdout:
            return ACCEPTOR, WRITER
        bin_dir = os.path.join(self.tmp, "bin")
        os.mkdir(bin_dir)
        copies = []
        for b in (ACCEPTOR, WRITER):
            shutil.copy(b, bin_dir)
            copies.append(os.path.join(bin_dir, os.path.basename(b)))
            os.chmod(copies[-1], 0o755)
        return tuple(copies)

    def test_confinement_is_read_only_except_volumes_and_runs_as_1000(self):
        outside = os.path.join(self.tmp, "outside-probe")
        read_only = [outside, ROOT + "/.ro-probe", "/data/ro-probe", "/dev/shm/ro-probe", "/tmp/ro-probe-%d" % os.getpid()]
        out = self.writer_confinement.run(
            'id -u; id -g; id -G; for p in %s; do touch "$p" 2>&1 || true; done; '
            'touch /data/wal/probe && echo wal-writable; touch /data/store/probe && echo store-writable'
            % " ".join(read_only))
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.splitlines()
        self.assertEqual(lines[:3], ["1000", "1000", "1000"], out.stdout)
        for p in read_only:
            self.assertTrue(any(p in l and "Read-only file system" in l for l in lines), "%s: %s" % (p, out.stdout))
            self.assertFalse(os.path.exists(p))
        self.assertIn("wal-writable", lines)
        self.assertIn("store-writable", lines)
        self.assertEqual(os.stat(os.path.join(self.vols["writer-wal"], "probe")).st_uid, 1000)
        self.assertTrue(os.path.exists(os.path.join(self.vols["writer-store"], "probe")))
        self.assertEqual(os.listdir("/data/wal"), [], "the host's /data/wal is only a mount point")

    def run_confined(self, **env):
        """Both services confined, spans posted and stored; what they created in their volumes
        (snapshot while running: SQLite's -wal/-shm go at shutdown)."""
        acceptor_bin, writer_bin = self.binaries()
        self.writer = Writer(os.path.join(self.tmp, "writer"))
        self.writer_confinement.confine(self.writer, writer_bin, WRITER_WAL_DIR="/data/wal",
                                        WRITER_STORE="sqlite:/data/store/signaldb.sqlite", **env)
        self.writer.db_path = os.path.join(self.vols["writer-store"], "signaldb.sqlite")
        self.writer.start()
        self.acceptor = Acceptor("/data/wal", self.writer.port)
        self.acceptor.log_path = os.path.join(self.tmp, "acceptor.log")
        self.acceptor_confinement.confine(self.acceptor, acceptor_bin, **env)
        self.acceptor.start()
        # Really confined: the processes have uid/gid 1000 and see / read-only.
        for service in (self.writer, self.acceptor):
            with open("/proc/%d/status" % service.proc.pid) as f:
                ids = [l.split()[1:] for l in f if l.startswith(("Uid:", "Gid:", "Groups:"))]
            self.assertEqual(ids, [["1000"] * 4, ["1000"] * 4, []], service.name)
            with open("/proc/%d/mountinfo" % service.proc.pid) as f:
                mounts = {l.split()[4]: l.split()[5] for l in f}
            self.assertIn("ro", mounts["/"].split(","), service.name)
            self.assertIn("rw", mounts["/data/wal"].split(","), service.name)

        self.sent = post_spans(self.acceptor, requests=5, spans=10)
        stored = wait_until(lambda: self.writer.metric_sum("signaldb_writer_store_rows_total", table="spans") >= len(self.sent), 30)
        self.assertTrue(stored, "spans not stored\nwriter:\n%s\nacceptor:\n%s" % (self.writer.read_log(), self.acceptor.read_log()))
        self.assertTrue(self.acceptor.is_ready() and self.writer.is_ready())
        found = {}
        for vol in self.vols:
            found.update({vol + "/" + k: v for k, v in modes_under(self.vols[vol]).items()})
        for name in ("acceptor-wal/.checkpoint", "acceptor-wal/.lock", "acceptor-wal/acceptor-id", "acceptor-wal/segment-000001.wal",
                     "writer-wal/.checkpoint", "writer-wal/.lock", "writer-wal/segment-000001.wal",
                     "writer-store/signaldb.sqlite", "writer-store/signaldb.sqlite-wal", "writer-store/signaldb.sqlite-shm",
                     "writer-store/signaldb.sqlite.lock"):
            self.assertIn(name, found)
        self.assertEqual({p: (uid, gid) for p, (_, _, uid, gid) in found.items() if (uid, gid) != (1000, 1000)}, {})
        self.assertEqual(wrong_modes(found, 0o700, 0o600), {})
        return found

    def stop_and_check_stored(self):
        self.assertEqual(self.acceptor.terminate(), 0, self.acceptor.read_log())
        self.assertEqual(self.writer.terminate(), 0, self.writer.read_log())
        self.assertEqual({r[0] for r in self.writer.query("SELECT span_id FROM spans")}, {s.hex() for s in self.sent})

    def test_services_store_spans_on_read_only_root_as_uid_1000_with_owner_modes(self):
        # compose.yaml's volumes: created beforehand, 1000:1000, mode 0700; SIGNALDB_FILE_ACCESS unset.
        self.run_confined()
        for vol in self.vols.values():   # the volumes themselves: as they were, and not warned about
            self.assertEqual(stat.S_IMODE(os.stat(vol).st_mode), 0o700)
        for service in (self.writer, self.acceptor):
            self.assertNotIn("wider than SIGNALDB_FILE_ACCESS", service.read_log())
        self.stop_and_check_stored()

    def test_fsgroup_volume_roots_are_kept_and_warned_about_once(self):
        # deploy/k8s's volumes: fsGroup 1000 leaves the root root:1000, mode 2775 (setgid,
        # group-writable); the manifests set SIGNALDB_FILE_ACCESS=owner.
        for vol in self.vols.values():
            os.chown(vol, 0, 1000)
            os.chmod(vol, 0o2775)
        self.run_confined(SIGNALDB_FILE_ACCESS="owner")
        for vol in self.vols.values():
            self.assertEqual(oct(stat.S_IMODE(os.stat(vol).st_mode)), oct(0o2775), vol)
        for service, dirs in ((self.writer, ["/data/wal", "/data/store"]), (self.acceptor, ["/data/wal"])):
            warnings = [l for l in service.read_log().splitlines() if "wider than SIGNALDB_FILE_ACCESS" in l]
            for d in dirs:
                naming = [l for l in warnings if re.search(re.escape(d) + r"(?![\w/])", l)]
                self.assertEqual(len(naming), 1, "%s: one warning naming %s:\n%s" % (service.name, d, "\n".join(warnings)))
        self.stop_and_check_stored()


# ---------------------------------------------------------------------------------------------
# SIGNALDB_FILE_ACCESS, SIGNALDB_LOG_FILE


class ScratchTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ops-files-")
        self.services = []

    def tearDown(self):
        for s in self.services:
            s.kill()
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def writer(self, name="writer", **env):
        w = Writer(os.path.join(self.tmp, name), **env)
        self.services.append(w)
        return w

    def acceptor(self, writer_port, name="acceptor-wal", **env):
        a = Acceptor(os.path.join(self.tmp, name), writer_port, **env)
        self.services.append(a)
        return a

    def logs(self):
        return {os.path.join(self.tmp, n) for n in os.listdir(self.tmp) if n.endswith(".log")}


class TestFileAccess(ScratchTestCase):
    """SIGNALDB_FILE_ACCESS: group modes, an existing wider directory kept and warned about, and a
    bad value refused at start-up."""

    def test_group_access_gives_0750_directories_and_0640_files(self):
        log_file = os.path.join(self.tmp, "writer-file.log")
        writer = self.writer(SIGNALDB_FILE_ACCESS="group", SIGNALDB_LOG_FILE=log_file).start()
        acceptor = self.acceptor(writer.port, SIGNALDB_FILE_ACCESS="group").start()
        sent = post_spans(acceptor, requests=3, spans=5)
        self.assertTrue(wait_until(lambda: writer.metric_sum("signaldb_writer_store_rows_total", table="spans") >= len(sent), 30))
        entries = modes_under(self.tmp, skip=self.logs())
        for name in ("acceptor-wal", "acceptor-wal/acceptor-id", "acceptor-wal/.checkpoint", "acceptor-wal/.lock",
                     "writer", "writer/wal", "writer/wal/segment-000001.wal", "writer/store",
                     "writer/store/signaldb.sqlite", "writer/store/signaldb.sqlite-wal", "writer/store/signaldb.sqlite-shm"):
            self.assertIn(name, entries)
        self.assertEqual(wrong_modes(entries, 0o750, 0o640), {})
        self.assertEqual(oct(stat.S_IMODE(os.stat(log_file).st_mode)), oct(0o640), "the log file the writer created")
        for s in (writer, acceptor):
            self.assertNotIn("wider than SIGNALDB_FILE_ACCESS", s.read_log())

    def test_existing_wider_wal_directories_keep_their_mode_and_are_warned_about(self):
        acceptor_wal = os.path.join(self.tmp, "acceptor-wal")
        writer_wal = os.path.join(self.tmp, "writer", "wal")
        for d in (acceptor_wal, writer_wal):
            os.makedirs(d)
            os.chmod(d, 0o777)
        writer = self.writer().start()
        acceptor = self.acceptor(writer.port).start()
        post_spans(acceptor, requests=2, spans=3)
        for service, d in ((acceptor, acceptor_wal), (writer, writer_wal)):
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o777, d)
            warnings = [l for l in service.read_log().splitlines() if "wider than SIGNALDB_FILE_ACCESS" in l]
            self.assertTrue(any(d in l for l in warnings), "%s: no warning naming %s:\n%s" % (service.name, d, service.read_log()))
            # New files in it still get the owner mode.
            self.assertEqual(wrong_modes(modes_under(d), 0o700, 0o600), {}, d)

    def test_existing_wider_store_directory_keeps_its_mode_and_is_warned_about(self):
        store = os.path.join(self.tmp, "writer", "store")
        os.makedirs(store)
        os.chmod(store, 0o775)
        writer = self.writer().start()
        self.assertEqual(stat.S_IMODE(os.stat(store).st_mode), 0o775)
        warnings = [l for l in writer.read_log().splitlines() if "wider than SIGNALDB_FILE_ACCESS" in l]
        self.assertTrue(any(store in l for l in warnings), writer.read_log())
        self.assertFalse(any(os.path.join(self.tmp, "writer", "wal") in l for l in warnings), "the new WAL directory is not wider")

    def test_invalid_file_access_value_fails_startup_with_78_naming_the_setting(self):
        writer = self.writer(SIGNALDB_FILE_ACCESS="world")
        acceptor = self.acceptor(free_port(), SIGNALDB_FILE_ACCESS="world")
        for s in (writer, acceptor):
            s.start(wait_ready=False)
            self.assertEqual(wait_exit(s), 78, s.read_log())
            self.assertIn("SIGNALDB_FILE_ACCESS", s.read_log())
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "acceptor-wal", "acceptor-id")))


class TestLogFile(ScratchTestCase):
    """SIGNALDB_LOG_FILE: every log line also in the file, WAL events found with `grep WAL`,
    appended across a kill -9 and restart; an unwritable path refused at start-up."""

    def grep_wal(self, path):
        out = subprocess.run(["grep", "WAL", path], capture_output=True, text=True)
        return out.stdout.splitlines()

    def test_log_file_has_the_same_lines_as_stdout_and_the_wal_events(self):
        writer_log, acceptor_log = os.path.join(self.tmp, "writer-file.log"), os.path.join(self.tmp, "acceptor-file.log")
        writer = self.writer(SIGNALDB_LOG_FILE=writer_log).start()
        acceptor = self.acceptor(writer.port, SIGNALDB_LOG_FILE=acceptor_log).start()
        sent = post_spans(acceptor, requests=3, spans=5)
        self.assertTrue(wait_until(lambda: writer.metric_sum("signaldb_writer_store_rows_total", table="spans") >= len(sent), 30))
        self.assertEqual(acceptor.terminate(), 0)
        self.assertEqual(writer.terminate(), 0)
        for service, path, label in ((writer, writer_log, "signaldb.writer.WAL"), (acceptor, acceptor_log, "signaldb.acceptor.WAL")):
            with open(service.log_path) as f:
                stdout = f.read().splitlines()
            with open(path) as f:
                logged = f.read().splitlines()
            self.assertGreater(len(stdout), 3)
            self.assertEqual(oct(stat.S_IMODE(os.stat(path).st_mode)), oct(0o600), "a new file: SIGNALDB_FILE_ACCESS=owner")
            self.assertEqual(logged, stdout, service.name)
            wal = self.grep_wal(path)
            opened = [l for l in wal if "opened WAL" in l]
            self.assertEqual(len(opened), 1, wal)
            self.assertIn(label, opened[0])
            self.assertIn(service.wal_dir, opened[0])
            self.assertTrue(any("records_recovered=" in l for l in wal), "no recovery summary in grep WAL:\n" + "\n".join(wal))

    def test_log_file_shows_recovery_after_kill_9_and_restart(self):
        log = os.path.join(self.tmp, "writer.log.file")
        writer = self.writer(SIGNALDB_LOG_FILE=log).start()
        acceptor = self.acceptor(writer.port).start()
        sent = post_spans(acceptor, requests=4, spans=5)
        self.assertTrue(wait_until(lambda: writer.metric_sum("signaldb_writer_store_rows_total", table="spans") >= len(sent), 30))
        appended = writer.metric_sum("signalwal_records_appended_total")
        self.assertGreater(appended, 0)
        with open(log) as f:
            first_run = f.read().splitlines()
        writer.kill()
        again = Writer(writer.data_dir, port=writer.port, SIGNALDB_LOG_FILE=log)
        self.services.append(again)
        again.start()
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[:len(first_run)], first_run, "the restart must append to the log file, not replace it")
        opened = [l for l in self.grep_wal(log) if "opened WAL" in l]
        self.assertEqual(len(opened), 2, opened)
        second = lines[len(first_run):]
        self.assertIn(opened[1], second)
        self.assertIn("next_lsn=%d" % (appended + 1), opened[1], "the restarted writer's WAL recovered every record")
        self.assertTrue(any("records_recovered=" in l for l in second if "WAL" in l), "\n".join(second))
        with open(again.log_path) as f:
            self.assertEqual(f.read().splitlines(), lines, "stdout and the log file differ")

    def check_refused(self, path):
        writer = self.writer(SIGNALDB_LOG_FILE=path)
        acceptor = self.acceptor(free_port(), SIGNALDB_LOG_FILE=path)
        for s in (writer, acceptor):
            s.start(wait_ready=False)
            self.assertEqual(wait_exit(s), 78, s.read_log())
            self.assertIn("SIGNALDB_LOG_FILE", s.read_log())

    def test_log_file_path_that_is_a_directory_fails_startup_with_78(self):
        directory = os.path.join(self.tmp, "a-directory")
        os.mkdir(directory)
        self.check_refused(directory)

    def test_log_file_under_a_missing_read_only_directory_fails_startup_with_78(self):
        self.check_refused("/proc/signaldb-no-such-directory/service.log")


if __name__ == "__main__":
    unittest.main()
