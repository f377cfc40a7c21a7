"""Bad-input generators for test_badinput: random OTLP requests (protobuf and OTLP/JSON) built
with the opentelemetry-proto classes, mutations of them, hand-made wire-level garbage, and a raw
HTTP/1.1 client over sockets (so Content-Length, chunking, headers and pacing are ours to break).

Every generator takes a random.Random and returns a Case: the bytes to send and what the answer
may be. `expect` is one of
  "ok"   a valid request: must be 200;
  "4xx"  guaranteed invalid (undecodable, all items invalid, too large, wrong type...): must be
         4xx, never 200 or 5xx;
  "any"  a random mutation, which may still be a valid request: 200 or 4xx, never 5xx.
`may_close` marks the cases where the server may legitimately close the connection without an
answer (wrong Content-Length, huge declared sizes, oversize headers, unknown methods that the
HTTP parser refuses)."""
import base64
import gzip
import json
import os
import socket
import threading
import time
import zlib

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
REQUEST_TYPES = {"traces": trace_service_pb2.ExportTraceServiceRequest,
                 "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
                 "logs": logs_service_pb2.ExportLogsServiceRequest}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Marks a string field whose bytes are later overwritten with invalid UTF-8 (same length).
UTF8_SLOT = "UTF8SLOT-0123456789"
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                b"\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xc1\xbf"]


class Case:
    def __init__(self, kind, body=b"", expect="any", signal="traces", content_type=PROTOBUF,
                 method="POST", path=None, headers=None, raw=None, may_close=False, encoding=None,
                 plain=None):
        self.kind = kind
        self.body = body
        self.expect = expect
        self.signal = signal
        self.content_type = content_type
        self.method = method
        self.path = path if path is not None else PATHS[signal]
        self.headers = dict(headers or {})
        self.raw = raw              # the whole request bytes, when the case writes them itself
        self.may_close = may_close
        self.encoding = encoding    # "protobuf"/"json" of the (decoded) body, for counting items
        self.plain = plain          # the body the server decodes after inflating, when known

    def request_bytes(self, tenant):
        """The HTTP/1.1 request, with X-Tenant-ID `tenant` so a WAL record names its request."""
        if self.raw is not None:
            return self.raw.replace(b"@TENANT@", tenant.encode())
        lines = ["%s %s HTTP/1.1" % (self.method, self.path), "Host: 127.0.0.1", "Connection: close",
                 "X-Tenant-ID: %s" % tenant]
        if self.content_type is not None:
            lines.append("Content-Type: %s" % self.content_type)
        if "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers:
            lines.append("Content-Length: %d" % len(self.body))
        for k, v in self.headers.items():
            lines.append("%s: %s" % (k, v))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


# ---------------------------------------------------------------- protobuf wire helpers

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, payload):
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def random_unknown_field(rng):
    """One well-formed field with a number no OTLP message uses (1000+)."""
    number = rng.randrange(1000, 1 << 29)
    wt = rng.choice([0, 1, 2, 5])
    if wt == 0:
        return varint(number << 3) + varint(rng.getrandbits(64))
    if wt == 1:
        return varint(number << 3 | 1) + os.urandom(8)
    if wt == 5:
        return varint(number << 3 | 5) + os.urandom(4)
    return field(number, bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40))))


# ---------------------------------------------------------------- valid requests

def rand_text(rng, n=None):
    n = rng.randrange(0, 24) if n is None else n
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._-/ éλ中😀\u0000\t\""
    return "".join(rng.choice(alphabet) for _ in range(n))


def rand_id(rng, n):
    b = bytes(rng.getrandbits(8) for _ in range(n))
    return b if any(b) else b"\x01" + b[1:]


def fill_any(rng, v, depth=0):
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        v.string_value = rand_text(rng)
    elif kind == 1:
        v.bool_value = rng.random() < 0.5
    elif kind == 2:
        v.int_value = rng.randrange(-(1 << 63), 1 << 63)
    elif kind == 3:
        v.double_value = rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan"), rng.random()])
    elif kind == 4:
        v.bytes_value = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 16)))
    elif kind == 5:
        for _ in range(rng.randrange(0, 3)):
            fill_any(rng, v.array_value.values.add(), depth + 1)
        v.array_value.SetInParent()
    else:
        for _ in range(rng.randrange(0, 3)):
            kv = v.kvlist_value.values.add()
            kv.key = rand_text(rng, 4)
            fill_any(rng, kv.value, depth + 1)
        v.kvlist_value.SetInParent()


def fill_attrs(rng, attrs, n=None):
    for _ in range(rng.randrange(0, 4) if n is None else n):
        kv = attrs.add()
        kv.key = rand_text(rng, rng.randrange(1, 10))
        fill_any(rng, kv.value)


