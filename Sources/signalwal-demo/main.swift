// `make run`: a demo of SignalWAL on embedded defaults, and the child process the tests kill.
//
//   signalwal-demo                          the demo, under .wal/demo
//   signalwal-demo child DIR SEED THREADS [backend=mmap|uring] [policy=group|interval:10ms|none]
//                  [checkpoint-ms=N] [pause=OP:SUFFIX:NTH] [batches=N] [max-record=BYTES]
//                                           append until killed, printing "ack LSN THREAD INDEX AT"
//                                           (and "checkpoint LSN AT" every N ms); with pause=, the
//                                           NTH system call OP on a path ending in SUFFIX first
//                                           prints "pause OP PATH AT" and waits 2 s (for a cut);
//                                           with batches=N, batches of 1-N records (payloads up
//                                           to max-record bytes), "batch LSN COUNT THREAD INDEX AT"
//   signalwal-demo open-as UID DIR          drop to UID, try WAL.open(DIR), print the outcome
//   signalwal-demo fuzz-seeds DIR           write the recovery fuzzer's seed inputs into DIR
#if canImport(Glibc)
import Glibc
#endif
import SignalWAL
import SignalWALFuzzing
import SignalWALWorkload
import Synchronization

let arguments = CommandLine.arguments

func fail(_ message: String) -> Never {
    let line = "signalwal-demo: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(2)
}

func smallSegments() -> Configuration {
    var configuration = Configuration()
    configuration.segmentSize = 1 << 20
    return configuration
}

switch arguments.dropFirst().first {
case "child":
    guard arguments.count >= 5, let seed = UInt64(arguments[3]), let threads = Int(arguments[4]) else {
        fail("usage: signalwal-demo child DIR SEED THREADS [backend=mmap|uring] [policy=group|interval:10ms|none] [checkpoint-ms=N] [pause=OP:SUFFIX:NTH] [batches=N] [max-record=BYTES]")
    }
    var configuration = smallSegments()
    var checkpointEvery: Duration?
    var batchRecords: Int?
    var maxLength = Workload.maxPayload
    for option in arguments.dropFirst(5) {
        let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { fail("child option \(option) is not key=value") }
        switch parts[0] {
        case "backend":
            guard let backend = IOBackend(rawValue: parts[1]) else { fail("backend must be mmap or uring") }
            configuration.backend = backend
        case "policy":
            guard let policy = DurabilityPolicy(argument: parts[1]) else { fail("policy must be group, interval:<n>ms or none") }
            configuration.durability = policy
        case "checkpoint-ms":
            guard let ms = Int(parts[1]), ms > 0 else { fail("checkpoint-ms must be a positive number") }
            checkpointEvery = .milliseconds(ms)
        case "batches":
            guard let count = Int(parts[1]), count > 0, count <= WAL.maxBatchCount else { fail("batches must be 1 to \(WAL.maxBatchCount)") }
            batchRecords = count
        case "max-record":
            guard let bytes = Int(parts[1]), bytes >= 8, bytes <= configuration.effectiveMaxRecordSize else {
                fail("max-record must be 8 to \(configuration.effectiveMaxRecordSize) bytes")
            }
            maxLength = bytes
        case "pause":
            let pause = parts[1].split(separator: ":").map(String.init)
            guard pause.count == 3, let operation = SyscallOperation(rawValue: pause[0]), let nth = Int(pause[2]) else {
                fail("pause must be OP:SUFFIX:NTH with OP one of \(SyscallOperation.allCases.map(\.rawValue))")
            }
            pauseBeforeCall(operation, pathSuffix: pause[1], nth: nth)
        default:
            fail("unknown child option \(parts[0])")
        }
    }
    do {
        let wal = try WAL.open(directory: arguments[2], configuration: configuration)
        Workload.appendUntilKilled(wal: wal, seed: seed, threads: threads, checkpointEvery: checkpointEvery,
                                   batchRecords: batchRecords, maxLength: maxLength)
    } catch {
        fail("\(error)")
    }

case "open-as":
    guard arguments.count == 4, let uid = UInt32(arguments[2]) else { fail("usage: signalwal-demo open-as UID DIR") }
    // Drop privileges before anything else runs, while the process has one thread.
    guard setgroups(0, nil) == 0, setgid(uid) == 0, setuid(uid) == 0 else { fail("cannot switch to uid \(uid)") }
    do {
        let wal = try WAL.open(directory: arguments[3])
        try wal.close()
        print("opened")
    } catch let error as WALError {
        print("kind=\(error.kind)")
        print(error.description)
        exit(3)
    }

case "fuzz-seeds":
    guard arguments.count == 3 else { fail("usage: signalwal-demo fuzz-seeds DIR") }
    do {
        for (index, seed) in try RecoveryFuzzInput.seeds(scratch: "/tmp/signalwal-fuzz-seeds").enumerated() {
            let path = arguments[2] + "/seed-\(index)"
            let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
            guard fd >= 0, write(fd, seed, seed.count) == seed.count else { fail("cannot write \(path)") }
            close(fd)
            print(path)
        }
    } catch {
        fail("\(error)")
    }

case nil:
    runDemo()

default:
    fail("unknown command \(arguments[1]); run without arguments for the demo")
}

