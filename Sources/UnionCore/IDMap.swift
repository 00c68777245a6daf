/// An id mapping between ids stored in the layers ("host") and ids shown through the
/// union ("container"). `parse` reads `SHOWN:STORED:COUNT` triples; the command line's
/// `uidmapping=` uses fuse-overlayfs's `STORED:SHOWN:COUNT` order and is converted.
public struct IDMap: Sendable, Equatable {
    public struct Range: Sendable, Equatable {
        public var container: UInt32
        public var host: UInt32
        public var count: UInt32
    }
    public var ranges: [Range]
    public static let identity = IDMap(ranges: [])
    /// The id shown for a host id with no mapping, as the kernel shows unmapped ids.
    public static let overflow: UInt32 = 65534

    public var isIdentity: Bool { ranges.isEmpty }

    /// Parses "0:1000:1:1:100000:65536" (triples, colon-separated; several may follow).
    public static func parse(_ text: String) -> IDMap? {
        let nums = text.split(separator: ":", omittingEmptySubsequences: false).map { UInt32($0) }
        guard !nums.isEmpty, nums.count % 3 == 0, nums.allSatisfy({ $0 != nil }) else { return nil }
        var ranges: [Range] = []
        for i in stride(from: 0, to: nums.count, by: 3) {
            guard nums[i + 2]! > 0 else { return nil }
            ranges.append(Range(container: nums[i]!, host: nums[i + 1]!, count: nums[i + 2]!))
        }
        return IDMap(ranges: ranges)
    }

    public func toContainer(_ host: UInt32) -> UInt32 {
        if isIdentity { return host }
        for r in ranges where host >= r.host && host - r.host < r.count { return r.container + (host - r.host) }
        return IDMap.overflow
    }

    /// nil when the container id has no host id (the caller answers EINVAL, like chown(2)).
    public func toHost(_ container: UInt32) -> UInt32? {
        if isIdentity { return container }
        for r in ranges where container >= r.container && container - r.container < r.count {
            return r.host + (container - r.container)
        }
        return nil
    }
}