def valid_request(rng, signal, items=None, slot=False):
    """A random valid export request with `items` items (spans, data points, log records),
    at least one unless 0 is asked for. With `slot`, one string field holds UTF8_SLOT."""
    items = rng.randrange(1, 6) if items is None else items
    req = REQUEST_TYPES[signal]()
    strings = []
    if signal == "traces":
        rs = req.resource_spans.add()
        fill_attrs(rng, rs.resource.attributes)
        ss = rs.scope_spans.add()
        ss.scope.name = rand_text(rng)
        for i in range(items):
            sp = ss.spans.add()
            sp.trace_id, sp.span_id = rand_id(rng, 16), rand_id(rng, 8)
            if rng.random() < 0.3:
                sp.parent_span_id = rand_id(rng, 8)
            sp.name = rand_text(rng)
            sp.kind = rng.randrange(0, 6)
            sp.start_time_unix_nano = rng.getrandbits(63)
            sp.end_time_unix_nano = rng.getrandbits(63)
            fill_attrs(rng, sp.attributes)
            if rng.random() < 0.3:
                ev = sp.events.add()
                ev.name = rand_text(rng)
                fill_attrs(rng, ev.attributes, 1)
            if rng.random() < 0.2:
                ln = sp.links.add()
                ln.trace_id, ln.span_id = rand_id(rng, 16), rand_id(rng, 8)
            strings.append(sp)
        if slot:
            target = rng.choice(["name", "scope", "attr"]) if strings else "scope"
            if target == "name":
                rng.choice(strings).name = UTF8_SLOT
            elif target == "scope":
                ss.scope.name = UTF8_SLOT
            else:
                kv = (rng.choice(strings).attributes if strings else rs.resource.attributes).add()
                kv.key, kv.value.string_value = rng.choice([("k", UTF8_SLOT), (UTF8_SLOT, "v")])
    elif signal == "metrics":
        rm = req.resource_metrics.add()
        fill_attrs(rng, rm.resource.attributes)
        sm = rm.scope_metrics.add()
        left = items
        while left > 0:
            m = sm.metrics.add()
            m.name = rand_text(rng, rng.randrange(1, 12))
            m.unit = rand_text(rng, 2)
            n = rng.randrange(1, left + 1)
            left -= n
            kind = rng.choice(["gauge", "sum", "histogram", "exponential_histogram", "summary"])
            data = getattr(m, kind)
            for _ in range(n):
                p = data.data_points.add()
                p.time_unix_nano = rng.getrandbits(63)
                fill_attrs(rng, p.attributes, rng.randrange(0, 2))
                if kind in ("gauge", "sum"):
                    if rng.random() < 0.5:
                        p.as_int = rng.randrange(-(1 << 63), 1 << 63)
                    else:
                        p.as_double = rng.random()
                elif kind == "histogram":
                    p.count, p.sum = 3, 1.5
                    p.bucket_counts.extend([1, 2])
                    p.explicit_bounds.append(1.0)
                elif kind == "exponential_histogram":
                    p.count, p.scale = 2, rng.randrange(-10, 20)
                    p.positive.bucket_counts.extend([1, 1])
                else:
                    p.count, p.sum = 1, 2.0
                    q = p.quantile_values.add()
                    q.quantile, q.value = 0.5, 1.0
                if kind != "summary" and rng.random() < 0.3:
                    e = p.exemplars.add()
                    e.trace_id, e.span_id, e.as_double = rand_id(rng, 16), rand_id(rng, 8), 1.0
            strings.append(m)
        if slot:
            rng.choice(strings).description = UTF8_SLOT
    else:
        rl = req.resource_logs.add()
        fill_attrs(rng, rl.resource.attributes)
        sl = rl.scope_logs.add()
        for _ in range(items):
            r = sl.log_records.add()
            r.time_unix_nano = rng.getrandbits(63)
            r.severity_number = rng.randrange(0, 25)
            r.severity_text = rand_text(rng, 4)
            fill_any(rng, r.body)
            fill_attrs(rng, r.attributes)
            if rng.random() < 0.5:
                r.trace_id, r.span_id = rand_id(rng, 16), rand_id(rng, 8)
            strings.append(r)
        if slot:
            if strings and rng.random() < 0.5:
                rng.choice(strings).body.string_value = UTF8_SLOT
            else:
                sl.scope.name = UTF8_SLOT
    return req


def count_items(signal, msg):
    """Spans, data points or log records: what the acceptor counts, valid or not."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind:
                    n += len(getattr(m, kind).data_points)
    return n


def count_items_json(signal, doc):
    def lst(d, *names):
        if not isinstance(d, dict):
            return []
        for n in names:
            v = d.get(n)
            if isinstance(v, list):
                return v
        return []
    if signal == "traces":
        return sum(len(lst(ss, "spans")) for rs in lst(doc, "resourceSpans", "resource_spans")
                   for ss in lst(rs, "scopeSpans", "scope_spans"))
    if signal == "logs":
        return sum(len(lst(sl, "logRecords", "log_records")) for rl in lst(doc, "resourceLogs", "resource_logs")
                   for sl in lst(rl, "scopeLogs", "scope_logs"))
    n = 0
    for rm in lst(doc, "resourceMetrics", "resource_metrics"):
        for sm in lst(rm, "scopeMetrics", "scope_metrics"):
            for m in lst(sm, "metrics"):
                for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary"):
                    if isinstance(m, dict) and isinstance(m.get(kind), dict):
                        n += len(lst(m[kind], "dataPoints", "data_points"))
    return n


def items_in(case):
    """How many items the server saw in `case`'s body, or None when Python cannot tell."""
    body = case.plain if case.plain is not None else case.body
    try:
        if case.encoding == "json":
            return count_items_json(case.signal, json.loads(body.decode("utf-8")))
        if case.encoding == "protobuf":
            return count_items(case.signal, REQUEST_TYPES[case.signal].FromString(body))
    except Exception:
        return None
    return None


