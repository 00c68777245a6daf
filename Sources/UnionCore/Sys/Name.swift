/// One name as Linux stores it: a byte string without NUL, compared byte for byte.
///
/// File names, xattr names and (through `Bytes`) symlink targets and paths never pass
/// through `String`: Swift compares strings by canonical equivalence (so "é" and
/// "e\u{301}" would be one key) and repairs invalid UTF-8 (so a Latin-1 name would be
/// lost). Nothing here normalises, transcodes or validates.
///
/// Names of up to 23 bytes — nearly every name in an image — live inline, so a
/// lookup, a dictionary probe in the node table or a listing entry allocates nothing.
/// Longer names keep their bytes on the heap with a trailing NUL, so `withCString`
/// never copies. Short names are always inline, which makes the derived equality
/// byte equality.
public struct Name: Hashable, Sendable {
    static let inlineCapacity = 23

    /// Bytes 0..<23 little-endian in w0...w2; the top byte of w2 is the count.
    private var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0
    /// The bytes plus a trailing NUL, for names longer than `inlineCapacity`.
    private var heap: [UInt8]? = nil

    public init() {}

    public init<S: Sequence<UInt8>>(_ bytes: S) {
        let all = Array(bytes)
        if all.count <= Self.inlineCapacity {
            var words: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &words) { raw in
                for (i, b) in all.enumerated() { raw[i] = b }
                raw[23] = UInt8(all.count)
            }
            (w0, w1, w2) = words
        } else {
            heap = all + [0]
        }
    }

    /// The bytes of a NUL-terminated C string, as the kernel gave them.
    public init(cString p: UnsafePointer<CChar>) {
        var n = 0
        while p[n] != 0 { n += 1 }
        self.init(UnsafeRawBufferPointer(start: p, count: n))
    }

    public var count: Int { heap.map { $0.count - 1 } ?? Int(w2 >> 56) }
    public var isEmpty: Bool { count == 0 }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The bytes, valid only inside `body`.
    // (The standard library's withUnsafe* are `rethrows`, which erases a typed error:
    // results cross them as a `Result`.)
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        var out: Result<R, E>?
        if let heap {
            heap.withUnsafeBytes { raw in
                out = Result { () throws(E) -> R in try body(UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 1)])) }
            }
        } else {
            var words = (w0, w1, w2)
            let n = count
            Swift.withUnsafeBytes(of: &words) { raw in
                out = Result { () throws(E) -> R in try body(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            }
        }
        return try out!.get()
    }

    /// The name NUL-terminated, for a syscall; no copy for either storage.
    public func withCString<R, E: Error>(_ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        var out: Result<R, E>?
        if let heap {
            heap.withUnsafeBufferPointer { buf in
                out = Result { () throws(E) -> R in try body(UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)) }
            }
        } else {
            // The count byte sits at offset 23; a zero word after the name terminates it.
            var words = (w0, w1, w2 & 0x00FF_FFFF_FFFF_FFFF, UInt64(0))
            Swift.withUnsafeBytes(of: &words) { raw in
                out = Result { () throws(E) -> R in try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self)) }
            }
        }
        return try out!.get()
    }

    public func hasPrefix(_ prefix: Name) -> Bool {
        let n = prefix.count
        guard n <= count else { return false }
        return withUnsafeBytes { a in prefix.withUnsafeBytes { b in a.prefix(n).elementsEqual(b) } }
    }

    public func dropFirst(_ k: Int) -> Name { withUnsafeBytes { Name($0.dropFirst(k)) } }

    public static func + (a: Name, b: Name) -> Name { Name(a.bytes + b.bytes) }

    public static let dot: Name = "."
    public static let dotDot: Name = ".."
    public var isDotOrDotDot: Bool { self == .dot || self == .dotDot }
}

extension Name: Comparable {
    /// Byte order, as `sort` in the C locale orders names.
    public static func < (a: Name, b: Name) -> Bool {
        a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.lexicographicallyPrecedes(y) } }
    }
}

