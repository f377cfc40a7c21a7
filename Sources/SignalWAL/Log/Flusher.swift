/// The I/O of one flush, per backend. Runs on the committer thread only.
protocol Flusher: Sendable {
    /// Writes and syncs what `job` covers. `sealed` and `active` are the mapped backend's files.
    func run(_ job: FlushScheduler.Job, sealed: [OpenFile], active: OpenFile?) throws
}

/// ``IOBackend/mmap``: the records are in the page cache already; fdatasync each file written
/// since the last flush, sealed ones first.
struct MappedFlusher: Flusher {
    func run(_ job: FlushScheduler.Job, sealed: [OpenFile], active: OpenFile?) throws {
        for file in sealed { try file.dataSync() }
        if !job.sealedOnly, let active { try active.dataSync() }
    }
}

/// ``IOBackend/uring``: write the staged bytes with O_DIRECT, then fdatasync (see
/// ``DirectWriter/flush(upTo:sync:)``).
struct StagedFlusher: Flusher {
    let direct: DirectWriter
    func run(_ job: FlushScheduler.Job, sealed: [OpenFile], active: OpenFile?) throws {
        try direct.flush(upTo: job.stream, sync: job.sync)
    }
}
