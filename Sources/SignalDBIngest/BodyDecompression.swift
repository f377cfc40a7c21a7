import CZlib

/// Inflates a request body under `Content-Encoding: gzip` or `deflate`, refusing to produce more
/// than `limit` bytes: the output grows in steps and decompression stops the moment it would
/// pass the limit, so a small gzip bomb never makes the acceptor hold more than the limit (plus
/// one 64 KiB step; while the output grows, the old and new buffers briefly coexist).
public enum BodyDecompression {
    /// The encodings accepted, from the `Content-Encoding` header (case-insensitive). Nil and
    /// `identity` mean none.
    public enum Coding: Sendable, Equatable {
        case identity, gzip, deflate

        public init(header: String?) throws(IngestError) {
            let value = header?.trimmingASCIISpaces().lowercased() ?? ""
            switch value {
            case "", "identity": self = .identity
            case "gzip", "x-gzip": self = .gzip
            case "deflate": self = .deflate
            default:
                throw IngestError(.unsupportedMediaType,
                                  "Content-Encoding '\(value)' is not supported: send gzip, deflate or no encoding",
                                  reason: "unsupported_encoding")
            }
        }
    }

    static let step = 64 << 10

    /// The decoded body. Throws `.tooLarge` past `limit` and `.invalid` for a corrupt or
    /// truncated stream.
    /// `reserve` is called with each growth of the output buffer, before it is allocated, so a
    /// caller can charge a memory budget as inflation proceeds (it throws to stop).
    public static func decode(_ body: [UInt8], coding: Coding, limit: Int,
                              reserve: (Int) throws(IngestError) -> Void = { _ in }) throws(IngestError) -> [UInt8] {
        switch coding {
        case .identity:
            guard body.count <= limit else { throw tooLarge(limit) }
            return body
        case .gzip:
            return try inflate(body, windowBits: 15 + 16, limit: limit, name: "gzip", reserve: reserve)
        case .deflate:
            // RFC 9110's deflate is the zlib format; some clients send raw deflate. Try both.
            do {
                return try inflate(body, windowBits: 15, limit: limit, name: "deflate", reserve: reserve)
            } catch let error where error.kind == .invalid {
                return try inflate(body, windowBits: -15, limit: limit, name: "deflate", reserve: reserve)
            }
        }
    }

    public static func tooLarge(_ limit: Int) -> IngestError {
        IngestError(.tooLarge, "the request body is larger than \(limit) bytes after decompression (ACCEPTOR_MAX_REQUEST_BYTES): split the export into smaller batches")
    }

    private static func inflate(_ input: [UInt8], windowBits: Int32, limit: Int, name: String,
                                reserve: (Int) throws(IngestError) -> Void) throws(IngestError) -> [UInt8] {
        guard !input.isEmpty else {
            throw IngestError(.invalid, "the body is empty but Content-Encoding says \(name)", reason: "corrupt_encoding")
        }
        var stream = z_stream()
        guard inflateInit2_(&stream, windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw IngestError(.unavailable(retryAfterSeconds: 1), "zlib could not start (out of memory)", reason: "zlib")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        let initial = min(limit, max(step, input.count * 4))
        try reserve(initial + step)  // the output and the 64 KiB chunk
        output.reserveCapacity(initial)
        var chunk = [UInt8](repeating: 0, count: step)
        var finished = false
        var consumedAll = false
        var failure: IngestError?
        input.withUnsafeBufferPointer { inBuffer in
            stream.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress)
            stream.avail_in = UInt32(inBuffer.count)
            while !finished {
                let result: Int32 = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    return CZlib.inflate(&stream, Z_NO_FLUSH)
                }
                let produced = step - Int(stream.avail_out)
                if output.count + produced > limit {
                    failure = tooLarge(limit)
                    return
                }
                if output.count + produced > output.capacity {
                    // Grow by hand: append's doubling could reserve up to twice the limit.
                    let grown = min(limit, max(output.capacity * 2, output.count + produced))
                    do throws(IngestError) { try reserve(grown - output.capacity) } catch {
                        failure = error
                        return
                    }
                    output.reserveCapacity(grown)
                }
                output.append(contentsOf: chunk[0..<produced])
                switch result {
                case Z_STREAM_END:
                    finished = true
                case Z_OK:
                    continue
                case Z_BUF_ERROR where stream.avail_in == 0:
                    // Input exhausted before the end of the stream: truncated.
                    consumedAll = true
                    failure = IngestError(.invalid, "the \(name) body is truncated: the stream ends before its last block", reason: "corrupt_encoding")
                    return
                default:
                    failure = IngestError(.invalid, "the body is not valid \(name) data (zlib error \(result))", reason: "corrupt_encoding")
                    return
                }
            }
            consumedAll = stream.avail_in == 0
        }
        if let failure { throw failure }
        guard consumedAll else {
            throw IngestError(.invalid, "the \(name) body has \(stream.avail_in) bytes after the end of the compressed stream", reason: "corrupt_encoding")
        }
        return output
    }
}

extension String {
    func trimmingASCIISpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
