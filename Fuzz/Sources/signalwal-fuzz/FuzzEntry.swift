#if canImport(Glibc)
import Glibc
#endif
import SignalWALFuzzing

/// libFuzzer's entry point: one input becomes a WAL directory on tmpfs, recovery runs on it
/// twice, and any broken invariant stops the fuzzer with the input saved as a crash file.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecovery(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let problems = RecoveryFuzzInput.run(input, scratch: "/dev/shm/signalwal-fuzz")
    if !problems.isEmpty {
        fatalError("recovery broke an invariant: \(problems.joined(separator: "; "))")
    }
    return 0
}
