/// Bytes from the command line shown in a message: lossless, one line, bounded.
///
/// Valid UTF-8 other than control characters is shown as is; a backslash is shown as `\\`,
/// every other byte (control characters, bytes that are not UTF-8) as `\xHH`, so two
/// different byte strings never look the same. Beyond `limit` bytes the rest is counted,
/// not printed: a 1 MB option must not become a 1 MB error line.
public enum Printable {
    public static func text(_ bytes: some Collection<UInt8>, limit: Int = 240) -> String {
        var out = ""
        var shown = 0
        var rest = bytes[...]
        while let first = rest.first, shown < limit {
            let width = utf8SequenceLength(rest)
            if width == 0 {
                out += escaped(first)
                rest = rest.dropFirst()
                shown += 1
                continue
            }
            let sequence = rest.prefix(width)
            if width == 1 {
                if first == UInt8(ascii: "\\") { out += "\\\\" }
                else if first < 0x20 || first == 0x7F { out += escaped(first) }
                else { out.unicodeScalars.append(Unicode.Scalar(first)) }
            } else {
                out += String(decoding: sequence, as: UTF8.self)  // a valid sequence: decoding is exact
            }
            rest = rest.dropFirst(width)
            shown += width
        }
        if !rest.isEmpty { out += "...(\(bytes.count) bytes)" }
        return out
    }

    private static func escaped(_ b: UInt8) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        return String(decoding: [UInt8(ascii: "\\"), UInt8(ascii: "x"), hex[Int(b >> 4)], hex[Int(b & 15)]], as: UTF8.self)
    }

    /// The length of the valid UTF-8 sequence `s` starts with, 0 when it does not start with one.
    /// Overlong forms, surrogates and code points past U+10FFFF are not valid (RFC 3629).
    private static func utf8SequenceLength<C: Collection<UInt8>>(_ s: C) -> Int {
        var it = s.makeIterator()
        guard let b0 = it.next() else { return 0 }
        let width: Int, low: UInt8, high: UInt8
        switch b0 {
        case 0x00...0x7F: return 1
        case 0xC2...0xDF: width = 2; low = 0x80; high = 0xBF
        case 0xE0: width = 3; low = 0xA0; high = 0xBF
        case 0xE1...0xEC, 0xEE...0xEF: width = 3; low = 0x80; high = 0xBF
        case 0xED: width = 3; low = 0x80; high = 0x9F
        case 0xF0: width = 4; low = 0x90; high = 0xBF
        case 0xF1...0xF3: width = 4; low = 0x80; high = 0xBF
        case 0xF4: width = 4; low = 0x80; high = 0x8F
        default: return 0
        }
        guard let b1 = it.next(), b1 >= low, b1 <= high else { return 0 }
        for _ in 2..<width {
            guard let b = it.next(), b & 0xC0 == 0x80 else { return 0 }
        }
        return width
    }
}
