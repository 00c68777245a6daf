/// An id mapping between ids stored in the layers ("host") and ids shown through the
/// union ("container"). `parse` reads `SHOWN:STORED:COUNT` triples; the command line's
/// `uidmapping=` uses fuse-overlayfs's `STORED:SHOWN:COUNT` order and is converted.
///
/// Every map is valid by construction (`init(ranges:)` checks it), and the lookups use no
/// arithmetic that can trap even so: an id from a client must never be able to stop the daemon.
public struct IDMap: Sendable, Equatable {
    public struct Range: Sendable, Equatable {
        public var container: UInt32
        public var host: UInt32
        public var count: UInt32
        public init(container: UInt32, host: UInt32, count: UInt32) {
            self.container = container
            self.host = host
            self.count = count
        }
    }

    /// Why a list of ranges is not a mapping; indices are positions in the list given.
    public enum Problem: Error, Equatable, Sendable {
        case tooManyRanges(Int)
        case zeroCount(Int)
        /// host + count passes `lastID`: the range would name ids that do not exist.
        case hostOverflow(Int)
        case containerOverflow(Int)
        /// Two ranges share host ids (one stored id would show as two) ...
        case hostOverlap(Int, Int)
        /// ... or container ids (one shown id would be stored as two).
        case containerOverlap(Int, Int)
    }

    public private(set) var ranges: [Range]
    public static let identity = IDMap(unchecked: [])
    /// The id shown for a host id with no mapping, as the kernel shows unmapped ids.
    public static let overflow: UInt32 = 65534
    /// The highest id a range may cover. 4294967295 is (uid_t)-1, "no id" to chown(2); the
    /// kernel's uid_map refuses a range reaching it (first + count must not wrap), and so do we.
    public static let lastID: UInt32 = UInt32.max - 1
    /// The kernel's limit for uid_map/gid_map (UID_GID_MAP_MAX_EXTENTS); it also bounds the
    /// linear lookups below.
    public static let maxRanges = 340

    public var isIdentity: Bool { ranges.isEmpty }

    private init(unchecked ranges: [Range]) { self.ranges = ranges }

    /// A mapping from these ranges, or the first problem found: every count at least 1, no
    /// range past `lastID` on either side, no two ranges sharing an id on either side.
    public init(ranges: [Range]) throws(Problem) {
        guard ranges.count <= IDMap.maxRanges else { throw .tooManyRanges(ranges.count) }
        for (i, r) in ranges.enumerated() {
            guard r.count > 0 else { throw .zeroCount(i) }
            guard UInt64(r.host) + UInt64(r.count) - 1 <= UInt64(IDMap.lastID) else { throw .hostOverflow(i) }
            guard UInt64(r.container) + UInt64(r.count) - 1 <= UInt64(IDMap.lastID) else { throw .containerOverflow(i) }
        }
        if let (a, b) = IDMap.firstOverlap(ranges, start: \.host) { throw .hostOverlap(a, b) }
        if let (a, b) = IDMap.firstOverlap(ranges, start: \.container) { throw .containerOverlap(a, b) }
        self.ranges = ranges
    }

    /// Two ranges (original indices, in list order) that share an id on one side; sorting
    /// keeps this O(n log n) for any list.
    private static func firstOverlap(_ ranges: [Range], start: KeyPath<Range, UInt32>) -> (Int, Int)? {
        let order = ranges.indices.sorted { ranges[$0][keyPath: start] < ranges[$1][keyPath: start] }
        for (a, b) in zip(order, order.dropFirst()) {
            let end = UInt64(ranges[a][keyPath: start]) + UInt64(ranges[a].count)
            if end > UInt64(ranges[b][keyPath: start]) { return (min(a, b), max(a, b)) }
        }
        return nil
    }

    /// Parses "0:1000:1:1:100000:65536" (SHOWN:STORED:COUNT triples, colon-separated); nil
    /// when malformed or not a valid mapping.
    public static func parse(_ text: String) -> IDMap? {
        let nums = text.split(separator: ":", omittingEmptySubsequences: false).map { UInt32($0) }
        guard !nums.isEmpty, nums.count % 3 == 0, nums.allSatisfy({ $0 != nil }) else { return nil }
        var ranges: [Range] = []
        for i in stride(from: 0, to: nums.count, by: 3) {
            ranges.append(Range(container: nums[i]!, host: nums[i + 1]!, count: nums[i + 2]!))
        }
        return try? IDMap(ranges: ranges)
    }

    public func toContainer(_ host: UInt32) -> UInt32 {
        if isIdentity { return host }
        for r in ranges where host >= r.host && host - r.host < r.count {
            let (id, overflowed) = r.container.addingReportingOverflow(host - r.host)
            return overflowed ? IDMap.overflow : id
        }
        return IDMap.overflow
    }

    /// nil when the container id has no host id (the caller answers EINVAL, like chown(2)).
    public func toHost(_ container: UInt32) -> UInt32? {
        if isIdentity { return container }
        for r in ranges where container >= r.container && container - r.container < r.count {
            let (id, overflowed) = r.host.addingReportingOverflow(container - r.container)
            return overflowed ? nil : id
        }
        return nil
    }
}
