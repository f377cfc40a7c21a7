/// Reads and writes the `.checkpoint` file atomically: write a temporary file, fsync it, rename
/// it over the old one, fsync the directory. A crash at any point leaves the old or the new
/// checkpoint, never a mix.
///
/// The temporary file, `.checkpoint.next`, is created ahead of time (right after the previous
/// checkpoint, in the block the old checkpoint file just freed), so a checkpoint rewrites bytes
/// that are already allocated and still works on a filesystem with zero bytes free. That
/// matters: a checkpoint is how a full WAL frees space.
enum CheckpointFile {
    static let standbyName = Format.checkpointFileName + ".next"

    enum LoadResult: Equatable {
        case found(CheckpointRecord)
        case missing
        case corrupt(String)
    }

    static func load(directory: String) throws -> LoadResult {
        let path = directory + "/" + Format.checkpointFileName
        let file: OpenFile
        do {
            file = try OpenFile.open(path, writable: false)
        } catch let error as WALError where error.kind == .notFound {
            return .missing
        }
        defer { file.closeQuietly() }
        var bytes = [UInt8](repeating: 0, count: Format.checkpointSize + 1)
        let count = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        guard count == Format.checkpointSize || count == Format.checkpointSizeV1 else {
            return .corrupt("it is \(count) bytes long, expected \(Format.checkpointSize) (or \(Format.checkpointSizeV1), version 1)")
        }
        switch bytes[0..<count].withUnsafeBytes({ CheckpointRecord.decode($0) }) {
        case .success(let record): return .found(record)
        case .failure(.unsupportedVersion(let version)):
            throw WALError(.unsupportedVersion(found: version, supported: Format.checkpointVersion), path: path, operation: "open",
                           hint: "The checkpoint was written by a newer SignalWAL (format \(version)); this build reads format \(Format.checkpointVersion). Run the newer version, or restore a backup made by this one.")
        case .failure(let failure): return .corrupt("\(failure)")
        }
    }

    static func store(_ lsn: UInt64, floor: UInt64 = 0, floorGapUnissued: Bool = false, directory: String, access: FileAccess = .owner) throws {
        let path = directory + "/" + Format.checkpointFileName
        let standby = directory + "/" + standbyName
        let created = !FileSystem.kind(of: standby).exists
        let file = try OpenFile.open(standby, writable: true, create: true, mode: access.fileMode)
        do {
            // Same size every time: the write lands in blocks the file already has.
            try file.write(CheckpointRecord(lsn: lsn, floor: floor, floorGapUnissued: floorGapUnissued).encoded(), at: 0)
            try file.sync()
            try file.close()
        } catch {
            file.closeQuietly()
            if created { try? FileSystem.remove(standby) }
            throw error
        }
        try FileSystem.rename(standby, to: path)
        try FileSystem.syncDirectory(directory)
        prepareStandby(directory: directory, access: access)
    }

    /// Creates the next checkpoint's file now, while the block the old checkpoint freed is
    /// available. Best effort: if it fails, the next checkpoint creates it.
    static func prepareStandby(directory: String, access: FileAccess = .owner) {
        let standby = directory + "/" + standbyName
        guard let file = try? OpenFile.open(standby, writable: true, create: true, mode: access.fileMode) else { return }
        defer { file.closeQuietly() }
        do {
            try file.write([UInt8](repeating: 0, count: Format.checkpointSize), at: 0)
            try file.sync()
            try FileSystem.syncDirectory(directory)
        } catch {
            file.closeQuietly()
            try? FileSystem.remove(standby)
        }
    }
}