func runDemo() {
    let directory = ".wal/demo"
    let seed = UInt64.random(in: 1 ... .max)
    print("SignalWAL demo: appending from 8 threads into \(directory), then killing the writer with SIGKILL")
    // Child process: appends and reports each acknowledged LSN.
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else { fail("pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipeEnds[0])
    let childArguments = [arguments[0], "child", directory, String(seed), "8"]
    var argv: [UnsafeMutablePointer<CChar>?] = childArguments.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    guard posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ) == 0 else { fail("cannot start the child") }
    close(pipeEnds[1])

    // Read acknowledgements for a moment, then pull the plug.
    var acks: [Workload.Ack] = []
    var pending = ""
    var buffer = [UInt8](repeating: 0, count: 65536)
    let started = Workload.monotonicNanoseconds()
    while Workload.monotonicNanoseconds() - started < 1_500_000_000 {
        let count = read(pipeEnds[0], &buffer, buffer.count)
        if count <= 0 { break }
        pending += String(decoding: buffer[0..<count], as: UTF8.self)
        while let newline = pending.firstIndex(of: "\n") {
            if let ack = Workload.Ack(line: pending[..<newline]) { acks.append(ack) }
            pending = String(pending[pending.index(after: newline)...])
        }
    }
    kill(pid, SIGKILL)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    close(pipeEnds[0])
    print("writer acknowledged \(acks.count) records in 1.5 s, then was killed with SIGKILL")

    // Recover and check every acknowledged record.
    do {
        let wal = try WAL.open(directory: directory, configuration: smallSegments())
        let report = wal.recoveryReport
        print("reopened: recovered \(report.recordsRecovered) records in \(report.segmentsScanned) segments; torn tails truncated: \(report.tornTails) (\(report.truncatedBytes) bytes zeroed); damaged ranges skipped: \(report.skippedRanges); quarantined segments: \(report.quarantinedSegments.count)")
        var byLSN: [LSN: [UInt8]] = [:]
        var invented = 0
        for record in try wal.readVisible(from: wal.checkpointLSN + 1).records {
            if Workload.identify(record.payload, seed: seed) == nil { invented += 1 }
            byLSN[record.lsn] = record.payload
        }
        var missing = 0
        for ack in acks where byLSN[ack.lsn] != Workload.payload(seed: seed, thread: ack.thread, index: ack.index) {
            missing += 1
        }
        print("verified: \(acks.count - missing) of \(acks.count) acknowledged records present byte-for-byte; \(missing) missing; \(invented) records that were never appended")
        // Consume everything so the next run starts small: segments below the checkpoint are reused.
        try wal.checkpoint(upTo: wal.visibleLSN)
        try wal.close()
        if missing > 0 || invented > 0 { exit(1) }
        print("ok: nothing acknowledged was lost")
    } catch {
        fail("\(error)")
    }
}

/// Makes the `nth` call of `operation` on a path ending in `pathSuffix` announce itself and wait
/// before it runs, so a parent can cut the power at exactly that step (segment preparation,
/// reuse, a checkpoint write). The call then proceeds: after a cut it fails, as it would.
func pauseBeforeCall(_ operation: SyscallOperation, pathSuffix: String, nth: Int) {
    let seen = Atomic<Int>(0)
    Syscall.setFaultHook { called, path in
        guard called == operation, path.hasSuffix(pathSuffix),
              seen.add(1, ordering: .relaxed).newValue == nth else { return nil }
        Workload.emit("pause \(called.rawValue) \(path) \(Workload.monotonicNanoseconds())\n")
        usleep(2_000_000)
        return nil
    }
}