def to_json(msg):
    """OTLP/JSON of a message: proto3 JSON with hex trace and span ids."""
    from google.protobuf import json_format
    doc = json_format.MessageToDict(msg)

    def fix(x):
        if isinstance(x, dict):
            for k, v in list(x.items()):
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    x[k] = base64.b64decode(v).hex()
                else:
                    fix(v)
        elif isinstance(x, list):
            for v in x:
                fix(v)
    fix(doc)
    return doc


# ---------------------------------------------------------------- mutations

def mutate_bytes(rng, b, rounds=None):
    b = bytearray(b)
    for _ in range(rng.randrange(1, 5) if rounds is None else rounds):
        op = rng.randrange(7)
        if op == 0 and b:                          # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:                        # replace a byte
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.getrandbits(8)])
        elif op == 2:                              # insert bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 8)))
        elif op == 3 and b:                        # delete a range
            i = rng.randrange(len(b))
            del b[i:i + rng.randrange(1, 16)]
        elif op == 4 and b:                        # truncate
            del b[rng.randrange(len(b)):]
        elif op == 5 and b:                        # duplicate a range
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randrange(1, 64))
            k = rng.randrange(len(b) + 1)
            b[k:k] = b[i:j]
        elif op == 6 and b:                        # overwrite with a big varint
            i = rng.randrange(len(b))
            b[i:i + 1] = varint(rng.getrandbits(rng.choice([7, 14, 32, 63])))
    return bytes(b)


def compress(rng, body, headers):
    """Maybe gzip or deflate (zlib or raw) a body; returns the bytes to send."""
    c = rng.random()
    if c < 0.7:
        return body
    if c < 0.85:
        headers["Content-Encoding"] = rng.choice(["gzip", "x-gzip", "GZIP"])
        return gzip.compress(body, compresslevel=rng.randrange(1, 10))
    headers["Content-Encoding"] = "deflate"
    if rng.random() < 0.5:
        return zlib.compress(body)
    co = zlib.compressobj(wbits=-15)
    return co.compress(body) + co.flush()


# ---------------------------------------------------------------- generators

def gen_valid(rng):
    signal = rng.choice(list(PATHS))
    msg = valid_request(rng, signal)
    headers = {}
    if rng.random() < 0.5:
        plain = msg.SerializeToString()
        return Case("valid protobuf", compress(rng, plain, headers), "ok", signal, headers=headers,
                    encoding="protobuf", plain=plain)
    plain = json.dumps(to_json(msg)).encode()
    return Case("valid json", compress(rng, plain, headers), "ok", signal, JSON, headers=headers,
                encoding="json", plain=plain)


def gen_proto_mutated(rng):
    signal = rng.choice(list(PATHS))
    plain = mutate_bytes(rng, valid_request(rng, signal).SerializeToString())
    headers = {}
    return Case("protobuf mutated", compress(rng, plain, headers), "any", signal, headers=headers,
                encoding="protobuf", plain=plain)


def gen_proto_truncated(rng):
    signal = rng.choice(list(PATHS))
    full = valid_request(rng, signal).SerializeToString()
    plain = full[:rng.randrange(len(full))]
    return Case("protobuf truncated", plain, "any", signal, encoding="protobuf")


def gen_proto_broken(rng):
    """Protobuf that no parser can accept: a field running past the end, wire types 6/7,
    field number 0, a varint of 11 bytes."""
    signal = rng.choice(list(PATHS))
    body = valid_request(rng, signal).SerializeToString() if rng.random() < 0.7 else b""
    how = rng.randrange(4)
    if how == 0:
        n = rng.randrange(1, 1 << 20)
        tail = varint(1 << 3 | 2) + varint(n + rng.randrange(1, 100)) + os.urandom(min(n, 64))
    elif how == 1:
        tail = varint(rng.randrange(1, 1 << 20) << 3 | rng.choice([6, 7])) + os.urandom(rng.randrange(0, 8))
    elif how == 2:
        tail = bytes([rng.randrange(0, 6)]) + os.urandom(rng.randrange(0, 8))  # field number 0
    else:
        tail = b"\xff" * rng.randrange(10, 20)
    at = rng.choice([len(body), 0])
    plain = body[:at] + tail + body[at:] if at == 0 else body + tail
    if at == 0 and how == 0:
        plain = tail          # a prefix that runs past the end only if nothing follows
    headers = {}
    return Case("protobuf broken", compress(rng, plain, headers), "4xx", signal, headers=headers,
                encoding="protobuf", plain=plain)


