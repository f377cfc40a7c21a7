"""The WAL persistence guide (docs/operations/wal-persistence.md), run against a live pipeline.

Every fenced ```bash / ```sh block preceded by the line `<!-- doctest -->` (or
`<!-- doctest: FLAGS -->`) is executed, in document order, by `bash -euo pipefail` with a
timeout, against a real signaldb-writer and signaldb-acceptor started by harness.py on free
ports in a scratch directory. A block passes when it exits 0 and, if it is followed by a
```text block marked `<!-- doctest: output -->`, when that output appears (rules below).

Mapping the guide to the live pipeline: one mechanism, plain text substitution of the guide's
paths and addresses, applied to the block and to its expected output, in a single pass:

    /data/wal           the writer's WAL; with the flag `acceptor`, the acceptor's WAL
    /data/store         the writer's store directory (signaldb.sqlite inside)
    /var/log/signaldb   the scratch log directory (SIGNALDB_LOG_FILE of both services is
                        <it>/writer.log and <it>/acceptor.log)
    /backups, /restore  scratch directories
    /tmp/signaldb-      <scratch>/tmp-signaldb-  (the guide's throw-away paths)
    127.0.0.1:9464      the acceptor's admin address;  127.0.0.1:9465 the writer's
    127.0.0.1:4318      the acceptor's OTLP/HTTP address
    tail -f             tail -n 1000 (a bounded read of the same file)

Flags: `acceptor` (as above), `root` (needs root: setpriv, chown; skipped, and counted as
skipped, when not root). Blocks run with the build directory first on PATH (the image has the
binaries on PATH) and SPANS=2000 (the guide's load loop defaults to 100,000). Before each block
the test waits until the acceptor has forwarded and the writer stored everything, so every
block sees an idle pipeline.

Expected output: each line of the ```text block, in order, must match a later line of the
block's output (stdout and stderr together). Lines are compared after normalising both sides:
UUIDs, hex ids and month names are replaced by placeholders, every number by 0, runs of blanks by
one space. So a count, a size, a date or a PID may differ from the guide's run, the words and the
shape may not. `...` in an expected line matches anything; a line of only `...` is skipped.

The test also checks that every marked block ran and that at least MIN_MARKED blocks are marked
(deleting the markers fails it).

Run: cd Tests/services && ../../.venv-services/bin/python -m unittest -v test_docs"""
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import BUILD, ROOT, Acceptor, Writer

GUIDE = os.path.join(ROOT, "docs", "operations", "wal-persistence.md")
MIN_MARKED = 20
BLOCK_TIMEOUT = 30
IS_ROOT = os.geteuid() == 0

