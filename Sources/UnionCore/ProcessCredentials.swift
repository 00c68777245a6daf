import Glibc

/// What the kernel says of a request's calling thread in /proc: its supplementary groups,
/// its effective capabilities and whether it runs in the initial user namespace — the parts
/// of its credentials a FUSE request does not carry and the VFS's set-id rules need.
///
/// Read as bytes through the syscall funnel; /proc's text is ASCII, parsed here without
/// `String`.
public struct ProcessCredentials: Sendable, Equatable {
    public var groups: [gid_t] = []
    public var effectiveCapabilities: UInt64 = 0
    public var inInitialUserNamespace = false

    /// The link target of /proc/<pid>/ns/user for the initial user namespace
    /// (PROC_USER_INIT_INO).
    static let initialUserNamespace = Array("user:[4026531837]".utf8)

    /// The credentials of thread `tid` (it is blocked in the request's system call meanwhile),
    /// or nil when /proc cannot say (another pid namespace, a thread that is gone).
    public static func of(tid: pid_t) -> ProcessCredentials? {
        guard tid > 0, let status = readAll(Array("/proc/\(tid)/status".utf8)),
              var c = parseStatus(status) else { return nil }
        if let ns = try? Sys.openPath(Array("/proc/\(tid)/ns".utf8), O_PATH | O_DIRECTORY) {
            defer { Sys.close(ns) }
            c.inInitialUserNamespace = (try? Sys.readlink(ns, Name(Array("user".utf8)))) == initialUserNamespace
        }
        return c
    }

    /// The `Groups:` and `CapEff:` lines of a /proc/<pid>/status; nil without `CapEff:`.
    static func parseStatus(_ text: [UInt8]) -> ProcessCredentials? {
        var c = ProcessCredentials()
        var sawCaps = false
        for line in text.split(separator: UInt8(ascii: "\n")) {
            if let rest = value(of: "Groups:", in: line) {
                c.groups = rest.split(whereSeparator: isBlank).compactMap { number($0, radix: 10) }.map { gid_t($0) }
            } else if let rest = value(of: "CapEff:", in: line) {
                guard let word = rest.split(whereSeparator: isBlank).first, let caps = number(word, radix: 16) else { return nil }
                c.effectiveCapabilities = caps
                sawCaps = true
            }
        }
        return sawCaps ? c : nil
    }

    private static func value(of key: String, in line: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let k = Array(key.utf8)
        return line.starts(with: k) ? line.dropFirst(k.count) : nil
    }

    private static func isBlank(_ b: UInt8) -> Bool { b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }

    /// Digits of `radix` (10 or 16) only, no sign; nil for anything else or an overflow.
    private static func number(_ digits: ArraySlice<UInt8>, radix: UInt64) -> UInt64? {
        guard !digits.isEmpty else { return nil }
        var v: UInt64 = 0
        for b in digits {
            let d: UInt64
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt64(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f") where radix == 16: d = UInt64(b - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F") where radix == 16: d = UInt64(b - UInt8(ascii: "A")) + 10
            default: return nil
            }
            let (m, o1) = v.multipliedReportingOverflow(by: radix)
            let (s, o2) = m.addingReportingOverflow(d)
            if o1 || o2 { return nil }
            v = s
        }
        return v
    }

    private static func readAll(_ path: [UInt8]) -> [UInt8]? {
        guard let fd = try? Sys.openPath(path, O_RDONLY) else { return nil }
        defer { Sys.close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            guard let n = try? buf.withUnsafeMutableBytes({ (b: UnsafeMutableRawBufferPointer) throws(Errno) -> Int in try Sys.read(fd, b) })
            else { return nil }
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }
}
