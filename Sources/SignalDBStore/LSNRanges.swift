/// A set of LSNs kept as sorted, disjoint, non-adjacent ranges: an acceptor's held LSNs are
/// almost always one run, so this stays a few ranges long. Its text form (`"5-9,12,14-20"`)
/// is what `ingest_progress.held_ranges` stores.
public struct LSNRanges: Sendable, Equatable, CustomStringConvertible {
    public private(set) var ranges: [ClosedRange<UInt64>] = []

    public init() {}

    public init<S: Sequence>(_ lsns: S) where S.Element == UInt64 {
        for lsn in lsns { insert(lsn) }
    }

    public var isEmpty: Bool { ranges.isEmpty }
    public var last: UInt64? { ranges.last?.upperBound }
    /// Saturates at `UInt64.max` (only a hand-edited `held_ranges` gets there).
    public var count: UInt64 {
        ranges.reduce(0) { total, r in
            let (size, o1) = (r.upperBound - r.lowerBound).addingReportingOverflow(1)
            let (sum, o2) = total.addingReportingOverflow(size)
            return o1 || o2 ? .max : sum
        }
    }

    /// Index of the first range whose upper bound is at least `lsn`.
    private func index(atOrAfter lsn: UInt64) -> Int {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < lsn { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func contains(_ lsn: UInt64) -> Bool {
        let i = index(atOrAfter: lsn)
        return i < ranges.count && ranges[i].contains(lsn)
    }

    public mutating func insert(_ lsn: UInt64) {
        // Fast path: the next LSN of the last run.
        if let last = ranges.last {
            if last.upperBound == lsn &- 1 && lsn > 0 { ranges[ranges.count - 1] = last.lowerBound...lsn; return }
            if last.contains(lsn) { return }
        }
        let i = index(atOrAfter: lsn)
        if i < ranges.count && ranges[i].contains(lsn) { return }
        let joinsPrevious = i > 0 && ranges[i - 1].upperBound &+ 1 == lsn
        let joinsNext = i < ranges.count && lsn &+ 1 == ranges[i].lowerBound
        switch (joinsPrevious, joinsNext) {
        case (true, true):
            ranges[i - 1] = ranges[i - 1].lowerBound...ranges[i].upperBound
            ranges.remove(at: i)
        case (true, false): ranges[i - 1] = ranges[i - 1].lowerBound...lsn
        case (false, true): ranges[i] = lsn...ranges[i].upperBound
        case (false, false): ranges.insert(lsn...lsn, at: i)
        }
    }

    public mutating func formUnion(_ other: LSNRanges) {
        var merged: [ClosedRange<UInt64>] = []
        for r in (ranges + other.ranges).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, last.upperBound == .max || r.lowerBound <= last.upperBound + 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        ranges = merged
    }

    /// Drops every LSN at or below `floor`.
    public mutating func removeAll(atOrBelow floor: UInt64) {
        let i = floor == .max ? ranges.count : index(atOrAfter: floor + 1)
        ranges.removeFirst(i)
        if let first = ranges.first, first.lowerBound <= floor { ranges[0] = (floor + 1)...first.upperBound }
    }

    public var description: String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
    }

    /// Parses ``description``'s form; nil for anything else.
    public init?(parsing text: String) {
        self.init()
        guard !text.isEmpty else { return }
        var previous: UInt64?
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let lo = UInt64(bounds[0]), let hi = UInt64(bounds.last!), lo <= hi else { return nil }
            if let previous, lo <= previous &+ 1 { return nil }
            ranges.append(lo...hi)
            previous = hi
        }
    }
}