def gen_proto_bad_utf8(rng):
    signal = rng.choice(list(PATHS))
    plain = valid_request(rng, signal, slot=True).SerializeToString()
    slot = UTF8_SLOT.encode()
    assert slot in plain
    bad = rng.choice(INVALID_UTF8)
    filler = bytes(rng.choice(b"abc") for _ in range(len(slot) - len(bad)))
    pos = rng.randrange(len(filler) + 1)
    plain = plain.replace(slot, filler[:pos] + bad + filler[pos:], 1)
    return Case("protobuf invalid utf-8", plain, "4xx", signal, encoding="protobuf")


def deep_anyvalue(depth, array=False):
    """AnyValue nested `depth` times in kvlists (or arrays), serialized by hand. Each level is a
    prefix (the nested value is its message's last field), so it is built in linear time."""
    leaf = field(1, b"leaf")                                 # AnyValue.string_value
    size, prefixes = len(leaf), []
    for _ in range(depth):
        if array:      # AnyValue.array_value{values: v}
            inner = varint(1 << 3 | 2) + varint(size)
            outer = varint(5 << 3 | 2) + varint(size + len(inner))
            prefixes.append(outer + inner)
        else:          # AnyValue.kvlist_value{values: KeyValue{key: "k", value: v}}
            kv = field(1, b"k") + varint(2 << 3 | 2) + varint(size)
            values = varint(1 << 3 | 2) + varint(size + len(kv))
            outer = varint(6 << 3 | 2) + varint(size + len(kv) + len(values))
            prefixes.append(outer + values + kv)
        size += len(prefixes[-1])
    return b"".join(reversed(prefixes)) + leaf


def gen_proto_deep(rng):
    """A span attribute (or log body) nested in kvlists/arrays. Past the 64-message depth limit
    it must be refused; shallow ones are fine."""
    signal = rng.choice(["traces", "logs"])
    array = rng.random() < 0.4
    deep = rng.random() < 0.7
    depth = rng.choice([40, 100, 1000, 10000, 30000]) if deep else rng.randrange(1, 12)
    if array:
        depth *= 2 if deep else 1
    value = deep_anyvalue(depth, array)
    msg = valid_request(rng, signal, items=1)
    if signal == "traces":
        inner = msg.resource_spans[0].scope_spans[0].spans[0].SerializeToString() + field(9, field(1, b"deep") + field(2, value))
        plain = field(1, field(2, field(2, inner)))
    else:
        inner = msg.resource_logs[0].scope_logs[0].log_records[0].SerializeToString() + field(5, value)
        plain = field(1, field(2, field(2, inner)))
    expect = "4xx" if deep else "ok"
    return Case("protobuf deep %s" % ("array" if array else "kvlist"), plain, expect, signal, encoding="protobuf")


def gen_proto_unknown(rng):
    """Unknown fields (at the top level, or appended to the first resource): valid, ignored."""
    signal = rng.choice(list(PATHS))
    body = valid_request(rng, signal).SerializeToString()
    extra = b"".join(random_unknown_field(rng) for _ in range(rng.randrange(1, 6)))
    plain = body + extra
    return Case("protobuf unknown fields", plain, "ok", signal, encoding="protobuf")


def bad_id(rng, n):
    """An id that is not a valid n-byte non-zero id: wrong length or all zeros."""
    if rng.random() < 0.4:
        return b"\0" * n
    length = rng.choice([k for k in range(1, 40) if k != n])
    return bytes(rng.getrandbits(8) for _ in range(length))


def gen_proto_bad_ids(rng):
    """Every item carries an absurd id: all items invalid, so the request is."""
    signal = rng.choice(["traces", "logs", "metrics"])
    msg = valid_request(rng, signal)
    if signal == "traces":
        for ss in msg.resource_spans[0].scope_spans:
            for sp in ss.spans:
                which = rng.randrange(4)
                if which == 0:
                    sp.trace_id = bad_id(rng, 16)
                elif which == 1:
                    sp.span_id = bad_id(rng, 8)
                elif which == 2:
                    sp.parent_span_id = bad_id(rng, 8)
                    if not any(sp.parent_span_id):
                        sp.parent_span_id = b"\1\2\3"
                else:
                    ln = sp.links.add()
                    ln.trace_id, ln.span_id = bad_id(rng, 16), rand_id(rng, 8)
    elif signal == "logs":
        for r in msg.resource_logs[0].scope_logs[0].log_records:
            r.trace_id = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 8, 15, 17, 32])))
    else:
        for m in msg.resource_metrics[0].scope_metrics[0].metrics:
            m.name = ""                                 # unnamed metrics: every point invalid
    return Case("protobuf absurd ids", msg.SerializeToString(), "4xx", signal, encoding="protobuf")


