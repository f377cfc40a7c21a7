import Foundation
import XCTest
import SignalWALFuzzing

/// Replays the committed fuzz corpus (`Fuzz/corpus`) through the fuzz target's own body, so
/// every input the fuzzer found interesting, and every crash it ever found, stays a test.
final class FuzzCorpusTests: XCTestCase {
    func testCommittedFuzzCorpusRecoversCleanly() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let corpus = root.appendingPathComponent("Fuzz/corpus").path
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus).sorted()
        XCTAssertGreaterThanOrEqual(names.count, 5, "the seeds at least")
        let scratch = makeTemporaryDirectory(self)
        // Under the sanitizers (SIGNALWAL_REDUCED) a spread of 15 seeds: each costs about a second
        // there, and the plain pass and `make fuzz` replay them all.
        let step = reducedIterations ? max(1, names.count / 15) : 1
        for name in stride(from: 0, to: names.count, by: step).map({ names[$0] }) {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: corpus + "/" + name)))
            let problems = bytes.withUnsafeBytes { RecoveryFuzzInput.run($0, scratch: scratch) }
            XCTAssertEqual(problems, [], "Fuzz/corpus/\(name)")
        }
    }
}
