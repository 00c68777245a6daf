import Foundation
import Glibc

/// Builds ustar archives byte by byte, so tests can make archives no well-behaved tool
/// would write (`..`, absolute names, links out of the archive).
struct TarBuilder {
    var data: [UInt8] = []

    enum Kind: UInt8 { case file = 0x30, hardlink = 0x31, symlink = 0x32, char = 0x33, dir = 0x35 }

    mutating func add(_ name: [UInt8], _ kind: Kind, content: [UInt8] = [], link: [UInt8] = [], mode: Int = 0o644,
                      devMajor: Int = 0, devMinor: Int = 0) {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ off: Int, _ len: Int, _ bytes: [UInt8]) { for (i, b) in bytes.prefix(len).enumerated() { h[off + i] = b } }
        func octal(_ off: Int, _ len: Int, _ v: Int) { put(off, len - 1, Array(String(format: "%0\(len - 1)o", v).utf8)) }
        precondition(name.count <= 100 && link.count <= 100)
        put(0, 100, name)
        octal(100, 8, mode)
        octal(108, 8, 0)
        octal(116, 8, 0)
        octal(124, 12, kind == .file ? content.count : 0)
        octal(136, 12, 1_700_000_000)
        h[156] = kind.rawValue
        put(157, 100, link)
        put(257, 6, Array("ustar\0".utf8))
        put(263, 2, Array("00".utf8))
        octal(329, 8, devMajor)
        octal(337, 8, devMinor)
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(148, 7, Array(String(format: "%06o\0", sum).utf8))
        data += h
        if kind == .file {
            data += content
            data += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
        }
    }

    mutating func add(_ name: String, _ kind: Kind, content: String = "", link: String = "", mode: Int = 0o644) {
        add(Array(name.utf8), kind, content: Array(content.utf8), link: Array(link.utf8), mode: mode)
    }

    func finished() -> [UInt8] { data + [UInt8](repeating: 0, count: 1024) }

    /// Writes the archive to `path` and returns it opened for reading.
    func write(to path: String) -> Int32 {
        let bytes = finished()
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        lseek(fd, 0, SEEK_SET)
        return fd
    }
}