def json_body(rng, signal, msg=None):
    return to_json(msg or valid_request(rng, signal))


def gen_json_truncated(rng):
    signal = rng.choice(list(PATHS))
    text = json.dumps(json_body(rng, signal)).encode()
    # Any proper non-empty prefix of an object leaves a brace open.
    return Case("json truncated", text[:rng.randrange(1, len(text))], "4xx", signal, JSON, encoding="json")


def gen_json_mutated(rng):
    signal = rng.choice(list(PATHS))
    text = json.dumps(json_body(rng, signal)).encode()
    if rng.random() < 0.5:
        plain = mutate_bytes(rng, text)
    else:
        tokens = [b"{", b"}", b"[", b"]", b",", b":", b'"', b"null", b"1e999", b"-0", b"\\u0000", b"\\ud800",
                  b"NaN", b'"\\', b"true", b"18446744073709551616", b" "]
        b = bytearray(text)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.choice(tokens)
        plain = bytes(b)
    return Case("json mutated", plain, "any", signal, JSON, encoding="json")


def gen_json_wrong_types(rng):
    """A valid document with one value replaced by a value of another JSON type."""
    signal = rng.choice(list(PATHS))
    doc = json_body(rng, signal)
    slots = []

    def walk(x):
        if isinstance(x, dict):
            for k in x:
                slots.append((x, k))
                walk(x[k])
        elif isinstance(x, list):
            for i in range(len(x)):
                slots.append((x, i))
                walk(x[i])
    walk(doc)
    for _ in range(rng.randrange(1, 3)):
        if slots:
            parent, key = rng.choice(slots)
            parent[key] = rng.choice([None, True, -1, 1.5, 2 ** 70, "x", "", [], {}, [1, "a"], {"a": 1}, "zz" * 8])
    return Case("json wrong types", json.dumps(doc).encode(), "any", signal, JSON, encoding="json")


def gen_json_bad_utf8(rng):
    signal = rng.choice(list(PATHS))
    text = json.dumps(json_body(rng, signal, valid_request(rng, signal, slot=True)), ensure_ascii=False).encode()
    slot = UTF8_SLOT.encode()
    bad = rng.choice(INVALID_UTF8)
    plain = text.replace(slot, b"x" + bad + b"y", 1)
    return Case("json invalid utf-8", plain, "4xx", signal, JSON, encoding="json")


def gen_json_deep(rng):
    """Deep nesting: '[' x N (invalid), closed arrays where a list of objects belongs (invalid),
    AnyValue kvlists past the depth limit (invalid), and deep unknown fields (valid JSON that a
    decoder must skip without recursing itself to death; 200 or 400)."""
    signal = rng.choice(["traces", "logs"])
    n = rng.choice([100, 1000, 10000, 100000])
    how = rng.randrange(4)
    if how == 0:
        return Case("json deep [[[", b"[" * n, "4xx", signal, JSON, encoding="json")
    key = {"traces": "resourceSpans", "logs": "resourceLogs"}[signal]
    if how == 1:
        return Case("json deep arrays", ('{"%s":' % key + "[" * n + "]" * n + "}").encode(), "4xx", signal, JSON,
                    encoding="json")
    if how == 2:
        depth = rng.choice([30, 100, 1000, 5000])
        value = '{"stringValue":"leaf"}'
        for _ in range(depth):
            value = '{"kvlistValue":{"values":[{"key":"k","value":%s}]}}' % value
        doc = json.dumps(json_body(rng, signal, valid_request(rng, signal, items=1)))
        marker = '"@DEEP@"'
        d = json.loads(doc)
        if signal == "traces":
            d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [{"key": "deep", "value": "@DEEP@"}]
        else:
            d["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"] = "@DEEP@"
        return Case("json deep kvlist", json.dumps(d).replace(marker, value).encode(), "4xx", signal, JSON,
                    encoding="json")
    inner = rng.choice(['{"a":', "["])
    close = "}" if inner.startswith("{") else "]"
    n = min(n, 50000)
    body = '{"%s":[],"futureField":' % key + inner * n + "1" + close * n + "}"
    return Case("json deep unknown field", body.encode(), "any", signal, JSON, encoding="json")


