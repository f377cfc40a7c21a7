import Foundation
import GRPCCore
import GRPCProtobuf
import Logging
import SignalDBIngest
import SignalDBProto
import SignalDBService
import SignalWAL

/// `signaldb.internal.v1.Writer/Forward`: makes an acceptor's records durable in the writer's
/// WAL, then answers with the LSNs it holds.
///
/// Rules (docs/WRITER.md, "Exactly once"):
/// - W1. Under one ordering lock, a forward's records are classified against the marks and the
///   fresh ones appended (one WAL batch, split only past the engine's batch limit) and marked,
///   so two forwards carrying the same LSN (a retry racing its original) append it once.
/// - W2. The request's `settled` LSN (the acceptor's checkpoint) moves the acceptor's floor.
/// - W4. An LSN is listed as durable only after the writer LSN holding it is durable: a held
///   record appended by a forward still in flight waits for that forward's flush.
/// Envelopes that do not parse are rejected (the acceptor dead-letters them); everything else
/// that goes wrong is an error the acceptor retries: UNAVAILABLE with RetryInfo when the
/// writer's backlog is at its bound or the disk is full.
struct ForwardService: Signaldb_Internal_V1_Writer.ServiceProtocol {
    let wal: WAL
    let marks: AcceptorMarks
    let gate: AsyncLock
    let maxBacklogBytes: Int
    let maxRecordBytes: Int
    let internalKey: String?
    let health: Health
    let metrics: WriterMetrics
    let logger: Logger
    let backpressure: BackpressureLog

    func forward(request: ServerRequest<Signaldb_Internal_V1_ForwardRequest>, context: ServerContext)
        async throws -> ServerResponse<Signaldb_Internal_V1_ForwardResponse>
    {
        if let internalKey {
            let sent = request.metadata[stringValues: "x-signaldb-internal-key"].first(where: { _ in true })
            guard let sent, Self.constantTimeEqual(sent, internalKey) else {
                metrics.forward(result: "unauthenticated", records: 0)
                throw RPCError(code: .unauthenticated, message: "x-signaldb-internal-key is missing or wrong: set SIGNALDB_INTERNAL_KEY to the same value on the acceptor and the writer")
            }
        }
        let message = request.message
        guard WriterRecord.isValidAcceptorID(message.acceptorID), message.acceptorID != DeadLetterCommands.replayAcceptorID else {
            metrics.forward(result: "invalid", records: 0)
            throw RPCError(code: .invalidArgument, message: "acceptor_id '\(message.acceptorID.prefix(40))' is not 1 to 128 characters of [A-Za-z0-9._-], or is the reserved \(DeadLetterCommands.replayAcceptorID)")
        }
        // An acceptor sends only records above its checkpoint: a settled LSN at or above one of
        // them is a broken or forged request, and believing it would drop that record.
        if let lowest = message.records.map(\.lsn).filter({ $0 > 0 }).min(), message.settledLsn >= lowest {
            metrics.forward(result: "invalid", records: 0)
            throw RPCError(code: .invalidArgument, message: "settled_lsn \(message.settledLsn) is not below every record's LSN (the lowest is \(lowest)): an acceptor sends only records above its checkpoint")
        }
        do {
            let cancellation = context.cancellation
            // gRPC reports a passed deadline or a reset stream through the context, not by
            // cancelling this task: a forward still queued behind the ordering lock then leaves
            // the queue (and frees its payload) instead of waiting its turn.
            let work = Task { try await self.take(message, abandoned: { cancellation.isCancelled }) }
            let response = try await withTaskCancellationHandler {
                try await withRPCCancellationHandler(operation: { try await work.value }, onCancelRPC: { work.cancel() })
            } onCancel: {
                work.cancel()
            }
            metrics.forward(result: "ok", records: message.records.count)
            return ServerResponse(message: response)
        } catch {
            metrics.forward(result: (error as? RPCError).map { "\($0.code)" } ?? "error", records: message.records.count)
            logger.debug("forward refused", metadata: ["acceptor": "\(message.acceptorID)", "error": "\(error)"])
            throw error
        }
    }