MARKER = re.compile(r"^<!--\s*doctest(?::\s*([\w\s]*?))?\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


def parse_guide(text):
    """[(line number, flags, code, expected output or None)] for every marked runnable block."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        flags = set((m.group(1) or "").split())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = FENCE.match(lines[j]) if j < len(lines) else None
        if not fence:
            raise AssertionError("line %d: a doctest marker must be followed by a fenced block" % (i + 1))
        end = j + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        body = "\n".join(lines[j + 1:end])
        if "output" in flags:
            if fence.group(1) != "text":
                raise AssertionError("line %d: an output marker must precede a ```text block" % (i + 1))
            if not blocks or blocks[-1][3] is not None:
                raise AssertionError("line %d: output block without a runnable block before it" % (i + 1))
            blocks[-1] = blocks[-1][:3] + (body,)
        else:
            if fence.group(1) not in ("bash", "sh"):
                raise AssertionError("line %d: only ```bash and ```sh blocks can be marked runnable" % (i + 1))
            blocks.append((i + 1, flags - {"output"}, body, None))
        i = end + 1
    return blocks


UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8,}\b")
MONTH = re.compile(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\b")
NUMBER = re.compile(r"\d+(\.\d+)?")


def normalise(line):
    line = UUID.sub("<uuid>", line)
    line = HEX.sub("<hex>", line)
    line = MONTH.sub("<mon>", line)
    line = NUMBER.sub("0", line)
    return " ".join(line.split())


def expected_matcher(line):
    if "..." not in line:
        want = normalise(line)
        return lambda got: got == want
    parts = [re.escape(normalise(p)) for p in line.split("...")]
    pattern = re.compile(".*".join(parts))
    return lambda got: pattern.search(got) is not None


def missing_output(expected, actual):
    """The first expected line that does not appear (in order) in `actual`, or None."""
    got = [normalise(l) for l in actual.splitlines()]
    at = 0
    for line in expected.splitlines():
        if not line.strip() or line.strip() == "...":
            continue
        match = expected_matcher(line)
        while at < len(got) and not match(got[at]):
            at += 1
        if at == len(got):
            return line
        at += 1
    return None


class TestWALPersistenceGuide(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(GUIDE) as f:
            cls.blocks = parse_guide(f.read())
        cls.tmp = tempfile.mkdtemp(prefix="docs-test-")
        os.chmod(cls.tmp, 0o755)  # the permission demo runs as uid 1000 below it
        cls.logs = os.path.join(cls.tmp, "log")
        for d in ("log", "backups", "work"):
            os.makedirs(os.path.join(cls.tmp, d))
        cls.writer = Writer(os.path.join(cls.tmp, "writer"),
                            SIGNALDB_LOG_FILE=os.path.join(cls.logs, "writer.log")).start()
        cls.acceptor = Acceptor(os.path.join(cls.tmp, "acceptor-wal"), cls.writer.port,
                                SIGNALDB_LOG_FILE=os.path.join(cls.logs, "acceptor.log")).start()

    @classmethod
    def tearDownClass(cls):
        cls.acceptor.kill()
        cls.writer.kill()
        if os.environ.get("SIGNALDB_KEEP_TEST_DIRS"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def mapping(self, flags):
        wal = self.acceptor.wal_dir if "acceptor" in flags else self.writer.wal_dir
        return {
            "/data/wal": wal,
            "/data/store": os.path.dirname(self.writer.db_path),
            "/var/log/signaldb": self.logs,
            "/backups": os.path.join(self.tmp, "backups"),
            "/restore": os.path.join(self.tmp, "restore"),
            "/tmp/signaldb-": os.path.join(self.tmp, "tmp-signaldb-"),
            "127.0.0.1:9464": "127.0.0.1:%d" % self.acceptor.admin_port,
            "127.0.0.1:9465": "127.0.0.1:%d" % self.writer.admin_port,
            "127.0.0.1:4318": "127.0.0.1:%d" % self.acceptor.http_port,
            "tail -f": "tail -n 1000",
        }

    @staticmethod
    def apply(mapping, text):
        keys = sorted(mapping, key=len, reverse=True)
        pattern = re.compile("|".join(r"(?<![\w.-])" + re.escape(k) if k.startswith("/") else re.escape(k) for k in keys))
        return pattern.sub(lambda m: mapping[m.group(0)], text)

    def quiesce(self, timeout=20):
        """Waits until everything accepted is forwarded and stored."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if (self.acceptor.metric_sum("signaldb_acceptor_forward_lag_records") == 0
                        and self.writer.metric_sum("signaldb_writer_store_lag_records") == 0):
                    return
            except OSError:
                pass
            time.sleep(0.1)

    def run_block(self, flags, code):
        env = dict(os.environ)
        env["PATH"] = BUILD + os.pathsep + env.get("PATH", "")
        env["SPANS"] = "2000"
        for key in list(env):  # the blocks configure nothing through the services' settings
            if key.startswith(("ACCEPTOR_", "WRITER_", "SIGNALDB_")) and key != "SIGNALDB_BUILD":
                del env[key]
        return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=os.path.join(self.tmp, "work"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT)

    def test_guide_marks_enough_blocks(self):
        self.assertGreaterEqual(len(self.blocks), MIN_MARKED,
                                "the guide marks only %d runnable blocks; were markers deleted?" % len(self.blocks))
        with open(GUIDE) as f:
            headings = [l.strip() for l in f if l.startswith("#")]
        self.assertIn("## Troubleshooting", headings, "the alerts' runbook_url points at #troubleshooting")

    def test_every_marked_block_runs_and_prints_what_the_guide_says(self):
        ran, skipped = 0, []
        for line, flags, code, expected in self.blocks:
            with self.subTest(block="line %d" % line):
                if "root" in flags and not IS_ROOT:
                    skipped.append(line)
                    continue
                mapping = self.mapping(flags)
                self.quiesce()
                started = time.time()
                try:
                    out = self.run_block(flags, self.apply(mapping, code))
                except subprocess.TimeoutExpired as e:
                    ran += 1
                    self.fail("block at line %d ran past %d s; output:\n%s" % (line, BLOCK_TIMEOUT, e.output))
                ran += 1
                if os.environ.get("SIGNALDB_DOCTEST_VERBOSE"):
                    print("--- line %d (%.1f s, status %d)\n%s" % (line, time.time() - started, out.returncode, out.stdout))
                self.assertEqual(out.returncode, 0, "block at line %d exited %d; output:\n%s" % (line, out.returncode, out.stdout[-4000:]))
                if expected is not None:
                    lost = missing_output(self.apply(mapping, expected), out.stdout)
                    self.assertIsNone(lost, "block at line %d: the guide's output line\n  %s\nis not in the output:\n%s"
                                      % (line, lost, out.stdout[-4000:]))
        self.assertEqual(ran + len(skipped), len(self.blocks))
        if skipped:
            print("skipped (need root): blocks at lines %s" % skipped)


class TestOutputMatching(unittest.TestCase):
    """The comparison rules the guide test relies on."""

    def test_numbers_ids_and_months_may_differ_words_may_not(self):
        self.assertIsNone(missing_output("-rw------- 1 1000 1000 40 Dec  1 23:03 .checkpoint",
                                         "x\n-rw------- 1 0 0 40 Jan 21 01:13 .checkpoint\n"))
        self.assertIsNotNone(missing_output("-rw------- 1 1000 1000 40 Dec  1 23:03 .checkpoint",
                                            "-rw-r--r-- 1 0 0 40 Jan 21 01:13 .checkpoint\n"))
        self.assertIsNone(missing_output("id 4d3b334e-542b-4df6-a602-eee6fbbc85d9 ok",
                                         "id 93f7d471-5fba-4e98-b713-6ac303000706 ok"))

    def test_order_and_ellipsis(self):
        self.assertIsNone(missing_output("a 1\n...\n... c", "a 2\nb\nxx c\n"))
        self.assertIsNotNone(missing_output("c\na", "a\nc\n"))


if __name__ == "__main__":
    unittest.main()
