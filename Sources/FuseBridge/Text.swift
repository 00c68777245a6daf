import Glibc
import UnionCore

/// Small text helpers, so the daemon needs no Foundation.
enum Text {
    /// `value` with `digits` decimals ("12.500").
    static func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = UInt64(scaled / scale)
        let frac = UInt64(scaled - Double(whole) * scale)
        let sign = value < 0 && scaled != 0 ? "-" : ""
        guard digits > 0 else { return "\(sign)\(whole)" }
        let f = String(frac)
        return "\(sign)\(whole)." + String(repeating: "0", count: max(0, digits - f.count)) + f
    }

    /// Seconds as given: "3600", "2.5".
    static func seconds(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }

    static func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return left ? fill + s : s + fill
    }

    /// Writes to stderr with write(2): usable from any thread, no stdio lock.
    static func stderr(_ s: String) { write(STDERR_FILENO, s) }

    /// Writes all of `s` to `fd`, giving up on the first error (a log must never block
    /// or crash the daemon).
    static func write(_ fd: Int32, _ s: String) {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { try? Sys.write(fd, $0) } ?? 0
            if n <= 0 { return }
            off += n
        }
    }
}
