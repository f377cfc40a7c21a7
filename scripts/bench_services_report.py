"""Turns docs/bench/services-results.json into services-results.md and services-results.svg, and
puts the Markdown at the top of BENCHMARKS.md's sections (`make bench-services`).

Usage: python3 scripts/bench_services_report.py [results.json] [--no-benchmarks-md]"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = ["no-WAL handler (baseline)", "acceptor, durability none", "acceptor, durability group"]
COLORS = ["#9e9e9e", "#64b5f6", "#1565c0"]
S1_TARGET = 0.80
S3_TARGET = 0.70
# The engine's last `make bench` (BENCHMARKS.md, "Issue 10: the redesigned write path", 2026-12-01).
ENGINE_P1 = ("the engine's last `make bench` (BENCHMARKS.md section \"Issue 10: the redesigned write path\", "
             "2026-12-01): P1, 64 durable appenders of 1 KiB records, group/uring: 74,023 records/s (75.8 MB/s, "
             "p50 807 us, p99 1,429 us), 2.65x RocksDB at 64 threads (target 5x, not met)")


def fmt(n, d=0):
    if n is None:
        return "-"
    return "{:,.{d}f}".format(n, d=d)


def find(rows, server, spans, c):
    for r in rows:
        if r["server"] == server and r["spans_per_request"] == spans and r["connections"] == c:
            return r
    return None


def markdown(res):
    L = []
    L.append("## Services: `make bench-services` (issue 15), %s" % res["date"][:10])
    L.append("")
    L.append("Run: %s, commit %s, machine: %d cores (the same shared VM class as below; the load generator runs on "
             "the same 2 cores as the service), kernel %s, %d s per S1/S2 point, scratch `%s` on `%s`. Raw numbers: "
             "`docs/bench/services-results.json`, chart `docs/bench/services-results.svg`, this section "
             "`docs/bench/services-results.md`; the first run took %.0f s." % (
                 res["date"], res["commit"], res["cores"], res["kernel"], res["seconds_per_point"],
                 os.path.relpath(res["scratch"], ROOT) if res["scratch"].startswith(ROOT) else res["scratch"],
                 res["disk"].split()[0] if res.get("disk") else "?", res.get("total_seconds", 0)))
    L.append("")
    b = res["body_bytes"]
    L.append("Request bodies: spans built with the OpenTelemetry Python SDK 1.45.2 and serialized as its OTLP "
             "exporters do (`encode_spans(spans).SerializeToString()`, `scripts/bench/make_bodies.py`): 1 span = "
             "%s bytes, 10 spans = %s bytes, 100 spans = %s bytes (uncompressed protobuf; a server span and "
             "client/internal children with HTTP/DB attributes, a few events and error statuses). Every request "
             "carries a new trace id (`scripts/bench/otlp_post.lua` rewrites it), so the writer stores every span." % (
                 fmt(int(b["1"])), fmt(int(b["10"])), fmt(int(b["100"]))))
    L.append("")
    if res.get("merged_later"):
        L.append("Sections re-run later the same way (`BENCH_MERGE=1 BENCH_SECTIONS=...`), their numbers replacing the "
                 "first run's, which stay in the JSON under `earlier_runs`: " + "; ".join(
                     "%s at %s on %s%s" % (",".join(m["sections"]), m["date"], m["commit"],
                                           (", %.0f s" % m["seconds"]) if "seconds" in m else "") for m in res["merged_later"]) + ".")
        L.append("")
    failures = res.get("failures") or {}
    if failures:
        L.append("**Sections that failed in this run:** " + "; ".join("%s: `%s`" % kv for kv in failures.items()))
        L.append("")

    if res.get("s1"):
        rows = res["s1"]
        L.append("### S1: acceptor, OTLP/HTTP protobuf (wrk, closed loop)")
        L.append("")
        interleaved = all(r.get("interleaved") for r in rows)
        L.append("`wrk -t2 -cC -d%ds --latency` (`-t1` at 1 connection). " % res["seconds_per_point"] + (
                 "Three servers, started together and left running side by side; each point loads them in turn "
                 "(baseline, none, group, back to back), so drift on the shared machine hits the three alike: "
                 if interleaved else "Three servers, each started fresh and measured one after the other: ") +
                 "**baseline** = `signaldb-bench-baseline`, the acceptor's own HTTP receiver and `Ingestor` "
                 "(headers, body collection, decompression check, `OTLPDecoder.decode`, envelope encoding) with the "
                 "envelope discarded instead of appended; **none** = `signaldb-acceptor` with "
                 "`ACCEPTOR_WAL_DURABILITY=none`; **group** = `signaldb-acceptor` with the default "
                 "`ACCEPTOR_WAL_DURABILITY=group` (fsync before each answer, shared). The writer is *not* running "
                 "in S1/S2: the forwarder retries against a closed port with backoff, and the WAL's bound is raised "
                 "(`ACCEPTOR_WAL_MAX_BYTES=64GiB`) so nothing is refused; a writer draining on the same 2 cores "
                 "would take CPU from the acceptor in the WAL rows only and skew the ratios (S3 measures the "
                 "pipeline with the writer). Ratio = group requests/s over baseline requests/s, same run.")
        L.append("")
        L.append("| spans/req (body) | conns | baseline req/s | none req/s | group req/s | **group / baseline** | group spans/s | group MB/s | p50 / p99 ms baseline | p50 / p99 ms none | p50 / p99 ms group | non-2xx |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for spans in (1, 10, 100):
            for c in sorted({r["connections"] for r in rows}):
                base, none, group = (find(rows, s, spans, c) for s in SERVERS)
                if not group:
                    continue
                ratio = group["requests_per_second"] / base["requests_per_second"] if base and base["requests_per_second"] else None
                lat = lambda r: "%s / %s" % (fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2)) if r else "-"
                non2xx = sum(r["non2xx"] + r.get("socket_errors", 0) for r in (base, none, group) if r)
                L.append("| %d (%s B) | %d | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %d |" % (
                    spans, fmt(group["body_bytes"]), c, fmt(base and base["requests_per_second"]),
                    fmt(none and none["requests_per_second"]), fmt(group["requests_per_second"]),
                    "%.0f%%" % (ratio * 100) if ratio else "-", fmt(group["spans_per_second"]), fmt(group["mb_per_second"], 1),
                    lat(base), lat(none), lat(group), non2xx))
        L.append("")
        base, group = find(rows, SERVERS[0], 10, 64), find(rows, SERVERS[2], 10, 64)
        if base and group:
            ratio = group["requests_per_second"] / base["requests_per_second"]
            if res.get("s1_alternating"):
                L.append("- S1 target point in this table (durable at 64 connections vs the no-WAL handler, "
                         "10-span requests): %s of %s req/s = %.0f%%, one %d s turn each. The verdict comes from the "
                         "alternating check below (three rounds of the same point)." % (
                             fmt(group["requests_per_second"]), fmt(base["requests_per_second"]), ratio * 100, res["seconds_per_point"]))
            else:
                L.append("- **S1 target (durable at 64 connections at least 80%% of the no-WAL handler's requests/s, "
                         "10-span requests): %s** — %s of %s req/s = %.0f%%%s." % (
                             "met" if ratio >= S1_TARGET else "NOT met", fmt(group["requests_per_second"]),
                             fmt(base["requests_per_second"]), ratio * 100,
                             "" if ratio >= S1_TARGET else " (%.0f points short)" % ((S1_TARGET - ratio) * 100)))
        for e in (res.get("earlier_runs") or {}).get("s1", []):
            eb, eg = find(e, SERVERS[0], 10, 64), find(e, SERVERS[2], 10, 64)
            if eb and eg:
                eloads = [r["loadavg_1m_after"] for r in e if "loadavg_1m_after" in r]
                L.append("- An earlier S1 of this run (%s; load average %.1f-%.1f): at the target point group %s vs baseline %s req/s = %.0f%%. Its whole table:" % (
                    "interleaved" if all(r.get("interleaved") for r in e) else "the servers one after the other",
                    min(eloads), max(eloads), fmt(eg["requests_per_second"]), fmt(eb["requests_per_second"]),
                    100 * eg["requests_per_second"] / eb["requests_per_second"]))
                L.append("")
                L.append("  | spans/req | conns | baseline req/s | none req/s | group req/s | group / baseline | group p50 / p99 ms |")
                L.append("  |---|---|---|---|---|---|---|")
                for spans in (1, 10, 100):
                    for c in sorted({r["connections"] for r in e}):
                        b_, n_, g_ = (find(e, x, spans, c) for x in SERVERS)
                        if b_ and n_ and g_:
                            L.append("  | %d | %d | %s | %s | %s | %.0f%% | %s / %s |" % (
                                spans, c, fmt(b_["requests_per_second"]), fmt(n_["requests_per_second"]), fmt(g_["requests_per_second"]),
                                100 * g_["requests_per_second"] / b_["requests_per_second"], fmt(g_["p50_ms"], 2), fmt(g_["p99_ms"], 2)))
                L.append("")
        alt = res.get("s1_alternating")
        if alt:
            rounds = sorted({r["round"] for r in alt})
            ratios = []
            L.append("- The target point again, the three servers started together and loaded in turn (baseline, none, "
                     "group; %d s each), %d rounds, so drift on the shared machine hits all three alike:" % (res["seconds_per_point"], len(rounds)))
            L.append("")
            L.append("  | round | baseline req/s | none req/s | group req/s | group / baseline | group p50 / p99 ms |")
            L.append("  |---|---|---|---|---|---|")
            for rnd in rounds:
                by = {r["server"]: r for r in alt if r["round"] == rnd}
                b, n, g = (by.get(x) for x in SERVERS)
                ratio = g["requests_per_second"] / b["requests_per_second"]
                ratios.append(ratio)
                L.append("  | %d | %s | %s | %s | %.0f%% | %s / %s |" % (rnd, fmt(b["requests_per_second"]), fmt(n["requests_per_second"]),
                                                                   fmt(g["requests_per_second"]), ratio * 100, fmt(g["p50_ms"], 2), fmt(g["p99_ms"], 2)))
            L.append("")
            med = sorted(ratios)[len(ratios) // 2]
            L.append("- **S1 target (durable at 64 connections at least 80%% of the no-WAL handler's requests/s, "
                     "10-span requests): %s** — median group / baseline over the alternating rounds %.0f%%%s." % (
                         "met" if med >= S1_TARGET else "NOT met", med * 100,
                         "" if med >= S1_TARGET else " (%.0f points short)" % ((S1_TARGET - med) * 100)))
        loads = [r["loadavg_1m_after"] for r in rows if "loadavg_1m_after" in r]
        if loads:
            L.append("- The machine's 1-minute load average after each S1 point ranged %.1f-%.1f (2 cores: the "
                     "server and wrk alone make about 2; more means other work on the shared VM, such as another "
                     "checkout's build)." % (min(loads), max(loads)))
        L.append("- Beside it, " + ENGINE_P1 + ". The engine's figure is 1 KiB records from 64 threads in one "
                 "process with no HTTP; the acceptor's group rows add HTTP/1.1, decoding and the envelope, and "
                 "share the 2 cores with wrk.")
        L.append("")

    s3 = res.get("s3")
    if s3:
        L.append("### S3: end to end, acceptor -> writer -> SQLite")
        L.append("")
        ce = s3["ceiling"]
        L.append("Requests of %d spans (%s B). **Ceiling**: `signaldb-bench-baseline sqlite-ceiling`, the same body "
                 "(new trace id per request) decoded, enveloped, mapped by `RowMapper` and committed to a new "
                 "`SQLiteStore` (the writer's schema, indexes and `synchronous = FULL`) in transactions of the writer's "
                 "committer size (at most %d rows and %d records: `WRITER_STORE_BATCH_ROWS`/`_RECORDS` defaults), one "
                 "process, for %.0f s: **%s spans/s** (%s spans/s counting the commit time alone; %d transactions). "
                 "The pipeline: a release writer and a release acceptor (group), each on a fresh directory, wrk "
                 "with 64 connections." % (
                     s3["spans_per_request"], fmt(s3["body_bytes"]), s3["store_batch_rows"], s3["store_batch_records"],
                     ce["seconds"], fmt(ce["spans_per_second"]), fmt(ce["spans_per_commit_second"]), ce["transactions"]))
        L.append("")
        sat = s3.get("saturation")
        if sat:
            L.append("- Saturation (closed loop, 30 s): the acceptor took %s spans/s; the store drained **%s spans/s** "
                     "(writer's `signaldb_writer_store_rows_total{table=\"spans\"}` over the last 20 s), %.0f%% of the "
                     "ceiling; the backlog at the end was %s records." % (
                         fmt(sat["accepted_spans_per_second"]), fmt(sat["drain_spans_per_second"]),
                         100 * sat["drain_spans_per_second"] / ce["spans_per_second"], fmt(sat["backlog_at_end_records"])))
        L.append("")
        L.append("| held load | wrk delay/conn | achieved spans/s | vs ceiling | backlog slope (records/s) | backlog max / end (records) | writer lag max | p50 / p99 ms | load avg after | bounded? |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for h in s3.get("holds", []):
            L.append("| %.0f%% of drain, %d s | %d ms x %d | %s | %.0f%% | %.1f | %s / %s | %.1f s | %s / %s | %s | %s |" % (
                h["fraction_of_drain"] * 100, res.get("hold_seconds", 60), h["delay_ms"], h["connections"],
                fmt(h["held_spans_per_second"]), 100 * h["held_spans_per_second"] / ce["spans_per_second"],
                h["backlog_growth_records_per_second"], fmt(h["backlog_max_records"]), fmt(h["backlog_end_records"]),
                h["writer_lag_seconds_max"], fmt(h["p50_ms"], 2), fmt(h["p99_ms"], 2), fmt(h.get("loadavg_1m_after"), 1),
                "yes" if h["bounded"] else "**no**"))
        L.append("")
        L.append("Bounded means: over the hold, the backlog (acceptor forward lag + writer store lag, in records, "
                 "sampled every second from `/metrics`) grows by less than one store transaction's worth of records "
                 "(%d; least-squares slope x hold seconds; the backlog is a sawtooth of up to that much) and ends "
                 "below 2 s of arrivals. A rate above the drain rate grows it by (rate - drain) x hold seconds, "
                 "far past that." % s3["store_batch_records"])
        L.append("")
        for e in (res.get("earlier_runs") or {}).get("s3", []):
            eb = [h for h in e.get("holds", []) if h["bounded"]]
            L.append("- An earlier S3 of this run: ceiling %s spans/s, drain under saturation %s spans/s, %s." % (
                fmt(e["ceiling"]["spans_per_second"]), fmt(e.get("saturation", {}).get("drain_spans_per_second")),
                "; ".join("held %.0f%% of drain = %s spans/s (%.0f%% of its ceiling, load average %s after): %s" % (
                    h["fraction_of_drain"] * 100, fmt(h["held_spans_per_second"]),
                    100 * h["held_spans_per_second"] / e["ceiling"]["spans_per_second"], fmt(h.get("loadavg_1m_after"), 1),
                    "bounded" if h["bounded"] else "growing")
                          for h in e.get("holds", []))))
        L.append("")
        if s3.get("ratio_to_ceiling") is not None:
            r = s3["ratio_to_ceiling"]
            L.append("- **S3 target (sustained at least 70%% of the ceiling): %s** — %s of %s spans/s = %.0f%%%s." % (
                "met" if r >= S3_TARGET else "NOT met", fmt(s3["sustained_spans_per_second"]), fmt(ce["spans_per_second"]),
                r * 100, "" if r >= S3_TARGET else " (%.0f points short)" % ((S3_TARGET - r) * 100)))
        else:
            L.append("- **S3 target: NOT met** — no held rate kept the backlog bounded.")
        L.append("")

    if res.get("s2"):
        rows = res["s2"]
        L.append("### S2: acceptor, OTLP/gRPC (h2load)")
        L.append("")
        L.append("`h2load -D %d -cC -t2 -m1` posting the 10-span body gRPC-framed (5-byte prefix, %s B) to "
                 "`TraceService/Export` with `content-type: application/grpc`, `te: trailers`. h2load cannot see "
                 "grpc-status, so requests/s counts only what the server's "
                 "`signaldb_acceptor_requests_total{transport=\"grpc\",status=\"200\"}` grew by; p50/p99 from h2load's "
                 "per-request log. Same three servers, writer not running, as in S1." % (
                     res["seconds_per_point"], fmt(rows[0]["body_bytes"])))
        L.append("")
        L.append("| conns | baseline req/s | none req/s | group req/s | **group / baseline** | group spans/s | p50 / p99 ms baseline | p50 / p99 ms group | accepted / done (group) |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for c in sorted({r["connections"] for r in rows}):
            base, none, group = (find(rows, s, 10, c) for s in SERVERS)
            if not group:
                continue
            ratio = group["requests_per_second"] / base["requests_per_second"] if base and base["requests_per_second"] else None
            lat = lambda r: "%s / %s" % (fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2)) if r else "-"
            L.append("| %d | %s | %s | %s | **%s** | %s | %s | %s | %s / %s |" % (
                c, fmt(base and base["requests_per_second"]), fmt(none and none["requests_per_second"]),
                fmt(group["requests_per_second"]), "%.0f%%" % (ratio * 100) if ratio else "-", fmt(group["spans_per_second"]),
                lat(base), lat(group), fmt(group["accepted_by_counter"]), fmt(group["requests_done"])))
        L.append("")

    if res.get("s4"):
        L.append("### S4: acceptor start-up with a backlog")
        L.append("")
        L.append("The acceptor's WAL filled through HTTP (100-span requests, durability none, writer down, "
                 "`ACCEPTOR_WAL_MAX_BYTES=4GiB`), the acceptor stopped (SIGTERM), started again on the same WAL "
                 "(group), timed from `exec` to `/readyz` 200 (and both OTLP ports accepting); then a writer started "
                 "(`WRITER_WAL_MAX_BYTES=8GiB`) and the acceptor forwarded the whole backlog. RSS = VmRSS sampled "
                 "every 100 ms from the start until the forward lag reached 0.")
        L.append("")
        L.append("| backlog (WAL live bytes; dir on disk) | records (x %s B bodies) | start to /readyz | peak RSS until ready (anon) | peak RSS while forwarding (anon) | backlog forwarded in |" % fmt(res["body_bytes"]["100"]))
        L.append("|---|---|---|---|---|---|")
        anon = lambda r, k: (" (%.0f)" % r[k]) if k in r else ""
        for r in res["s4"]:
            L.append("| %s MiB; %s MiB | %s | %.2f s | %.0f MiB%s | %.0f MiB%s | %s |" % (
                fmt(r["backlog_mib"]), fmt(r.get("wal_dir_mib")), fmt(r["backlog_records"]), r["ready_seconds"], r["peak_rss_mib_until_ready"],
                anon(r, "peak_rss_anon_mib_until_ready"), r["peak_rss_mib_while_forwarding"], anon(r, "peak_rss_anon_mib_while_forwarding"),
                ("%.1f s" % r["forwarded_in_seconds"]) if r["forwarded_in_seconds"] is not None else "not within 180 s"))
        L.append("")

    L.append("### S5: memory under sustained load")
    L.append("")
    if res.get("s1"):
        for s in SERVERS:
            peaks = [r["peak_rss_mib"] for r in res["s1"] if r["server"] == s and r["connections"] == 64]
            allp = [r["peak_rss_mib"] for r in res["s1"] if r["server"] == s]
            if peaks:
                L.append("- %s, S1 at 64 connections (1/10/100 spans): peak RSS %.0f MiB; over all S1 points (up to 256 connections) %.0f MiB." % (
                    s, max(peaks), max(allp)))
    alt = res.get("s1_alternating") or []
    for sv in SERVERS:
        a = [r for r in alt if r["server"] == sv and "peak_rss_anon_mib" in r]
        if a:
            L.append("- %s, S1b (10 spans, 64 connections, %d rounds): peak VmRSS %.0f MiB, of it anonymous (RssAnon: heap, stacks) %.0f MiB; the rest is file-backed pages (mapped WAL segments, the binary), which the kernel can reclaim." % (
                sv, len(a), max(r["peak_rss_mib"] for r in a), max(r["peak_rss_anon_mib"] for r in a)))
    if s3 and s3.get("holds"):
        for h in s3["holds"]:
            L.append("- S3 hold at %.0f%% of drain (64 connections, %d s): acceptor %.0f MiB, writer %.0f MiB peak RSS." % (
                h["fraction_of_drain"] * 100, res.get("hold_seconds", 60), h["peak_rss_mib"].get("acceptor", 0), h["peak_rss_mib"].get("writer", 0)))
    L.append("")
    return "\n".join(L) + "\n"


def svg(res):
    W, H = 960, 720
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="18" font-size="14" font-weight="bold">make bench-services, %s, commit %s, %d cores</text>' % (
               res["date"], res["commit"], res["cores"])]
    rows = res.get("s1") or []
    conns = sorted({r["connections"] for r in rows})
    panel_w, panel_h = 300, 230
    for i, spans in enumerate((1, 10, 100)):
        x0, y0 = 20 + i * (panel_w + 15), 40
        vals = [r["requests_per_second"] for r in rows if r["spans_per_request"] == spans]
        top = max(vals) if vals else 1
        out.append('<text x="%d" y="%d" font-weight="bold">S1 HTTP, %d span(s)/request: requests/s</text>' % (x0, y0 + 12, spans))
        base_y = y0 + panel_h
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (x0, base_y, x0 + panel_w, base_y))
        gw = panel_w / max(1, len(conns))
        for j, c in enumerate(conns):
            for k, s in enumerate(SERVERS):
                r = find(rows, s, spans, c)
                if not r:
                    continue
                h = (panel_h - 40) * r["requests_per_second"] / top
                bx = x0 + j * gw + 8 + k * (gw - 16) / 3
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %d conns: %.0f req/s</title></rect>' % (
                    bx, base_y - h, (gw - 16) / 3 - 2, h, COLORS[k], s, c, r["requests_per_second"]))
            b, g = find(rows, SERVERS[0], spans, c), find(rows, SERVERS[2], spans, c)
            if b and g and b["requests_per_second"]:
                out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#1565c0">%.0f%%</text>' % (
                    x0 + j * gw + gw / 2, y0 + 30, 100 * g["requests_per_second"] / b["requests_per_second"]))
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%d conn</text>' % (x0 + j * gw + gw / 2, base_y + 14, c))
        out.append('<text x="%d" y="%d" fill="#555">top: %s req/s; %% = group / baseline</text>' % (x0, base_y + 30, fmt(top)))
    ly = 320
    for k, s in enumerate(SERVERS):
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>' % (20 + k * 260, ly, COLORS[k], 36 + k * 260, ly + 10, s))
    s3 = res.get("s3")
    if s3:
        x0, y0 = 20, 370
        out.append('<text x="%d" y="%d" font-weight="bold">S3 end to end, %d-span requests: spans/s</text>' % (x0, y0, s3["spans_per_request"]))
        bars = [("SQLite ceiling (direct inserts)", s3["ceiling"]["spans_per_second"], "#9e9e9e")]
        if s3.get("saturation"):
            bars.append(("store drain under saturation", s3["saturation"]["drain_spans_per_second"], "#64b5f6"))
        for h in s3.get("holds", []):
            bars.append(("held %.0f%% of drain (%s)" % (h["fraction_of_drain"] * 100, "bounded" if h["bounded"] else "growing"),
                         h["held_spans_per_second"], "#1565c0" if h["bounded"] else "#e57373"))
        top = max(v for _, v, _ in bars) or 1
        for i, (label, v, color) in enumerate(bars):
            y = y0 + 15 + i * 26
            w = 520 * v / top
            out.append('<rect x="%d" y="%d" width="%.1f" height="18" fill="%s"/>' % (x0 + 230, y, w, color))
            out.append('<text x="%d" y="%d">%s</text>' % (x0, y + 13, label))
            out.append('<text x="%.1f" y="%d">%s (%.0f%% of ceiling)</text>' % (x0 + 235 + w, y + 13, fmt(v), 100 * v / s3["ceiling"]["spans_per_second"]))
    alt = res.get("s1_alternating") or []
    if alt:
        x0, y0 = 20, 610
        out.append('<text x="%d" y="%d" font-weight="bold">S1b, the target point (10 spans, 64 connections), servers alternating: requests/s</text>' % (x0, y0))
        top = max(r["requests_per_second"] for r in alt) or 1
        for rnd in sorted({r["round"] for r in alt}):
            by = {r["server"]: r for r in alt if r["round"] == rnd}
            y = y0 + 10 + (rnd - 1) * 30
            out.append('<text x="%d" y="%d">round %d</text>' % (x0, y + 17, rnd))
            for k, sv in enumerate(SERVERS):
                r = by.get(sv)
                if not r:
                    continue
                w = 230 * r["requests_per_second"] / top
                bx = x0 + 60 + k * 250
                out.append('<rect x="%d" y="%d" width="%.1f" height="10" fill="%s"><title>%s: %.0f req/s</title></rect>' % (
                    bx, y + 8, w, COLORS[k], sv, r["requests_per_second"]))
            if by.get(SERVERS[0]) and by.get(SERVERS[2]):
                out.append('<text x="%d" y="%d" fill="#1565c0">group / baseline %.0f%%</text>' % (
                    x0 + 820, y + 17, 100 * by[SERVERS[2]]["requests_per_second"] / by[SERVERS[0]]["requests_per_second"]))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def insert_into_benchmarks(md):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    heading = md.splitlines()[0]
    # A section for the same run replaces itself; otherwise the new one goes above the first section.
    m = re.search(r"^## ", text, re.M)
    if heading in text:
        start = text.index(heading)
        nxt = re.search(r"^## ", text[start + len(heading):], re.M)
        end = start + len(heading) + nxt.start() if nxt else len(text)
        text = text[:start] + md + "\n" + text[end:]
    else:
        text = text[:m.start()] + md + "\n" + text[m.start():]
    open(path, "w").write(text)


def write(res, out_dir, benchmarks_md=True):
    md = markdown(res)
    with open(os.path.join(out_dir, "services-results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "services-results.svg"), "w") as f:
        f.write(svg(res))
    if benchmarks_md:
        insert_into_benchmarks(md)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = args[0] if args else os.path.join(ROOT, "docs", "bench", "services-results.json")
    write(json.load(open(path)), os.path.dirname(os.path.abspath(path)), "--no-benchmarks-md" not in sys.argv)