    /// Throws only `RPCError`s. `abandoned` tells whether the caller gave up (its deadline
    /// passed): checked once the ordering lock is held, so a request that waited out its
    /// caller's deadline appends nothing.
    func take(_ message: Signaldb_Internal_V1_ForwardRequest, abandoned: @Sendable () -> Bool = { false }) async throws -> Signaldb_Internal_V1_ForwardResponse {
        let acceptor = message.acceptorID
        var response = Signaldb_Internal_V1_ForwardResponse()
        // Valid records in the order sent, one per LSN.
        var lsns: [LSN] = []
        var envelopes: [Data] = []
        var seen = Set<LSN>()
        for record in message.records where seen.insert(record.lsn).inserted {
            if record.lsn == 0 {
                response.rejected.append(.with { $0.lsn = 0; $0.reason = "LSN 0 is never a WAL record" })
                continue
            }
            do {
                _ = try Envelope(decoding: record.envelope)
            } catch {
                response.rejected.append(.with { $0.lsn = record.lsn; $0.reason = "\(error)" })
                continue
            }
            guard record.envelope.count + WriterRecord.headerSize(acceptorID: acceptor) <= maxRecordBytes else {
                // A setting, not the data, is wrong: refuse the call (the acceptor retries) rather
                // than have the record dead-lettered.
                throw RPCError(code: .resourceExhausted, message: "the record at acceptor LSN \(record.lsn) is \(record.envelope.count) bytes, more than WRITER_MAX_RECORD_BYTES (\(maxRecordBytes)) allows: raise it (and WRITER_WAL_SEGMENT_BYTES) to at least ACCEPTOR_MAX_REQUEST_BYTES plus 1 MiB")
            }
            lsns.append(record.lsn)
            envelopes.append(record.envelope)
        }
        metrics.rejected(count: response.rejected.count)
        if !response.rejected.isEmpty {
            logger.warning("rejected forwarded records that are not valid envelopes (the acceptor dead-letters them)",
                           metadata: ["acceptor": "\(acceptor)", "count": "\(response.rejected.count)", "first": "\(response.rejected[0].reason)"])
        }
        guard !lsns.isEmpty else { return response }

        let settled = message.settledLsn
        var waitFor: LSN = 0
        var appended = 0
        var notTaken = Set<LSN>()
        do {
            try await gate.withLock(bytes: message.records.reduce(0) { $0 + $1.envelope.count }) {
                if abandoned() { throw RPCError(code: .cancelled, message: "the caller gave up while this forward waited its turn") }
                let (fresh, heldWriterLSN, beyond) = marks.classify(acceptor: acceptor, settled: settled, lsns: lsns)
                waitFor = heldWriterLSN
                // Past the span the writer remembers: not taken now; the acceptor sends them
                // again once its checkpoint has moved (the lowest fresh LSN is always in reach).
                notTaken = Set(beyond.map { lsns[$0] })
                guard !fresh.isEmpty else { return }
                if wal.liveBytes >= maxBacklogBytes { throw backlogFull() }
                // One WAL batch, or a few when the forward is larger than the engine takes at once.
                var start = 0
                while start < fresh.count {
                    var end = start, bytes = 0
                    var records: [[UInt8]] = []
                    while end < fresh.count && records.count < WAL.maxBatchCount {
                        let i = fresh[end]
                        let record = WriterRecord(acceptorID: acceptor, acceptorLSN: lsns[i], envelope: [UInt8](envelopes[i])).encoded()
                        let span = Format.recordSpan(payloadLength: record.count)
                        if !records.isEmpty && bytes + span > wal.configuration.effectiveMaxBatchBytes { break }
                        bytes += span
                        records.append(record)
                        end += 1
                    }
                    let range = try await wal.enqueue(contentsOf: records)
                    marks.appended(acceptor: acceptor, zip(fresh[start..<end].map { lsns[$0] }, range).map { ($0, $1) })
                    waitFor = max(waitFor, range.upperBound)
                    appended += records.count
                    start = end
                }
            }
            if waitFor > 0 { try await wal.waitUntilDurable(waitFor) }
        } catch let error as RPCError {
            throw error
        } catch let error as WALError {
            throw mapWALError(error)
        } catch is AsyncLock.QueueFull {
            metrics.backpressure()
            throw RPCError(GoogleRPCStatus(code: .unavailable, message: "too many forwards (or bytes) are already waiting to append; retry later",
                                           details: [.retryInfo(delay: .seconds(1))]))
        } catch is CancellationError {
            throw RPCError(code: .cancelled, message: "the forward was cancelled (its caller gave up, or the writer is stopping); whatever it appended is acknowledged to a resend")
        } catch {
            throw RPCError(code: .unavailable, message: "the writer could not take the records: \(error)")
        }
        metrics.appended(records: appended)
        if appended > 0 { backpressure.accepted() }
        metrics.duplicates(kind: "forward", count: lsns.count - appended - notTaken.count)
        if !notTaken.isEmpty {
            logger.warning("an acceptor's records are too far above its checkpoint; taking the ones in reach",
                           metadata: ["acceptor": "\(acceptor)", "settled": "\(settled)", "notTaken": "\(notTaken.count)"])
        }
        response.durableLsns = notTaken.isEmpty ? lsns : lsns.filter { !notTaken.contains($0) }
        return response
    }

