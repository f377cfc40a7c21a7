#!/usr/bin/env python3
"""Writes the ingest fuzzer's seed corpus (Fuzz/ingest-corpus): each file is a selector byte
(see Sources/SignalDBIngestFuzzing/IngestFuzzInput.swift) and then an input: envelopes from a
WAL written by the real Python SDK's exports, gzip and deflate bodies, OTLP protobuf and
OTLP/JSON requests for every signal. Usage: make_ingest_seeds.py WAL_DIR OUT_DIR
(WAL_DIR: an acceptor WAL that the SDK clients of Tests/services wrote)."""
import base64
import gzip
import json
import os
import subprocess
import sys
import zlib

wal, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
dump = subprocess.run([".build/debug/signalwal", "dump", wal, "--format", "jsonl"], capture_output=True, text=True, check=True)
seeds = []
for line in dump.stdout.splitlines():
    record = base64.b64decode(json.loads(line)["payload"])
    seeds.append(bytes([0]) + record)
    signal = record[5]
    tl, dl = int.from_bytes(record[16:18], "little"), int.from_bytes(record[18:20], "little")
    payload = record[24 + tl + dl:]
    selector = 2 + ((signal - 1) << 3)  # protobuf
    seeds.append(bytes([selector]) + payload)
    seeds.append(bytes([1]) + gzip.compress(payload))
    seeds.append(bytes([1]) + zlib.compress(payload))
docs = {
    0: {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "a", "kind": "SPAN_KIND_CLIENT", "startTimeUnixNano": "1", "links": [{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"}]}]}]}]},
    1: {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": {"dataPoints": [{"asInt": "7", "exemplars": [
        {"asDouble": 1.5, "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}}]}]}]},
    2: {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": "SEVERITY_NUMBER_WARN", "body": {"stringValue": "hi"},
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174"}]}]}]},
}
for index, doc in docs.items():
    seeds.append(bytes([2 + 4 + (index << 3)]) + json.dumps(doc).encode())
for i, seed in enumerate(seeds):
    with open(os.path.join(out, "seed-%03d" % i), "wb") as f:
        f.write(seed)
print(len(seeds), "seeds")
