"""The pipeline under faults, with real clients: kill -9 and power cuts of the acceptor, the
writer or both at random moments under load, a writer outage long enough to reach the
acceptor's backlog bound, a store that turns read-only, a full disk under each service's WAL,
and SIGTERM under load, repeated. The clients are the OpenTelemetry Python SDK's exporters
(HTTP protobuf and gRPC) and raw OTLP/HTTP log posts; each records which exports were
acknowledged. After every scenario every acknowledged span is in `spans` exactly once, every
acknowledged log record in `logs` exactly once, and nothing is stored that no client sent.

Sizes: `make test` runs the reduced counts below; `make soak-services` sets SIGNALDB_SOAK=1
(200 kill cycles, 50 power cuts, a 3-minute writer outage, ...), and each count has its own
variable (SIGNALDB_SOAK_KILLS, _CUTS, _SIGTERMS, _OUTAGE_SECONDS, _DISK_FULL_ROUNDS). Every test
prints one summary line (`soak: ...`) with its figures; docs/RELIABILITY.md quotes them.

The power cuts, the read-only store and the full disks need root (loop-mounted ext4, tmpfs).

Run: make test-services SERVICE_TESTS=test_soak (or python -m unittest -v test_soak from this
folder, with SIGNALDB_BUILD pointing at a build holding both services and signalwal)."""
import fcntl
import glob
import os
import random
import shutil
import sqlite3
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from harness import Acceptor, Writer, post
from test_acceptor import span_request, spans_of
from test_pipeline import Load

SOAK = os.environ.get("SIGNALDB_SOAK") == "1"


def mount_problem():
    """Why this machine cannot run the mounting tests (None when it can): root alone is not
    enough in an unprivileged container, so try a tmpfs and look for loop devices and tools."""
    if os.geteuid() != 0:
        return "needs root"
    probe = tempfile.mkdtemp(prefix="soak-probe-")
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], capture_output=True).returncode != 0:
            return "cannot mount a tmpfs here"
        subprocess.run(["umount", probe], capture_output=True)
    finally:
        os.rmdir(probe)
    if not os.path.exists("/dev/loop-control") and not glob.glob("/dev/loop[0-9]*"):
        return "no loop devices"
    for tool in ("/sbin/mkfs.ext4", shutil.which("chattr") or "/nonexistent/chattr"):
        if not os.path.exists(tool):
            return "%s is missing (e2fsprogs)" % tool
    return None


MOUNT_PROBLEM = mount_problem()


def count(name, soak, reduced):
    return int(os.environ.get("SIGNALDB_SOAK_" + name, soak if SOAK else reduced))


KILLS = count("KILLS", 200, 12)
CUTS = count("CUTS", 50, 3)
SIGTERMS = count("SIGTERMS", 20, 3)
OUTAGE_SECONDS = float(count("OUTAGE_SECONDS", 180, 3))
DISK_FULL_ROUNDS = count("DISK_FULL_ROUNDS", 5, 1)

# EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32); NOLOGFLUSH drops what the journal has not committed,
# as a power cut would (the engine's PowerCutTests use the same call).
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def percentile(values, p):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def run(*args):
    out = subprocess.run(list(args), capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(args), out.returncode, out.stderr))
    return out