extension Name: ExpressibleByStringLiteral {
    /// Literals in the source are constants such as ".wh." and "trusted.overlay.opaque":
    /// their UTF-8 is exactly the bytes meant.
    public init(stringLiteral value: StaticString) {
        self.init(UnsafeRawBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount))
    }
}

extension Name: CustomStringConvertible {
    /// Lossless and printable (see `Bytes.display`), never used to find a file.
    public var description: String { withUnsafeBytes { Bytes.display($0) } }
}

/// Byte strings that are not single names: symlink targets and paths.
public enum Bytes {
    /// `bytes` NUL-terminated, for a syscall.
    public static func withCString<R, E: Error>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        var z = bytes
        z.append(0)
        var out: Result<R, E>?
        z.withUnsafeBufferPointer { buf in
            out = Result { () throws(E) -> R in try body(UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)) }
        }
        return try out!.get()
    }

    /// `bytes`' storage, for a syscall that takes a buffer.
    public static func withUnsafeBytes<R, E: Error>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        var out: Result<R, E>?
        bytes.withUnsafeBytes { raw in out = Result { () throws(E) -> R in try body(raw) } }
        return try out!.get()
    }

    public static func fromCString(_ p: UnsafePointer<CChar>) -> [UInt8] { Name(cString: p).bytes }

    /// Path components joined by "/".
    public static func join(_ parts: [Name]) -> [UInt8] {
        var out: [UInt8] = []
        for (i, p) in parts.enumerated() {
            if i > 0 { out.append(UInt8(ascii: "/")) }
            p.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    /// The non-empty components of a path, "." and ".." kept as they are.
    public static func components(_ path: [UInt8]) -> [Name] {
        path.split(separator: UInt8(ascii: "/")).map { Name($0) }
    }

    /// A lossless, printable rendering for the trace, statistics, inspect and error
    /// lines: valid UTF-8 other than control characters (and line separators and bidi
    /// controls) passes unchanged; a backslash
    /// is written `\\`; every other byte (controls, DEL, C1 controls, bytes that are
    /// not valid UTF-8) is written `\xHH`. Reversing those two escapes gives back the
    /// exact bytes (docs/tracing.md).
    public static func display<C: Collection<UInt8>>(_ bytes: C) -> String {
        var out = ""
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        func hex(_ b: UInt8) {
            let d = Array("0123456789abcdef".utf8)
            out.unicodeScalars.append("\\")
            out.unicodeScalars.append("x")
            out.unicodeScalars.append(Unicode.Scalar(d[Int(b >> 4)]))
            out.unicodeScalars.append(Unicode.Scalar(d[Int(b & 15)]))
        }
        while i != bytes.endIndex {
            let b = bytes[i]
            if b < 0x80 {
                if b == UInt8(ascii: "\\") { out += "\\\\" } else if b < 0x20 || b == 0x7F { hex(b) } else {
                    out.unicodeScalars.append(Unicode.Scalar(b))
                }
                i = bytes.index(after: i)
                continue
            }
            // One UTF-8 sequence, taken only when it is complete, minimal and a scalar.
            let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0
            var j = i
            var seq: [UInt8] = []
            for _ in 0..<need {
                guard j != bytes.endIndex else { break }
                seq.append(bytes[j])
                j = bytes.index(after: j)
            }
            if need > 0, seq.count == need, let s = Self.scalar(seq), s.value >= 0xA0, !Self.invisible(s) {
                out.unicodeScalars.append(s)
                i = j
            } else {
                hex(b)
                i = bytes.index(after: i)
            }
        }
        return out
    }

    /// Line separators and bidirectional controls: printable, but they break lines or make
    /// one name look like another, so they are escaped too.
    private static func invisible(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x2028, 0x2029, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069, 0xFEFF: return true
        default: return false
        }
    }

    private static func scalar(_ seq: [UInt8]) -> Unicode.Scalar? {
        var it = seq.makeIterator()
        var decoder = UTF8()
        if case .scalarValue(let s) = decoder.decode(&it), it.next() == nil { return s }
        return nil
    }
}
