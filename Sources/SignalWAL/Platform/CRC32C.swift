import CShims

/// CRC32C (Castagnoli), computed with the SSE4.2 instruction when the CPU has it.
public enum CRC32C {
    /// Whether the hardware path is in use on this CPU.
    public static var usesHardware: Bool { sw_crc32c_has_hw() != 0 }

    /// Extends `crc` (a finished CRC value; 0 to start) over `bytes`.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, extending crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return sw_crc32c(crc, base, bytes.count)
    }

    /// Extends `crc` over the bytes of a collection with contiguous storage.
    @inlinable
    public static func checksum<Bytes: Collection>(_ bytes: Bytes, extending crc: UInt32 = 0) -> UInt32
    where Bytes.Element == UInt8 {
        if let value = bytes.withContiguousStorageIfAvailable({ checksum(UnsafeRawBufferPointer($0), extending: crc) }) {
            return value
        }
        return Array(bytes).withUnsafeBytes { checksum($0, extending: crc) }
    }
}
