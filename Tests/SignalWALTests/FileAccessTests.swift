#if canImport(Glibc)
import Glibc
#endif
import XCTest
@testable import SignalWAL

/// Telemetry can carry personal data: what the WAL creates is private unless asked otherwise.
final class FileAccessTests: XCTestCase {
    func mode(_ path: String) -> mode_t {
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0, path)
        return st.st_mode & 0o7777
    }

    /// Opens a WAL, fills more than a segment, checkpoints (so a standby checkpoint file is
    /// made), closes; returns every path it created.
    func exercise(_ directory: String, access: FileAccess?) throws -> [String] {
        var configuration = testConfiguration(spares: 1)
        if let access { configuration.fileAccess = access }
        let wal = try WAL.open(directory: directory, configuration: configuration)
        var last: LSN = 0
        for _ in 0..<15 { last = try wal.append([UInt8](repeating: 3, count: 100_000)) }
        _ = try wal.checkpoint(upTo: last)
        try wal.close()
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        XCTAssertTrue(names.contains(Format.lockFileName))
        XCTAssertTrue(names.contains(Format.checkpointFileName))
        XCTAssertTrue(names.contains(Format.quarantineDirectoryName))
        XCTAssertGreaterThanOrEqual(names.filter { Format.segmentSequence(fromFileName: $0) != nil }.count, 2)
        return names.map { directory + "/" + $0 }
    }

    func testNewWALIsPrivateByDefault() throws {
        let parent = makeTemporaryDirectory(self)
        let directory = parent + "/nested/wal"
        for path in try exercise(directory, access: nil) {
            let isDirectory = FileSystem.kind(of: path).isDirectory
            XCTAssertEqual(mode(path), isDirectory ? 0o700 : 0o600, path)
        }
        XCTAssertEqual(mode(directory), 0o700)
        XCTAssertEqual(mode(parent + "/nested"), 0o700, "missing parents are private too")
    }

    /// Under a strict umask (077) the group bits asked for must still be there.
    func testGroupAccessGivesOperatorsReadDespiteTheUmask() throws {
        let previous = umask(0o077)
        defer { umask(previous) }
        let directory = makeTemporaryDirectory(self)
        for path in try exercise(directory, access: .group) {
            let isDirectory = FileSystem.kind(of: path).isDirectory
            XCTAssertEqual(mode(path), isDirectory ? 0o750 : 0o640, path)
        }
        XCTAssertEqual(mode(directory), 0o750)
    }

    func testExistingDirectoryKeepsItsMode() throws {
        let directory = makeTemporaryDirectory(self)
        XCTAssertEqual(mkdir(directory, 0o755), 0)
        XCTAssertEqual(chmod(directory, 0o755), 0)
        _ = try exercise(directory, access: nil)
        XCTAssertEqual(mode(directory), 0o755, "an operator's directory is not changed behind their back")
        XCTAssertTrue(FileAccess.owner.grantsMore(thanDirectoryMode: 0o755))
        XCTAssertTrue(FileAccess.group.grantsMore(thanDirectoryMode: 0o755))
        XCTAssertFalse(FileAccess.group.grantsMore(thanDirectoryMode: 0o750))
        XCTAssertFalse(FileAccess.owner.grantsMore(thanDirectoryMode: 0o700))
        XCTAssertEqual(FileAccess(argument: "group"), .group)
        XCTAssertNil(FileAccess(argument: "world"))
    }
}