class LoopExt4:
    """An ext4 image, loop-mounted at `mountpoint`, that can be cut like a power failure."""

    def __init__(self, mountpoint, megabytes):
        self.mountpoint = mountpoint
        self.image = mountpoint.rstrip("/") + ".img"
        os.makedirs(mountpoint, exist_ok=True)
        run("truncate", "-s", "%dM" % megabytes, self.image)
        run("/sbin/mkfs.ext4", "-q", "-F", "-m", "0", self.image)
        self.mount()

    def mount(self):
        run("mount", "-o", "loop", self.image, self.mountpoint)

    def cut(self):
        fd = os.open(self.mountpoint, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def remount(self):
        """After the cut and after every process using it is gone: the journal replays at mount."""
        for _ in range(50):
            if subprocess.run(["umount", self.mountpoint], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            run("umount", self.mountpoint)
        self.mount()

    def destroy(self):
        unmount(self.mountpoint)
        try:
            os.unlink(self.image)
        except OSError:
            pass


class Tmpfs:
    """A small tmpfs that can be grown, shrunk or made read-only while mounted."""

    def __init__(self, mountpoint, size):
        self.mountpoint = mountpoint
        os.makedirs(mountpoint, exist_ok=True)
        run("mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", mountpoint)

    def remount(self, options):
        run("mount", "-o", "remount," + options, self.mountpoint)

    def destroy(self):
        unmount(self.mountpoint)


def unmount(mountpoint):
    """A plain umount (which also frees a loop device), retried while the last process lets go;
    lazily only if it stays busy, so a leak is at least not a mount left in the tree."""
    for _ in range(50):
        if subprocess.run(["umount", mountpoint], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def readyz_status(process):
    """The admin listener's /readyz status (a timeout is an error, not 'not ready')."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % process.admin_port, timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def pick_victim(cycle, rng, victims):
    """The service(s) a kill or cut cycle takes down: each kind once in the first three cycles,
    then at random; counted in `victims`. Returns the kind and the services, writer first."""
    victim = ["writer", "acceptor", "both"][cycle % 3] if cycle < 3 else rng.choice(list(victims))
    victims[victim] += 1
    return victim, [s for s in ("writer", "acceptor") if victim in (s, "both")]


class SoakCase(unittest.TestCase):
    """A writer and an acceptor in a scratch directory; helpers to restart them and check the
    store against what the clients were told."""
    writer_env = {"WRITER_STORE_BATCH_INTERVAL_SECONDS": "0.05"}
    acceptor_env = {}

    def setUp(self):
        # Cleanups, not tearDown: they also run when setUp fails halfway, last registered first
        # (the processes, then the mounts, then the scratch directory).
        self.tmp = tempfile.mkdtemp(prefix="soak-test-")
        self.addCleanup(self.remove_scratch)
        self.prepare()
        self.writer = Writer(self.writer_dir(), **self.writer_env)
        self.acceptor = Acceptor(self.acceptor_wal_dir(), self.writer.port, **self.acceptor_env)
        # Logs beside the scratch directory, never on a filesystem a test cuts or fills.
        self.writer.log_path = os.path.join(self.tmp, "writer.log")
        self.acceptor.log_path = os.path.join(self.tmp, "acceptor.log")
        self.recovery = {"writer": [], "acceptor": []}
        self.addCleanup(self.writer.kill)
        self.writer.start()
        self.addCleanup(self.acceptor.kill)
        self.acceptor.start()

    def prepare(self):
        """Mounts, before the services start (each through `mounted`)."""

    def mounted(self, mount):
        self.addCleanup(mount.destroy)
        return mount

    def writer_dir(self):
        return os.path.join(self.tmp, "writer")

    def acceptor_wal_dir(self):
        return os.path.join(self.tmp, "acceptor-wal")

    def remove_scratch(self):
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_alive(self, *services):
        for name in services:
            process = getattr(self, name)
            self.assertIsNone(process.proc.poll(), "%s exited on its own (%s):\n%s" % (name, process.proc.returncode, process.read_log()))

    def restart(self, service):
        """Starts a stopped service and records how long it took to be ready (recovery)."""
        process = getattr(self, service)
        started = time.monotonic()
        process.start()
        self.recovery[service].append(time.monotonic() - started)

    def recovery_summary(self):
        parts = []
        for name, times in self.recovery.items():
            if times:
                parts.append("%s ready after restart p50 %.2f s max %.2f s (%d)" % (
                    name, statistics.median(times), max(times), len(times)))
        return "; ".join(parts)

    def assert_load_stored_once(self, load, timeout=180, min_logs=0):
        """Every acknowledged span and log record is stored, and nothing unsent is. The store's
        span key makes a repeated span impossible to store, so exactly-once is proven on the log
        records, which have no key and are never resent: `min_logs` of them must have been
        acknowledged for the check to mean something."""
        self.assertGreaterEqual(len(load.acked_logs), min_logs, "too few acknowledged log records to check exactly-once")
        self.assertTrue(self.writer.wait_for(lambda w: load.acked_spans <= set(w.span_ids()), timeout=timeout),
                        "%d acknowledged spans never reached the store\nwriter:\n%s\nacceptor:\n%s"
                        % (len(load.acked_spans - set(self.writer.span_ids())), self.writer.read_log()[-3000:],
                           self.acceptor.read_log()[-3000:]))
        repeated = self.writer.query("SELECT span_id, COUNT(*) FROM spans GROUP BY span_id HAVING COUNT(*) > 1")
        self.assertEqual(repeated, [], "span ids stored more than once")
        self.assertFalse(set(self.writer.span_ids()) - load.sent_spans, "spans in the store that no client sent")
        body = "SELECT json_extract(body, '$') FROM logs"
        self.assertTrue(self.writer.wait_for(lambda w: load.acked_logs <= {r[0] for r in w.query(body)}, timeout=timeout),
                        "acknowledged log records never reached the store")
        bodies = [r[0] for r in self.writer.query(body)]
        self.assertEqual(len(bodies), len(set(bodies)), "log records stored twice")
        self.assertFalse(set(bodies) - load.sent_logs, "log records in the store that no client sent")

    def assert_clean_logs(self):
        for process in (self.writer, self.acceptor):
            with open(process.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            for sign in ("Fatal error", "Program crashed", "SIGBUS", "WARNING: ThreadSanitizer", "ERROR: AddressSanitizer"):
                self.assertNotIn(sign, text, "%s's log: %s" % (process.name, text[text.find(sign) - 200:text.find(sign) + 2000]))


class TestKillSoak(SoakCase):
    """kill -9 of the writer, the acceptor or both, at random moments under load. The clients
    keep sending (the SDK retries) while a service is down."""

    def test_kill_9_of_writer_acceptor_or_both_loses_nothing_and_stores_once(self):
        seed = int(os.environ.get("SIGNALDB_SEED", random.randrange(1 << 30)))
        print("\nkill -9 soak: seed %d (SIGNALDB_SEED replays it)" % seed)
        rng = random.Random(seed)
        load = Load(self.acceptor, rng.randrange(1 << 30))
        load.start()
        victims = {"writer": 0, "acceptor": 0, "both": 0}
        started = time.monotonic()
        try:
            for cycle in range(KILLS):
                time.sleep(rng.uniform(0.2, 1.2))
                self.assert_alive("writer", "acceptor")
                victim, down = pick_victim(cycle, rng, victims)
                for s in down:
                    getattr(self, s).kill()
                time.sleep(rng.uniform(0, 0.5))
                for s in down:
                    self.restart(s)
        finally:
            load.finish()
        self.assertGreater(len(load.acked_spans), 50 * min(KILLS, 8))
        self.assert_load_stored_once(load, min_logs=50 * min(KILLS, 8))
        self.assert_clean_logs()
        print("\nsoak: kill -9 seed %d: %d cycles %s in %.0f s, %d spans and %d log records acknowledged (%d and %d sent), "
              "each stored once, none from nowhere; %s"
              % (seed, KILLS, victims, time.monotonic() - started, len(load.acked_spans), len(load.acked_logs),
                 len(load.sent_spans), len(load.sent_logs), self.recovery_summary()))


@unittest.skipIf(MOUNT_PROBLEM, "power cuts need a loop-mounted ext4: %s" % MOUNT_PROBLEM)
class TestPowerCutSoak(SoakCase):
    """Each service's WAL (and the writer's store) on its own loop-mounted ext4, shut down with
    EXT4_IOC_SHUTDOWN (NOLOGFLUSH) under load: the acceptor's machine, the writer's, or both lose
    power. The processes on a cut filesystem are killed, it is remounted (the journal replays),
    and they start again."""
    acceptor_env = {"ACCEPTOR_WAL_MAX_BYTES": "32MiB", "ACCEPTOR_SHUTDOWN_TIMEOUT_SECONDS": "5"}
    writer_env = {"WRITER_STORE_BATCH_INTERVAL_SECONDS": "0.05", "WRITER_WAL_MAX_BYTES": "32MiB",
                  "WRITER_SHUTDOWN_TIMEOUT_SECONDS": "5"}
    # How long a service on a dead disk may take to notice and exit: its shutdown timeout, the
    # 10 s cancellation bound (the writer's plus its 1 s busy timeout), and slack for a loaded CI.
    dead_disk_exit_bound = 5 + 11 + 14

    def prepare(self):
        self.acceptor_fs = self.mounted(LoopExt4(os.path.join(self.tmp, "acceptor-fs"), 128))
        self.writer_fs = self.mounted(LoopExt4(os.path.join(self.tmp, "writer-fs"), 256))

    def writer_dir(self):
        return self.writer_fs.mountpoint

    def acceptor_wal_dir(self):
        return os.path.join(self.acceptor_fs.mountpoint, "wal")

    def test_power_cut_of_writer_acceptor_or_both_loses_nothing_acknowledged(self):
        seed = int(os.environ.get("SIGNALDB_SEED", random.randrange(1 << 30)))
        print("\npower-cut soak: seed %d (SIGNALDB_SEED replays it)" % seed)
        rng = random.Random(seed)
        load = Load(self.acceptor, rng.randrange(1 << 30))
        load.start()
        victims = {"writer": 0, "acceptor": 0, "both": 0}
        dead_disk_exits = []
        started = time.monotonic()
        try:
            for cycle in range(CUTS):
                time.sleep(rng.uniform(0.3, 1.5))
                self.assert_alive("writer", "acceptor")
                victim, down = pick_victim(cycle, rng, victims)
                for s in down:
                    getattr(self, s + "_fs").cut()
                if victim != "both" and (cycle < 2 or rng.random() < 0.3):
                    # The disk died but the process lives on it (every write fails with EIO):
                    # the next append's flush fails, the WAL fails, and the service must exit
                    # with status 1 after draining its listeners, not crash (a signal) or hang.
                    # Under load both always append (the writer takes the acceptor's forwards).
                    process = getattr(self, victim)
                    t0 = time.monotonic()
                    try:
                        code = process.proc.wait(timeout=self.dead_disk_exit_bound)
                    except subprocess.TimeoutExpired:
                        self.fail("%s did not exit within %d s of its disk dying:\n%s"
                                  % (victim, self.dead_disk_exit_bound, process.read_log()))
                    self.assertEqual(code, 1, "%s on a dead disk ended with %s, not 1:\n%s" % (victim, code, process.read_log()))
                    dead_disk_exits.append(time.monotonic() - t0)
                else:
                    # The power goes at once, or after up to a second on the dead disk.
                    time.sleep(rng.choice([0, rng.uniform(0, 1)]))
                for s in down:
                    getattr(self, s).kill()
                for s in down:
                    getattr(self, s + "_fs").remount()
                for s in down:
                    self.restart(s)
        finally:
            load.finish()
        self.assertGreater(len(load.acked_spans), 50 * min(CUTS, 3))
        self.assert_load_stored_once(load, min_logs=50 * min(CUTS, 3))
        self.assert_clean_logs()
        print("\nsoak: power cuts seed %d: %d cuts %s in %.0f s, %d spans and %d log records acknowledged, each stored once, "
              "none from nowhere; %d left on a dead disk exited 1 after %.1f-%.1f s; %s"
              % (seed, CUTS, victims, time.monotonic() - started, len(load.acked_spans), len(load.acked_logs),
                 len(dead_disk_exits), min(dead_disk_exits), max(dead_disk_exits), self.recovery_summary()))


class Prober:
    """Posts 20-span requests of ~80 KB in a loop and records each status, Retry-After and
    the span ids of the acknowledged ones: the raw client that sees the 503s."""

    def __init__(self, acceptor, attr_bytes=4000, spans=20):
        self.acceptor = acceptor
        self.attr_bytes, self.spans = attr_bytes, spans
        self.acked_spans, self.sent_spans = set(), set()
        self.acked_logs, self.sent_logs = set(), set()   # spans only; the shape assert_load_stored_once reads
        self.statuses = {}
        self.retry_after = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = None

    def post_once(self):
        req = span_request(self.spans, attr_bytes=self.attr_bytes)
        ids = {s.span_id for s in spans_of(req)}
        with self.lock:
            self.sent_spans |= ids
        try:
            status, headers, _ = post(self.acceptor.http + "/v1/traces", req.SerializeToString())
        except OSError:
            status, headers = "error", {}
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.acked_spans |= ids
            elif status == 503:
                self.retry_after.add(headers.get("Retry-After"))
        return status

    def loop(self):
        while not self.stop.is_set():
            if self.post_once() != 200:
                time.sleep(0.05)

    def start(self):
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()
        return self

    def finish(self):
        self.stop.set()
        self.thread.join()

    def wait_for_status(self, status, timeout, more_than=0):
        """True once more than `more_than` answers had `status`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if self.statuses.get(status, 0) > more_than:
                    return True
            time.sleep(0.05)
        return False


class TestWriterOutage(SoakCase):
    """The writer is away for OUTAGE_SECONDS (minutes in the soak) under load: the acceptor's
    backlog grows to ACCEPTOR_WAL_MAX_BYTES, then it answers 503 with Retry-After; once the
    writer is back the backlog drains and everything acknowledged is stored once."""
    acceptor_env = {"ACCEPTOR_WAL_SEGMENT_BYTES": "1MiB", "ACCEPTOR_WAL_MAX_BYTES": "4MiB"}

    def test_writer_outage_fills_the_backlog_then_503_then_drains(self):
        load = Load(self.acceptor, 7)
        prober = Prober(self.acceptor)
        self.writer.kill()
        outage_started = time.monotonic()
        load.start()
        prober.start()
        try:
            self.assertTrue(prober.wait_for_status(503, 60), "the backlog bound was never reached: %s" % prober.statuses)
            bound_after = time.monotonic() - outage_started
            self.assertGreater(self.acceptor.metric_sum("signaldb_acceptor_backpressure_total", reason="backlog_full"), 0,
                               "the 503s were not the backlog bound")
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
            self.assertIsNone(self.acceptor.proc.poll(), "the acceptor stayed up through the outage")
            backlog = self.acceptor.metric_sum("signalwal_live_bytes")
            outage = time.monotonic() - outage_started
            self.restart("writer")
            drain_started = time.monotonic()
            time.sleep(1)
        finally:
            prober.finish()
            load.finish()
        self.assertTrue(prober.retry_after and all(r and int(r) >= 1 for r in prober.retry_after), prober.retry_after)
        load.acked_spans |= prober.acked_spans
        load.sent_spans |= prober.sent_spans
        self.assert_load_stored_once(load, min_logs=20)
        drained = time.monotonic() - drain_started
        deadline = time.time() + 60
        while time.time() < deadline and self.acceptor.metric_sum("signaldb_acceptor_forward_lag_records") > 0:
            time.sleep(0.2)
        self.assertEqual(self.acceptor.metric_sum("signaldb_acceptor_forward_lag_records"), 0, "the backlog drained")
        print("\nsoak: writer outage %.0f s: bound reached after %.1f s, %s, Retry-After %s, backlog %.1f MiB at the end of the "
              "outage, drained and stored in %.1f s; %d spans acknowledged, each stored once"
              % (outage, bound_after, prober.statuses, sorted(prober.retry_after), backlog / 2**20, drained, len(load.acked_spans)))


@unittest.skipIf(MOUNT_PROBLEM, "a read-only store needs chattr on a loop-mounted ext4: %s" % MOUNT_PROBLEM)
class TestStoreReadOnly(SoakCase):
    """The store's files turn read-only under load (`chattr +i` on the database and its -wal, on
    a loop-mounted ext4: writes through the open descriptors fail with EPERM, as on a volume
    gone read-only), then writable again: commits fail, the writer reports not ready and keeps
    the data in its WAL; afterwards every acknowledged span is stored once."""

    def prepare(self):
        self.store_fs = self.mounted(LoopExt4(os.path.join(self.tmp, "writer", "store"), 256))

    def set_immutable(self, on):
        for name in ("signaldb.sqlite", "signaldb.sqlite-wal"):
            path = os.path.join(self.store_fs.mountpoint, name)
            if os.path.exists(path):
                run("chattr", "+i" if on else "-i", path)

    def test_read_only_store_delays_and_loses_nothing(self):
        load = Load(self.acceptor, 11)
        load.start()
        try:
            time.sleep(1.5)
            self.set_immutable(True)
            deadline = time.time() + 60
            while time.time() < deadline and self.writer.metric_sum("signaldb_writer_store_commit_failures_total") == 0:
                time.sleep(0.2)
            failures = self.writer.metric_sum("signaldb_writer_store_commit_failures_total")
            self.assertGreater(failures, 0, self.writer.read_log())
            time.sleep(2)
            ready_while_ro = readyz_status(self.writer)
            self.assertIsNone(self.writer.proc.poll(), "the writer stayed up")
            self.set_immutable(False)
            time.sleep(1.5)
        finally:
            self.set_immutable(False)
            load.finish()
        self.assertEqual(ready_while_ro, 503, "/readyz must say not ready while the store fails")
        self.assert_load_stored_once(load, min_logs=20)
        self.assertTrue(self.writer.wait_for(lambda w: w.is_ready(), timeout=60), "ready again once the store is writable")
        print("\nsoak: read-only store: %d commit failures, not ready meanwhile, %d spans acknowledged, each stored once"
              % (failures, len(load.acked_spans)))


@unittest.skipIf(MOUNT_PROBLEM, "a full disk needs a small tmpfs: %s" % MOUNT_PROBLEM)
class TestAcceptorWALDiskFull(SoakCase):
    """The acceptor's WAL on an 8 MiB tmpfs, the writer away, the backlog bound far above the
    disk: appends meet a full disk. The acceptor answers 503 (HTTP) and UNAVAILABLE (gRPC) with
    a retry delay, stays up, and resumes when the filesystem grows; nothing is lost."""
    acceptor_env = {"ACCEPTOR_WAL_SEGMENT_BYTES": "1MiB", "ACCEPTOR_WAL_MAX_BYTES": "1GiB"}

    def prepare(self):
        self.wal_fs = self.mounted(Tmpfs(os.path.join(self.tmp, "acceptor-wal"), "8m"))

    def test_full_wal_disk_answers_503_and_resumes_when_space_returns(self):
        self.writer.kill()
        prober = Prober(self.acceptor)
        acked, sent, rounds = set(), set(), []
        for round_ in range(DISK_FULL_ROUNDS):
            # Each round the filesystem shrinks back to 8 MiB above what the WAL holds by now
            # (the writer is away, so it only grows), and the prober fills it again.
            fs = os.statvfs(self.wal_fs.mountpoint)
            used_mib = ((fs.f_blocks - fs.f_bfree) * fs.f_frsize + (1 << 20) - 1) >> 20
            self.wal_fs.remount("size=%dm" % (used_mib + 8))
            refused_before = prober.statuses.get(503, 0)
            prober.stop.clear()
            prober.start()
            try:
                self.assertTrue(prober.wait_for_status(503, 60, more_than=refused_before),
                                "never refused: %s\n%s" % (prober.statuses, self.acceptor.read_log()))
                self.assertTrue(any(r and int(r) >= 1 for r in prober.retry_after), prober.retry_after)
                self.assertEqual(self.acceptor.metric_sum("signalwal_failed"), 0, "a full disk is not a failed WAL")
                with grpc.insecure_channel(self.acceptor.grpc_target) as channel:
                    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
                    with self.assertRaises(grpc.RpcError) as refused:
                        stub.Export(span_request(20, attr_bytes=4000), timeout=10)
                    self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE, refused.exception.details())
                    self.assertIn("grpc-status-details-bin", dict(refused.exception.trailing_metadata() or ()),
                                  "UNAVAILABLE carries RetryInfo")
                self.assertIsNone(self.acceptor.proc.poll(), "the acceptor stayed up on a full disk")
            finally:
                prober.finish()
            out_of_space = self.acceptor.metric_sum("signaldb_acceptor_backpressure_total", reason="out_of_space")
            self.assertGreater(out_of_space, 0)
            # Space returns: the same acceptor takes requests again without a restart.
            self.wal_fs.remount("size=%dm" % (used_mib + 256))
            resumed = time.monotonic()
            deadline = time.time() + 60
            while time.time() < deadline and prober.post_once() != 200:
                time.sleep(0.2)
            self.assertEqual(prober.post_once(), 200, "did not resume after space returned")
            rounds.append(time.monotonic() - resumed)
        self.restart("writer")
        self.assert_load_stored_once(prober)
        self.assert_clean_logs()
        print("\nsoak: acceptor WAL disk full: %d rounds, %s, Retry-After %s, resumed %.2f s max after space returned; "
              "%d spans acknowledged, every one stored" % (DISK_FULL_ROUNDS, prober.statuses, sorted(prober.retry_after),
                                                           max(rounds), len(prober.acked_spans)))


@unittest.skipIf(MOUNT_PROBLEM, "a full disk needs a small tmpfs: %s" % MOUNT_PROBLEM)
class TestWriterWALDiskFull(SoakCase):
    """The writer's WAL on an 8 MiB tmpfs and its store locked by another connection, the WAL's
    bound far above the disk: the writer's appends meet a full disk. It refuses forwards
    (UNAVAILABLE), stays up, the acceptor keeps the data, and once the space and the store
    return everything acknowledged is stored once."""
    writer_env = {"WRITER_WAL_SEGMENT_BYTES": "1MiB", "WRITER_MAX_RECORD_BYTES": "600KiB",
                  "WRITER_WAL_MAX_BYTES": "1GiB", "WRITER_STORE_BUSY_TIMEOUT_SECONDS": "0.2",
                  "WRITER_STORE_BATCH_INTERVAL_SECONDS": "0.05"}
    acceptor_env = {"ACCEPTOR_WAL_MAX_BYTES": "64MiB"}

    def prepare(self):
        self.wal_fs = self.mounted(Tmpfs(os.path.join(self.tmp, "writer", "wal"), "8m"))

    def test_full_writer_wal_disk_refuses_forwards_and_loses_nothing(self):
        prober = Prober(self.acceptor)
        db = sqlite3.connect(self.writer.db_path, timeout=10, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            prober.start()
            deadline = time.time() + 90
            while time.time() < deadline and self.writer.metric_sum("signalwal_out_of_space_errors_total") == 0:
                time.sleep(0.2)
            full = self.writer.metric_sum("signalwal_out_of_space_errors_total")
            self.assertGreater(full, 0, self.writer.read_log())
            acked_when_full = prober.statuses.get(200, 0)
            time.sleep(1.5)
            self.assertGreater(prober.statuses.get(200, 0), acked_when_full,
                               "the acceptor kept acknowledging (into its own WAL) while the writer refused")
            self.assertIsNone(self.writer.proc.poll(), "the writer stayed up on a full disk")
            self.assertEqual(self.writer.metric_sum("signalwal_failed"), 0, "a full disk is not a failed WAL")
            self.assertGreater(self.acceptor.metric_sum("signaldb_acceptor_forward_failures_total"), 0)
            self.wal_fs.remount("size=256m")
        finally:
            db.execute("ROLLBACK")
            db.close()
            time.sleep(1)
            prober.finish()
        self.assert_load_stored_once(prober)
        self.assert_clean_logs()
        print("\nsoak: writer WAL disk full: %d out-of-space refusals, acceptor %s, %d spans acknowledged, every one stored"
              % (full, prober.statuses, len(prober.acked_spans)))


class TestSigtermSoak(SoakCase):
    """SIGTERM of the writer, the acceptor or both under load, repeated: each exits 0 within its
    bound, and nothing acknowledged is lost."""
    acceptor_env = {"ACCEPTOR_SHUTDOWN_TIMEOUT_SECONDS": "10"}
    writer_env = {"WRITER_STORE_BATCH_INTERVAL_SECONDS": "0.05", "WRITER_SHUTDOWN_TIMEOUT_SECONDS": "10"}
    bound = 10 + 10 + 5  # the shutdown timeout, the cancellation bound, and slack for a loaded CI

    def test_sigterm_under_load_repeated_loses_nothing_and_exits_in_bound(self):
        rng = random.Random(int(os.environ.get("SIGNALDB_SEED", "17")))
        load = Load(self.acceptor, rng.randrange(1 << 30))
        load.start()
        exits = []
        try:
            for cycle in range(SIGTERMS):
                time.sleep(rng.uniform(0.5, 1.5))
                victim = ["writer", "acceptor", "both"][cycle % 3]
                down = [s for s in ("acceptor", "writer") if victim in (s, "both")]
                for s in down:
                    started = time.monotonic()
                    code = getattr(self, s).terminate(timeout=60)
                    exits.append(time.monotonic() - started)
                    self.assertEqual(code, 0, getattr(self, s).read_log())
                    self.assertLess(exits[-1], self.bound, "%s took %.1f s to stop" % (s, exits[-1]))
                for s in reversed(down):
                    self.restart(s)
        finally:
            load.finish()
        self.assert_load_stored_once(load, min_logs=50)
        print("\nsoak: SIGTERM under load: %d cycles, exit p50 %.2f s max %.2f s (bound %d s), %d spans acknowledged, "
              "each stored once; %s" % (SIGTERMS, statistics.median(exits), max(exits), self.bound, len(load.acked_spans),
                                         self.recovery_summary()))


if __name__ == "__main__":
    unittest.main()