def gen_json_bad_ids(rng):
    """Hex ids that are not: non-hex digits, wrong length, all zeros; on every item."""
    signal = rng.choice(["traces", "logs"])
    doc = json_body(rng, signal)

    def bad(n):
        # Spaces anywhere in an id: swift-protobuf's base64 reader skips them, so the acceptor
        # once stored " abab…" as "abab…" (test_badinput.TestJSONIds, JSONHexIDs.swift).
        spaced = "ab" * n
        at = rng.randrange(len(spaced) + 1)
        return rng.choice(["zz" * n, "0" * (2 * n), "ab" * (n - 1), "ab" * n + "a", "g" + "a" * (2 * n - 1),
                           "ab" * (n + 4), "AQID", "-1", "ab" * (n - 1) + "==", "\n" + "ab" * n,
                           "\u00e9" * (2 * n), spaced[:at] + " " + spaced[at:]])
    if signal == "traces":
        for ss in doc["resourceSpans"][0]["scopeSpans"]:
            for sp in ss["spans"]:
                if rng.random() < 0.5:
                    sp["traceId"] = bad(16)
                else:
                    sp["spanId"] = bad(8)
    else:
        for r in doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
            r["traceId"] = bad(16)
            r["traceId"] = r["traceId"] if r["traceId"] != "0" * 32 else "00"
    return Case("json absurd ids", json.dumps(doc).encode(), "4xx", signal, JSON, encoding="json")


def gen_content_type(rng):
    signal = rng.choice(list(PATHS))
    body = valid_request(rng, signal).SerializeToString()
    ct = rng.choice([None, "", "text/plain", "application/xml", "application/grpc", "application/x-protobuff",
                     "application/jsonx", "multipart/form-data; boundary=x", "*/*", "application",
                     rand_text(rng, 12).replace("\t", "").replace("\0", "").encode("utf-8").decode("latin-1")])
    if ct is not None:
        ct = ct.replace("\r", "").replace("\n", "")
    return Case("wrong content type", body, "4xx", signal, ct, encoding="protobuf")


def gen_content_encoding(rng):
    signal = rng.choice(list(PATHS))
    plain = valid_request(rng, signal).SerializeToString()
    how = rng.randrange(6)
    headers = {}
    if how == 0:
        headers["Content-Encoding"] = rng.choice(["br", "zstd", "compress", "gzip, deflate", "snappy", "*"])
        return Case("unknown content encoding", plain, "4xx", signal, headers=headers)
    if how == 1:
        gz = gzip.compress(plain)
        headers["Content-Encoding"] = "gzip"
        return Case("gzip truncated", gz[:rng.randrange(0, len(gz))], "4xx", signal, headers=headers)
    if how == 2:
        gz = bytearray(gzip.compress(plain))
        gz[2] = rng.choice([b for b in range(256) if b != 8])          # compression method != deflate
        headers["Content-Encoding"] = "gzip"
        return Case("gzip bad method", bytes(gz), "4xx", signal, headers=headers)
    if how == 3:
        gz = gzip.compress(plain) + os.urandom(rng.randrange(1, 64))
        headers["Content-Encoding"] = "gzip"
        return Case("gzip trailing garbage", gz, "4xx", signal, headers=headers)
    if how == 4:
        headers["Content-Encoding"] = "gzip"
        return Case("gzip header on plain body", plain, "4xx", signal, headers=headers)
    gz = mutate_bytes(rng, gzip.compress(plain))
    headers["Content-Encoding"] = rng.choice(["gzip", "deflate"])
    if headers["Content-Encoding"] == "deflate":
        gz = mutate_bytes(rng, zlib.compress(plain))
    return Case("compressed mutated", gz, "any", signal, headers=headers, encoding="protobuf",
                plain=_inflate(gz, headers["Content-Encoding"]))


def _inflate(data, coding):
    try:
        if coding == "gzip":
            d = zlib.decompressobj(31)
            out = d.decompress(data)
            return out if d.eof and not d.unused_data else None
        for wbits in (15, -15):
            d = zlib.decompressobj(wbits)
            try:
                out = d.decompress(data)
            except zlib.error:
                continue
            if d.eof and not d.unused_data:
                return out
            if wbits == 15:
                continue
        return None
    except zlib.error:
        return None


class Bombs:
    """Compressed bodies that inflate past the request limit (built once: 100 MB of zeros takes
    a moment)."""

    def __init__(self, limit):
        self.items = []
        for size in (limit + 1, limit + (64 << 10), 8 << 20, 100 << 20):
            for coding in ("gzip", "deflate", "rawdeflate"):
                if coding == "gzip":
                    co = zlib.compressobj(9, zlib.DEFLATED, 31)
                elif coding == "deflate":
                    co = zlib.compressobj(9, zlib.DEFLATED, 15)
                else:
                    co = zlib.compressobj(9, zlib.DEFLATED, -15)
                chunk = b"\0" * (1 << 20)
                parts, left = [], size
                while left > 0:
                    parts.append(co.compress(chunk[:min(left, len(chunk))]))
                    left -= min(left, len(chunk))
                parts.append(co.flush())
                self.items.append((size, "gzip" if coding == "gzip" else "deflate", b"".join(parts)))

    def gen(self, rng):
        size, coding, data = rng.choice(self.items)
        signal = rng.choice(list(PATHS))
        return Case("%s bomb %d KiB" % (coding, size >> 10), data, "4xx", signal,
                    headers={"Content-Encoding": coding})


