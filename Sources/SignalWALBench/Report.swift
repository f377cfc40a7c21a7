import Foundation

/// Turns a ``CompareBenchmark/Results`` into the Markdown table, the targets check and an SVG.
public enum CompareReport {
    public static func markdown(_ results: CompareBenchmark.Results) -> String {
        func number(_ value: Double) -> String {
            let formatter = NumberFormatter()
            formatter.numberStyle = .decimal
            formatter.maximumFractionDigits = 0
            return formatter.string(from: NSNumber(value: value)) ?? "\(Int(value))"
        }
        func ratio(_ a: Double, _ b: Double?) -> String {
            guard let b, b > 0 else { return "-" }
            return String(format: "%.2fx", a / b)
        }
        var lines: [String] = []
        lines.append("Run: \(results.date), \(results.machine), \(Int(results.seconds)) s per measurement, 1 KiB records.")
        lines.append("")
        lines.append("| system | policy | backend | appenders | records/s | MB/s | p50 us | p99 us | records/flush | write ampl. | vs RocksDB |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        let rocks = Dictionary(uniqueKeysWithValues: results.rocksdb.map { ($0.threads, $0.opsPerSecond) })
        for r in results.signalwal {
            lines.append("| SignalWAL | \(r.policy) | \(r.backend) | \(r.appenders) | \(number(r.recordsPerSecond)) | \(String(format: "%.1f", r.mbPerSecond)) | \(String(format: "%.0f", r.p50Us)) | \(String(format: "%.0f", r.p99Us)) | \(r.policy == "group" ? String(format: "%.1f", r.meanRecordsPerFlush) : "-") | \(r.writeAmplification.map { String(format: "%.2f", $0) } ?? "n/a") | \(r.policy == "group" ? ratio(r.recordsPerSecond, rocks[r.appenders]) : "-") |")
        }
        for r in results.rocksdb {
            lines.append("| RocksDB db_bench fillrandom --sync=1 | sync | WAL | \(r.threads) | \(number(r.opsPerSecond)) | \(String(format: "%.1f", r.opsPerSecond * 1040 / 1e6)) | - | - | - | - | 1.00x |")
        }
        for r in results.small {
            lines.append("| SignalWAL (\(r.recordSize) B records) | \(r.policy) | \(r.backend) | \(r.appenders) | \(number(r.recordsPerSecond)) | \(String(format: "%.1f", r.mbPerSecond)) | \(String(format: "%.0f", r.p50Us)) | \(String(format: "%.0f", r.p99Us)) | - | \(r.writeAmplification.map { String(format: "%.2f", $0) } ?? "n/a") | - |")
        }
        for fio in [results.fioSync4k, results.fioBatch].compactMap({ $0 }) {
            lines.append("| fio \(fio.name) | fdatasync | psync | 1 | \(number(fio.opsPerSecond)) flushes/s | \(String(format: "%.1f", fio.mbPerSecond)) | \(String(format: "%.0f", fio.p50Us)) | - | - | 1.00 | - |")
        }
        lines.append("")
        lines.append(contentsOf: targets(results).map { "- \($0)" })
        if let big = results.small.filter({ $0.recordSize == 4096 }).max(by: { $0.mbPerSecond < $1.mbPerSecond }),
           let tiny = results.small.filter({ $0.recordSize == 128 }).max(by: { $0.recordsPerSecond < $1.recordsPerSecond }) {
            lines.append("- P3: 1 appender, \(big.backend) \(big.policy): \(number(big.mbPerSecond)) MB/s at 4 KiB (target 1,000: \(big.mbPerSecond >= 1000 ? "met" : "NOT met")); \(tiny.backend) \(tiny.policy): \(number(tiny.recordsPerSecond)) records/s at 128 B (target 3,000,000: \(tiny.recordsPerSecond >= 3_000_000 ? "met" : "NOT met"))")
        }
        if let replay = results.replay {
            lines.append("- P4: replay (warm cache, CRC-verified) \(number(replay.mbPerSecond)) MB/s over \(replay.bytes / 1_000_000) MB (target 1,000: \(replay.mbPerSecond >= 1000 ? "met" : "NOT met")); open took \(String(format: "%.0f", replay.openMs)) ms.")
        }
        if let big = results.tenGiB {
            let limit = (64 << 20) + 64 << 20
            lines.append("- P5: peak RSS \(big.maxRssBytes >> 20) MiB while writing \(big.bytesAppended >> 30) GiB with 64 MiB segments (target below \(limit >> 20) MiB: \(big.maxRssBytes < limit ? "met" : "NOT met"))")
        }
        for note in results.notes { lines.append("- Note: \(note)") }
        return lines.joined(separator: "\n")
    }

    /// The issue's targets, each computed from this run, met or not.
    public static func targets(_ results: CompareBenchmark.Results) -> [String] {
        var out: [String] = []
        let backends = results.signalwal.reduce(into: [String]()) { if !$0.contains($1.backend) { $0.append($1.backend) } }
        for backend in backends { out += targets(results, backend: backend) }
        return out
    }

    private static func targets(_ results: CompareBenchmark.Results, backend: String) -> [String] {
        var out: [String] = []
        func durable(_ appenders: Int) -> DurableBenchmark.Result? {
            results.signalwal.first { $0.policy == "group" && $0.backend == backend && $0.appenders == appenders }
        }
        let rocks64 = results.rocksdb.first { $0.threads == 64 }?.opsPerSecond
        if let d = durable(64), let rocks64 {
            let vsRocks = d.recordsPerSecond / rocks64
            var text = "P1 (\(backend)): 64 durable appenders: \(String(format: "%.2f", vsRocks))x RocksDB at 64 threads (target 5x: \(vsRocks >= 5 ? "met" : "NOT met"))"
            if let fio = results.fioBatch {
                let share = d.mbPerSecond / fio.mbPerSecond
                text += "; \(String(format: "%.0f", share * 100))% of fio's write+fdatasync bandwidth at \(fio.blockSize / 1024) KiB per flush (target 60%: \(share >= 0.6 ? "met" : "NOT met"))"
            }
            out.append(text)
        }
        if let d = durable(1), let fio = results.fioSync4k {
            let ratio = d.p50Us / fio.p50Us
            out.append("P2 (\(backend)): 1 durable appender p50 \(String(format: "%.0f", d.p50Us)) us = \(String(format: "%.2f", ratio))x fio's 4 KiB write+fdatasync p50 \(String(format: "%.0f", fio.p50Us)) us (target at most 1.2x: \(ratio <= 1.2 ? "met" : "NOT met"))")
        }
        let amplifications = results.signalwal.filter { $0.policy == "group" && $0.backend == backend }.compactMap { r in r.writeAmplification.map { (r.appenders, $0) } }
        if !amplifications.isEmpty {
            let worst = amplifications.max { $0.1 < $1.1 }!
            out.append("P2b (\(backend)): write amplification in durable runs: \(amplifications.map { "\($0.0) appenders \(String(format: "%.2f", $0.1))" }.joined(separator: ", ")) (target at most 1.2 everywhere: \(worst.1 <= 1.2 ? "met" : "NOT met"))")
        }
        return out
    }

    /// Throughput against appenders: SignalWAL (group commit), RocksDB, and the fio ceiling
    /// (its bandwidth at SignalWAL's batch size, in 1 KiB records per second).
    public static func svg(_ results: CompareBenchmark.Results) -> String {
        let width = 640.0, height = 400.0, left = 80.0, bottom = 50.0, top = 30.0, right = 160.0
        let xs = [1, 16, 64]
        var series: [(String, String, [(Int, Double)])] = []
        series.append(("SignalWAL group (uring)", "#2ca02c", results.signalwal.filter { $0.policy == "group" && $0.backend == "uring" }.map { ($0.appenders, $0.recordsPerSecond) }))
        series.append(("SignalWAL group (mmap)", "#1f77b4", results.signalwal.filter { $0.policy == "group" && $0.backend == "mmap" }.map { ($0.appenders, $0.recordsPerSecond) }))
        series.append(("RocksDB sync=1", "#d62728", results.rocksdb.map { ($0.threads, $0.opsPerSecond) }))
        if let fio = results.fioBatch {
            let ceiling = fio.mbPerSecond * 1e6 / 1048
            series.append(("fio ceiling", "#7f7f7f", xs.map { ($0, ceiling) }))
        }
        let maxY = max(1, series.flatMap { $0.2.map(\.1) }.max() ?? 1) * 1.1
        func x(_ appenders: Int) -> Double {
            left + (log2(Double(appenders)) / log2(64)) * (width - left - right)
        }
        func y(_ value: Double) -> Double { height - bottom - value / maxY * (height - bottom - top) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(left)\" y=\"18\" font-size=\"14\">Durable 1 KiB appends per second (\(results.date.prefix(10)))</text>\n"
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        for value in xs {
            svg += "<text x=\"\(x(value))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(value)</text>\n"
        }
        svg += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">appenders (threads)</text>\n"
        for step in 0...4 {
            let value = maxY / 1.1 * Double(step) / 4
            svg += "<text x=\"\(left - 6)\" y=\"\(y(value) + 4)\" text-anchor=\"end\">\(Int(value / 1000))k</text>\n"
            svg += "<line x1=\"\(left)\" y1=\"\(y(value))\" x2=\"\(width - right)\" y2=\"\(y(value))\" stroke=\"#eeeeee\"/>\n"
        }
        for (index, (name, color, points)) in series.enumerated() where !points.isEmpty {
            let path = points.sorted { $0.0 < $1.0 }.map { "\(x($0.0)),\(y($0.1))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(path)\"/>\n"
            for point in points { svg += "<circle cx=\"\(x(point.0))\" cy=\"\(y(point.1))\" r=\"3\" fill=\"\(color)\"/>\n" }
            let legendY = top + 20 + Double(index) * 18
            svg += "<rect x=\"\(width - right + 10)\" y=\"\(legendY - 9)\" width=\"12\" height=\"3\" fill=\"\(color)\"/>\n"
            svg += "<text x=\"\(width - right + 28)\" y=\"\(legendY - 4)\">\(name)</text>\n"
        }
        return svg + "</svg>\n"
    }
}
