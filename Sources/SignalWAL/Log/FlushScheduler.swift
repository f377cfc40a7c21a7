/// When the committer flushes, and what a flush covers, per policy: the one table behind every
/// scheduling decision (docs/DESIGN.md, "When a flush runs").
///
/// | policy | backend | the flush thread wakes when | a flush covers | syncs | publishes durable |
/// |---|---|---|---|---|---|
/// | any | any | a flush failed: only to stop | nothing | - | - |
/// | any | any | an appender needs room (`roomWanted`) and something is unflushed | everything written and staged | as the row below | as the row below |
/// | `.groupCommit` | any | something is unflushed, or closing | everything written | yes | yes |
/// | `.interval` | any | the interval passed, or closing | everything written | yes | yes |
/// | `.none` | mapped | a sealed file waits, or closing | sealed files (everything when closing) | yes | only when closing |
/// | `.none` | staged | something is unflushed, or closing | everything written | sealed segments; everything when closing | yes (written to the file) |
struct FlushScheduler {
    let policy: DurabilityPolicy
    let staged: Bool

    /// What the scheduler looks at: a snapshot of the committer's state.
    struct Inputs {
        var written: LogEnd
        var stagedTo: UInt64
        var durable: LogEnd
        var flushedStream: UInt64
        var sealedWaiting: Bool
        var roomWanted: Bool
        var stopping: Bool
        var failed: Bool
        var finalSynced: Bool
    }

    /// One flush: what to write and sync, and what to publish when it completes.
    struct Job {
        var target: LogEnd
        /// Staged backend: write through this stream position (may be past `target`, inside a
        /// batch still being copied: those bytes reach the disk, the batch's LSNs are not
        /// published).
        var stream: UInt64
        var sync: Bool
        /// Mapped backend: sync only the sealed files (the active one is not covered).
        var sealedOnly: Bool
        var publish: Bool
    }

    private func unflushed(_ inputs: Inputs) -> Bool {
        inputs.written.lsn > inputs.durable.lsn || (staged && inputs.stagedTo > inputs.flushedStream)
    }

    /// Whether the flush thread has work now (it also wakes on the interval timer).
    func shouldWake(_ inputs: Inputs) -> Bool {
        if inputs.failed { return inputs.stopping }
        if inputs.roomWanted && unflushed(inputs) { return true }
        switch policy {
        case .groupCommit: return inputs.stopping || unflushed(inputs)
        case .interval: return inputs.stopping
        case .none: return inputs.stopping || (staged ? unflushed(inputs) : inputs.sealedWaiting)
        }
    }

    /// The flush to run now, or nil for none.
    func job(_ inputs: Inputs) -> Job? {
        guard !inputs.failed else { return nil }
        let stream = max(inputs.stagedTo, inputs.written.stream)
        switch (policy, staged) {
        case (.none, false):
            if inputs.stopping {
                guard unflushed(inputs) || inputs.sealedWaiting else { return nil }
                return Job(target: inputs.written, stream: 0, sync: true, sealedOnly: false, publish: true)
            }
            guard inputs.sealedWaiting else { return nil }
            return Job(target: inputs.durable, stream: 0, sync: true, sealedOnly: true, publish: false)
        case (.none, true):
            if unflushed(inputs) { return Job(target: inputs.written, stream: stream, sync: inputs.stopping, sealedOnly: false, publish: true) }
            if inputs.stopping && !inputs.finalSynced {
                return Job(target: inputs.written, stream: stream, sync: true, sealedOnly: false, publish: true)
            }
            return nil
        default:
            guard unflushed(inputs) || (!staged && inputs.sealedWaiting) else { return nil }
            return Job(target: inputs.written, stream: stream, sync: true, sealedOnly: false, publish: true)
        }
    }

    /// Whether a closing committer may stop: nothing left to flush (or a flush failed).
    func mayStop(_ inputs: Inputs) -> Bool {
        if inputs.failed { return true }
        if unflushed(inputs) || inputs.sealedWaiting { return false }
        return !(staged && policy == .none && !inputs.finalSynced)
    }
}