def gen_method_path(rng):
    signal = rng.choice(list(PATHS))
    body = valid_request(rng, signal).SerializeToString()
    if rng.random() < 0.5:
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "post", "CONNECT"])
        path = PATHS[signal]
        if method == "CONNECT":
            path = "127.0.0.1:1"
        return Case("bad method %s" % method, body, "4xx", signal, method=method, path=path,
                    may_close=method in ("CONNECT", "post"))
    path = rng.choice(["/", "/v1", "/v1/trace", "/v1/traces/", "/v2/traces", "/v1/TRACES", "/v1/traces/x",
                       "//v1/traces", "/v1/%74races", "/" + "a" * rng.randrange(1, 8000), "/v1/logs/../traces",
                       "/metrics", "/readyz", "/v1/traces%00", "/\u00e9".encode("utf-8").decode("latin-1")])
    return Case("bad path", body, "any" if ".." in path or "%" in path or path == "//v1/traces" else "4xx",
                signal, path=path, encoding="protobuf")


def gen_oversize_body(rng, limit):
    signal = rng.choice(list(PATHS))
    body = os.urandom(limit + rng.randrange(1, 2 << 20))
    return Case("oversize body", body, "4xx", signal, may_close=True)


def raw_request(signal, headers, body=b"", method="POST"):
    lines = ["%s %s HTTP/1.1" % (method, PATHS[signal]), "Host: 127.0.0.1", "Connection: close",
             "X-Tenant-ID: @TENANT@"] + ["%s: %s" % kv for kv in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def gen_wrong_length(rng):
    """Content-Length shorter or longer than the body, or not a number; huge declared sizes;
    chunked with a huge chunk size."""
    signal = rng.choice(list(PATHS))
    body = valid_request(rng, signal).SerializeToString()
    ct = ("Content-Type", PROTOBUF)
    how = rng.randrange(7)
    if how == 0:
        n = rng.randrange(0, len(body))
        return Case("content-length short", expect="any", signal=signal, may_close=True, encoding="protobuf",
                    plain=body[:n], raw=raw_request(signal, [ct, ("Content-Length", n)], body))
    if how == 1:
        n = len(body) + rng.randrange(1, 1000)
        return Case("content-length long", expect="4xx", signal=signal, may_close=True,
                    raw=raw_request(signal, [ct, ("Content-Length", n)], body))
    if how == 2:
        v = rng.choice(["abc", "-1", "1,2", "0x10", " ", "+5", "1e3", "99999999999999999999999999", "%d, %d" % (len(body), len(body) + 1)])
        return Case("content-length garbage", expect="4xx", signal=signal, may_close=True,
                    raw=raw_request(signal, [ct, ("Content-Length", v)], body))
    if how == 3:
        n = rng.choice([10 ** 12, 2 ** 63 - 1, 512 << 20, 2 ** 31])
        return Case("content-length huge", expect="4xx", signal=signal, may_close=True,
                    raw=raw_request(signal, [ct, ("Content-Length", n)], body))
    if how == 4:
        size = rng.choice(["FFFFFFFF", "7FFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFFFFFFFFFF", "100000000", "zz", "-1"])
        return Case("chunked huge chunk", expect="4xx", signal=signal, may_close=True,
                    raw=raw_request(signal, [ct, ("Transfer-Encoding", "chunked")], size.encode() + b"\r\n" + body))
    if how == 5:
        # Both Content-Length and chunked (a smuggling shape): refused or read as chunked.
        chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        return Case("chunked and content-length", expect="any", signal=signal, may_close=True, encoding="protobuf",
                    plain=body, raw=raw_request(signal, [ct, ("Content-Length", 3), ("Transfer-Encoding", "chunked")], chunked))
    # Many chunks adding up past the limit.
    piece = os.urandom(64 << 10)
    chunks = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(10)) + b"0\r\n\r\n"
    return Case("chunked past the limit", expect="4xx", signal=signal, may_close=True,
                raw=raw_request(signal, [ct, ("Transfer-Encoding", "chunked")], chunks))


def gen_big_headers(rng):
    signal = rng.choice(list(PATHS))
    body = valid_request(rng, signal).SerializeToString()
    ct = ("Content-Type", PROTOBUF)
    # Measured: one 79 KiB header and 500 small ones are taken (200); a 1 MiB header and 1000
    # or more headers are refused (400). Past those the request must be refused; under them it
    # is an ordinary request.
    if rng.random() < 0.5:
        size = rng.choice([64 << 10, 1 << 20, 4 << 20])
        headers = [ct, ("Content-Length", len(body)), ("X-Big", "a" * size)]
        expect = "ok" if size < 80 << 10 else "4xx"
    else:
        n = rng.choice([100, 10000, 50000])
        headers = [ct, ("Content-Length", len(body))] + [("X-H%d" % i, "v") for i in range(n)]
        expect = "ok" if n <= 500 else "4xx"
    return Case("big headers" if expect == "ok" else "oversize headers", expect=expect, signal=signal,
                may_close=expect == "4xx", raw=raw_request(signal, headers, body), encoding="protobuf", plain=body)


