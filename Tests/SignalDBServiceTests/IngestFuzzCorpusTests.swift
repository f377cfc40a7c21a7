import Foundation
import SignalDBIngestFuzzing
import XCTest

/// Replays the ingest fuzzer's committed corpus (`Fuzz/ingest-corpus`) and random mutations of
/// it through the fuzz target's own body, so `make test` checks its properties without
/// libFuzzer (`make fuzz-ingest` explores further).
final class IngestFuzzCorpusTests: XCTestCase {
    func testCorpusAndMutationsKeepEveryProperty() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let corpus = root.appendingPathComponent("Fuzz/ingest-corpus").path
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus).sorted()
        XCTAssertGreaterThan(names.count, 10)
        for name in names {
            let seed = try [UInt8](Data(contentsOf: URL(fileURLWithPath: corpus + "/" + name)))
            for round in 0..<20 {
                var input = seed
                if round > 0 && input.count > 1 {
                    // Flip, cut or duplicate a few bytes after the selector.
                    for _ in 0..<Int.random(in: 1...4) {
                        let i = Int.random(in: 1..<input.count)
                        switch Int.random(in: 0...2) {
                        case 0: input[i] ^= UInt8.random(in: 1...255)
                        case 1: input.removeSubrange(i..<min(input.count, i + Int.random(in: 1...8)))
                        default: input.insert(contentsOf: input[i..<min(input.count, i + 8)], at: i)
                        }
                        if input.count < 2 { break }
                    }
                }
                let problems = input.withUnsafeBytes { IngestFuzzInput.run($0) }
                XCTAssertEqual(problems, [], "\(name) round \(round)")
            }
        }
    }
}
