import Crypto

/// A content digest in the OCI form `sha256:<64 hex digits>`.
public struct Digest: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let hex: String

    public init?(_ text: String) {
        guard text.hasPrefix("sha256:") else { return nil }
        let h = String(text.dropFirst(7))
        guard h.utf8.count == 64, h.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        hex = h
    }

    init(hexDigits: String) { hex = hexDigits }

    public var description: String { "sha256:" + hex }
    public var short: String { String(hex.prefix(12)) }
    public static func < (a: Digest, b: Digest) -> Bool { a.hex < b.hex }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let d = Digest(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a sha256 digest: \(s)"))
        }
        self = d
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// The digest of `bytes`.
    public static func of<C: Collection>(_ bytes: C) -> Digest where C.Element == UInt8 {
        var h = Hasher256()
        h.update(Array(bytes))
        return h.finish()
    }

    /// Chain IDs of a layer stack, bottom first (OCI image-spec config.md, "Layer ChainID"):
    /// ChainID(L0) = DiffID(L0); ChainID(Ln) = SHA256(ChainID(Ln-1) + " " + DiffID(Ln)).
    public static func chainIDs(_ diffIDs: [Digest]) -> [Digest] {
        var out: [Digest] = []
        for d in diffIDs {
            if let parent = out.last {
                out.append(Digest.of(Array("\(parent) \(d)".utf8)))
            } else {
                out.append(d)
            }
        }
        return out
    }
}

/// An incremental SHA-256.
public struct Hasher256 {
    var inner = SHA256()
    public init() {}
    public mutating func update(_ bytes: [UInt8]) { inner.update(data: bytes) }
    public mutating func update(_ buf: UnsafeRawBufferPointer) { inner.update(bufferPointer: buf) }
    public func finish() -> Digest {
        let hexDigits = "0123456789abcdef".utf8.map { $0 }
        var s: [UInt8] = []
        for b in inner.finalize() { s.append(hexDigits[Int(b >> 4)]); s.append(hexDigits[Int(b & 15)]) }
        return Digest(hexDigits: String(decoding: s, as: UTF8.self))
    }
}
