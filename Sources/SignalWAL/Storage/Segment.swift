/// One segment file, open and mapped.
///
/// The mapping covers the whole fixed-size file. A segment is only mapped writable after the
/// allocator has allocated and written every block of it, so stores can never fault on a full
/// filesystem.
final class Segment: Sendable {
    let sequence: UInt64
    let epoch: UInt64
    /// The header's flags (``SegmentFlags/recycled``), kept when the first LSN is written.
    let flags: SegmentFlags
    let size: Int
    let path: String
    let file: OpenFile
    let mapping: MappedRegion

    private init(sequence: UInt64, epoch: UInt64, flags: SegmentFlags = [], path: String, file: OpenFile, mapping: MappedRegion) {
        self.sequence = sequence
        self.epoch = epoch
        self.flags = flags
        self.size = mapping.length
        self.path = path
        self.file = file
        self.mapping = mapping
    }

    /// Opens and maps a segment whose header has already been validated.
    static func open(path: String, header: SegmentHeader, writable: Bool) throws -> Segment {
        let file = try OpenFile.open(path, writable: writable)
        do {
            let mapping = try MappedRegion(file: file, length: Int(header.segmentSize), writable: writable)
            return Segment(sequence: header.sequence, epoch: header.epoch, flags: header.flags, path: path, file: file, mapping: mapping)
        } catch {
            file.closeQuietly()
            throw error
        }
    }

    /// Maps a segment read-only for a reader and closes the descriptor at once: the mapping
    /// keeps the file alive, and readers should not hold descriptors.
    static func openForReading(path: String, sequence: UInt64, epoch: UInt64, size: Int, readahead: Bool) throws -> Segment {
        let file = try OpenFile.open(path, writable: false)
        defer { file.closeQuietly() }
        let mapping = try MappedRegion(file: file, length: size, writable: false, readahead: readahead)
        return Segment(sequence: sequence, epoch: epoch, path: path, file: file, mapping: mapping)
    }

    /// Records the first LSN in the header. The header page is flushed together with the first
    /// record by the next flush of this file, so the two become durable together.
    func writeHeader(firstLSN: UInt64) {
        let header = SegmentHeader(sequence: sequence, firstLSN: firstLSN, segmentSize: UInt64(size), epoch: epoch, flags: flags)
        header.encoded().withUnsafeBytes { mapping.store($0, at: 0) }
    }

    /// Flushes every dirty page of the file (records and header) to stable storage.
    func flush() throws {
        try file.dataSync()
    }

    func close() {
        file.closeQuietly()
    }
}
