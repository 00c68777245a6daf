import Glibc

/// The merge of one directory's listings across layers, top layer first.
///
/// Pure bookkeeping, no syscalls: a name shows once, from the topmost layer that
/// has it; whiteouts (device or `.wh.` file) hide names of the layers below them;
/// OCI marker files never show. Names are keys by their bytes.
public struct MergedListing {
    public struct Entry: Equatable {
        public var name: Name
        public var type: UInt8
        public var ino: UInt64
        public var layer: Int
        /// For a directory on top of the stack's upper layer: the first lower
        /// directory of that name it merges with (the kernel reports its number).
        public var lowerIno: UInt64?
        public var lowerLayer: Int?
        var merging: Bool
    }

    public struct RawEntry {
        public var name: Name
        public var type: UInt8
        public var ino: UInt64
        public init(name: Name, type: UInt8, ino: UInt64) {
            self.name = name
            self.type = type
            self.ino = ino
        }
    }

    private var order: [Name] = []
    private var seen: [Name: Entry] = [:]
    private var hidden: Set<Name> = []

    /// Layers whose entries held no `.wh.*` name, as a bit mask.
    public private(set) var markerFreeLayers: UInt64 = 0

    public init() {}

    /// Adds one layer's raw entries. `isWhiteout` is asked only for character devices, and
    /// for regular files when `regularWhiteouts` (a directory marked for xattr whiteouts);
    /// its errors end the listing (an unreadable whiteout is not "absent").
    public mutating func add(layer: Int, isUpper: Bool, entries: [RawEntry], regularWhiteouts: Bool = false,
                             isWhiteoutDevice isWhiteout: (Name) throws(Errno) -> Bool) throws(Errno) {
        if layer < 64 && !entries.contains(where: { Markers.isOCIMarkerName($0.name) }) {
            markerFreeLayers |= 1 << UInt64(layer)
        }
        var whiteouts: [Name] = []
        for e in entries {
            if e.name == Markers.ociOpaqueName { continue }
            if let target = Markers.ociWhiteoutTarget(e.name) {
                whiteouts.append(target)
                continue
            }
            if Markers.isOCIMarkerName(e.name) { continue }
            if e.type == UInt8(DT_CHR) || (regularWhiteouts && e.type == UInt8(DT_REG)), try isWhiteout(e.name) {
                whiteouts.append(e.name)
                continue
            }
            if var s = seen[e.name] {
                if s.merging {
                    if e.type == UInt8(DT_DIR) {
                        s.lowerIno = e.ino
                        s.lowerLayer = layer
                    }
                    s.merging = false
                    seen[e.name] = s
                }
                continue
            }
            if hidden.contains(e.name) { continue }
            let dir = e.type == UInt8(DT_DIR)
            seen[e.name] = Entry(name: e.name, type: e.type, ino: e.ino, layer: layer, lowerIno: nil, lowerLayer: nil,
                                 merging: dir && isUpper)
            order.append(e.name)
        }
        // A whiteout hides only what lies below it: a name it shares with its own layer stays.
        hidden.formUnion(whiteouts)
    }

    /// The merged entries, in the order they were first seen.
    public func merged() -> [Entry] { order.map { seen[$0]! } }

    public var count: Int { order.count }
}