    /// Compares without an early exit, so the time taken does not tell how much of a guess
    /// was right.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(truncatingIfNeeded: x.count ^ y.count)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0 && x.count == y.count
    }

    func backlogFull() -> RPCError {
        metrics.backpressure()
        backpressure.refused(reason: "backlog_full", bound: "WRITER_WAL_MAX_BYTES", detail: "\(wal.liveBytes) of \(maxBacklogBytes) bytes not yet stored")
        let retry = wal.backlogStatus.suggestedRetryAfter
        health.setReady(false, detail: "the WAL backlog (\(wal.liveBytes) bytes) is at WRITER_WAL_MAX_BYTES (\(maxBacklogBytes)): the store is behind")
        return RPCError(GoogleRPCStatus(code: .unavailable, message: "the writer's backlog is at WRITER_WAL_MAX_BYTES: its store is behind; retry later",
                                        details: [.retryInfo(delay: retry)]))
    }

    func mapWALError(_ error: WALError) -> RPCError {
        switch error.kind {
        case .backlogFull:
            return backlogFull()
        case .recordTooLarge, .invalidArgument:
            // The records fit WRITER_MAX_RECORD_BYTES but not the WAL's limits: a setting is
            // wrong, not the data (not dead-lettered; retried once the settings are fixed).
            logger.error("the WAL refused a forward's records; check WRITER_MAX_RECORD_BYTES and WRITER_WAL_SEGMENT_BYTES", metadata: ["error": "\(error)"])
            return RPCError(code: .resourceExhausted, message: "the writer's WAL refused the records (\(error)): raise WRITER_MAX_RECORD_BYTES and WRITER_WAL_SEGMENT_BYTES")
        case .outOfSpace:
            metrics.backpressure()
            backpressure.refused(reason: "out_of_space", bound: "the disk", detail: "\(error.path)")
            return RPCError(GoogleRPCStatus(code: .unavailable, message: "the writer's WAL disk is full (\(error)); retry later", details: [.retryInfo(delay: .seconds(5))]))
        default:
            if wal.failure != nil {
                health.setReady(false, detail: "the WAL failed: \(error)")
                logger.critical("the writer's WAL failed; the committer ends the process (exit 1) so that recovery runs", metadata: ["error": "\(error)"])
            }
            return RPCError(GoogleRPCStatus(code: .unavailable, message: "the writer's WAL could not append: \(error)", details: [.retryInfo(delay: .seconds(1))]))
        }
    }
}
