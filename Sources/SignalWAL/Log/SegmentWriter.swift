/// A segment taken for a batch, with what its backend needs to write it already opened, so a
/// batch can fail (a full disk, no descriptors) before it writes anything.
struct SpareSegment {
    let segment: Segment
    /// The staged backend's O_DIRECT descriptor; nil under the mapped backend.
    let directFile: OpenFile?
}

/// How records reach a segment, one implementation per backend (``MappedSegmentWriter``,
/// ``StagedSegmentWriter``). The append path is written once against this protocol and never
/// asks which backend it drives.
///
/// Used only under the WAL's append lock; one instance per WAL.
///
/// The contract, which the numbered invariants in `docs/DESIGN.md` rely on:
/// - ``seal()`` hands the active segment to the flusher as sealed before ``begin(_:firstLSN:committed:)``
///   makes the next one active, so every later LSN is published after the sealed file is in
///   some flush's list (I1).
/// - ``begin(_:firstLSN:committed:)`` writes the segment header (with the first LSN) before the
///   first record, into the same file and the same flush (I2).
/// - ``append(_:payload:committed:)`` writes whole records only; ``end(lsn:bytes:)`` describes
///   what was written, nothing more (I3).
/// - A writer that must wait for room publishes `committed` (the end of the last complete
///   batch, never part of the current one) and waits; it never publishes unwritten bytes.
protocol SegmentWriter: AnyObject {
    /// The segment records go to; nil before the first record of a new WAL.
    var active: Segment? { get }
    /// Where the next record goes in ``active``.
    var offset: Int { get }
    /// The staged writer's stream position of ``offset`` (nil for the mapped writer, which has
    /// no stream): with it the append path works out, before writing, how much staging room a
    /// whole batch needs.
    var streamPosition: UInt64? { get }
    /// Opens what writing `segment` needs.
    func prepare(_ segment: Segment) throws -> SpareSegment
    /// Hands the active segment to the flusher as sealed: no record goes to it after this.
    func seal()
    /// Makes `spare` the active segment and writes its header, first record `firstLSN`.
    func begin(_ spare: SpareSegment, firstLSN: LSN, committed: LogEnd) throws
    /// Writes one record at ``offset`` and moves past it.
    func append(_ header: RecordHeader, payload: UnsafeRawBufferPointer, committed: LogEnd) throws
    /// The log's end just past the last record written, `lsn` being that record's LSN.
    func end(lsn: LSN, bytes: UInt64) -> LogEnd
    /// Called after each batch (the mapped writer moves its page window here).
    func finishBatch()
    /// Releases the active segment (at close).
    func close()
}