def gen_amplifier(rng):
    """Up to ~500 KB of empty items (2 bytes each on the wire, a struct each once decoded): the
    decoded tree is tens of times the body. Empty spans lack ids (4xx); empty log records are
    valid (200, stored); empty unnamed metrics carry no points (200, nothing stored); empty
    attributes on one valid span are valid (200)."""
    n = rng.randrange(1000, 240000)
    how = rng.randrange(4)
    if how == 0:
        return Case("amplifier empty spans", field(1, field(2, field(2, b"") * n)), "4xx", "traces",
                    encoding="protobuf")
    if how == 1:
        return Case("amplifier empty logs", field(1, field(2, field(2, b"") * n)), "ok", "logs", encoding="protobuf")
    if how == 2:
        return Case("amplifier empty metrics", field(1, field(2, field(2, b"") * n)), "ok", "metrics",
                    encoding="protobuf")
    span = field(1, rand_id(rng, 16)) + field(2, rand_id(rng, 8)) + field(9, b"") * n
    return Case("amplifier empty attributes", field(1, field(2, field(2, span))), "ok", "traces", encoding="protobuf")


def gen_http_garbage(rng):
    """A request line or header block that is not HTTP."""
    signal = rng.choice(list(PATHS))
    raw = rng.choice([
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: @TENANT@\r\nContent-Type application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        b"POST /v1/traces HTTP/9.9\r\nHost: x\r\nX-Tenant-ID: @TENANT@\r\nContent-Length: 0\r\n\r\n",
        b"POST  /v1/traces  HTTP/1.1\r\nX-Tenant-ID: @TENANT@\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),           # a TLS ClientHello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(32),                     # HTTP/2 preface
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: @TENANT@\r\nContent-Length: 2\r\n\x00bad: y\r\n\r\n{}",
        b"POST /v1/tr aces HTTP/1.1\r\nX-Tenant-ID: @TENANT@\r\nContent-Length: 0\r\n\r\n",
        b"POST /v1/traces HTTP/1.1\nX-Tenant-ID: @TENANT@\nContent-Type: application/json\nContent-Length: 2\n\n{}",
        os.urandom(rng.randrange(1, 512)) + b"\r\n\r\n",
    ])
    return Case("http garbage", expect="4xx", signal=signal, may_close=True, raw=raw, encoding="json", plain=b"{}")


# ---------------------------------------------------------------- raw HTTP client

class Answer:
    def __init__(self):
        self.status = None
        self.headers = {}
        self.body = b""
        self.error = None
        self.elapsed = 0.0

    @property
    def closed(self):
        return self.status is None


def exchange(port, data, timeout=30.0, head=False, trickle=None, trickle_from=0, stop_after=None):
    """Sends `data` on a new connection and reads one HTTP response. `trickle` (seconds per byte)
    paces the writes from byte `trickle_from` on; `stop_after` sends that many bytes and then nothing more (the client
    hangs), returning when the server closes or `timeout` passes. Never raises for network
    errors: a connection closed without a response is an Answer with status None."""
    ans = Answer()
    started = time.time()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        ans.error = "connect: %s" % e
        return ans
    sock.settimeout(timeout)
    send_error = []

    def send():
        try:
            if trickle is not None:
                sock.sendall(data[:trickle_from])
                for i in range(trickle_from, len(data) if stop_after is None else min(stop_after, len(data))):
                    sock.sendall(data[i:i + 1])
                    time.sleep(trickle)
            elif stop_after is not None:
                sock.sendall(data[:stop_after])
            else:
                sock.sendall(data)
        except OSError as e:
            send_error.append(e)
    sender = None
    if len(data) > 32 << 10 or trickle is not None:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
    else:
        send()
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        if b"\r\n\r\n" in buf:
            head_block, rest = buf.split(b"\r\n\r\n", 1)
            lines = head_block.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            ans.status = int(parts[1])
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                ans.headers[k.strip().decode("latin-1").lower()] = v.strip().decode("latin-1")
            if not head and "content-length" in ans.headers:
                n = int(ans.headers["content-length"])
                while len(rest) < n:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            ans.body = rest
        else:
            ans.error = "closed after %d bytes%s" % (len(buf), "; send: %s" % send_error[0] if send_error else "")
    except (OSError, ValueError, IndexError) as e:
        if ans.status is None:
            ans.error = "%s after %d bytes%s" % (type(e).__name__, len(buf), "; send: %s" % send_error[0] if send_error else "")
    finally:
        try:
            sock.close()
        except OSError:
            pass
    ans.elapsed = time.time() - started
    return ans


def wait_closed(port, data, hang_after, timeout):
    """Sends `hang_after` bytes of `data` and waits: the seconds until the server closes the
    connection (or None if it did not within `timeout`), and the status if it answered."""
    started = time.time()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data[:hang_after])
        sock.settimeout(timeout)
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return None, got
            except OSError:
                return time.time() - started, got
            if not chunk:
                return time.time() - started, got
            got += chunk
    finally:
        sock.close()
