import Glibc

/// The merge of one directory's listings across layers, top layer first.
///
/// Pure bookkeeping, no syscalls: a name shows once, from the topmost layer that
/// has it; whiteouts (device or `.wh.` file) hide names of the layers below them;
/// OCI marker files never show.
public struct MergedListing {
    public struct Entry: Equatable {
        public var name: String
        public var type: UInt8
        public var ino: UInt64
        public var layer: Int
        /// For a directory on top of the stack's upper layer: the first lower
        /// directory of that name it merges with (the kernel reports its number).
        public var lowerIno: UInt64?
        public var lowerLayer: Int?
        var merging: Bool
    }

    private var order: [String] = []
    private var seen: [String: Entry] = [:]
    private var hidden: Set<String> = []

    public init() {}

    /// Adds one layer's raw entries. `isWhiteoutDevice` is asked only for character devices.
    /// Layers whose entries held no `.wh.*` name, as a bit mask.
    public private(set) var markerFreeLayers: UInt64 = 0

    public mutating func add(layer: Int, isUpper: Bool, entries: [(name: String, type: UInt8, ino: UInt64)],
                             isWhiteoutDevice: (String) -> Bool) {
        if layer < 64 && !entries.contains(where: { $0.name.hasPrefix(Markers.ociWhiteoutPrefix) }) {
            markerFreeLayers |= 1 << UInt64(layer)
        }
        var whiteouts: [String] = []
        for (name, type, ino) in entries {
            if name == Markers.ociOpaqueName { continue }
            if name.hasPrefix(Markers.ociWhiteoutPrefix) {
                whiteouts.append(String(name.dropFirst(Markers.ociWhiteoutPrefix.count)))
                continue
            }
            if type == UInt8(DT_CHR) && isWhiteoutDevice(name) {
                whiteouts.append(name)
                continue
            }
            if var e = seen[name] {
                if e.merging {
                    if type == UInt8(DT_DIR) {
                        e.lowerIno = ino
                        e.lowerLayer = layer
                    }
                    e.merging = false
                    seen[name] = e
                }
                continue
            }
            if hidden.contains(name) { continue }
            let dir = type == UInt8(DT_DIR)
            seen[name] = Entry(name: name, type: type, ino: ino, layer: layer, lowerIno: nil, lowerLayer: nil,
                               merging: dir && isUpper)
            order.append(name)
        }
        hidden.formUnion(whiteouts)
        // A whiteout hides only what lies below it: a name it shares with its own layer stays.
    }

    /// The merged entries, in the order they were first seen.
    public func merged() -> [Entry] { order.map { seen[$0]! } }

    public var count: Int { order.count }
}
