import SignalDBIngestFuzzing

/// libFuzzer's entry point for request decoding, inflate and the envelope (see
/// IngestFuzzInput); a broken property stops the fuzzer with the input saved.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIngest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let problems = IngestFuzzInput.run(UnsafeRawBufferPointer(start: data, count: size))
    if !problems.isEmpty {
        fatalError("ingest broke a property: \(problems.joined(separator: "; "))")
    }
    return 0
}
