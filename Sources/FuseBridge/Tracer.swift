import CLinux
import Glibc
import Synchronization
import UnionCore

/// The operation trace: one line per filesystem operation and per union event.
///
/// Request threads only format a line and append it to a buffer; a writer thread
/// flushes the buffer, so a slow trace file never stalls the filesystem. When
/// tracing is off, a request pays one relaxed load.
///
/// Paths are bytes; they are written with `Bytes.display`, which is lossless
/// (docs/tracing.md tells how to read a name back).
public final class Tracer: Sendable {
    public enum Format: String, Sendable { case text, json }

    let fd: Int32
    let format: Format
    let ops: Set<Op>?
    let pathPrefix: [UInt8]?
    private let on: Atomic<Bool>
    private let buffer = Mutex([UInt8]())

    public init(fd: Int32, format: Format, ops: Set<Op>?, pathPrefix: [UInt8]?, enabled: Bool) {
        self.fd = fd
        self.format = format
        self.ops = ops
        self.pathPrefix = pathPrefix
        on = Atomic(enabled)
    }

    public var isOn: Bool { on.load(ordering: .relaxed) }

    /// Flips tracing on or off (SIGUSR1, from the housekeeping thread).
    public func toggle() {
        let now = !on.logicalXor(true, ordering: .relaxed).newValue
        append(format == .json ? "{\"event\":\"trace\",\"on\":\(!now)}\n" : "# trace \(now ? "off" : "on")\n")
    }

    @inline(__always) func wants(_ op: Op) -> Bool { isOn && (ops?.contains(op) ?? true) }

    func wants(path: [UInt8]) -> Bool {
        guard let pathPrefix else { return true }
        return path.starts(with: pathPrefix)
    }

    func operation(_ op: Op, path bytes: [UInt8], args: String, layer: String, result: Int32, micros: UInt64) {
        let path = Bytes.display(bytes)
        let res = result == 0 ? "OK" : Errno(result).name
        let ts = Text.fixed(Double(Clock.nanoseconds()) / 1e9, 6)
        let tid = suf_gettid()
        switch format {
        case .text:
            append("\(ts) [\(tid)] \(op.name) \(Self.quoted(path))\(args.isEmpty ? "" : " " + args) layer=\(Self.quoted(layer)) \(res) \(micros)us\n")
        case .json:
            append("{\"ts\":\(ts),\"tid\":\(tid),\"op\":\"\(op.name)\",\"path\":\(Self.json(path)),\"args\":\(Self.json(args)),"
                   + "\"layer\":\(Self.json(layer)),\"result\":\"\(res)\",\"errno\":\(result),\"us\":\(micros)}\n")
        }
    }

    func event(_ event: UnionEvent) {
        guard isOn else { return }
        let ts = Text.fixed(Double(Clock.nanoseconds()) / 1e9, 6)
        let tid = suf_gettid()
        let (kind, raw, fields): (String, [UInt8], [(String, String)]) = {
            switch event {
            case .copyUp(let p, let layer, let bytes, let us):
                return ("copy-up", p, [("from", layer), ("bytes", "\(bytes)"), ("us", "\(us)")])
            case .whiteout(let p, let f): return ("whiteout", p, [("format", f)])
            case .opaque(let p, let x): return ("opaque", p, [("xattr", x)])
            case .lowerEdit(let p, let layer, let change): return ("lower-edit", p, [("layer", layer), ("change", change)])
            }
        }()
        guard wants(path: raw) else { return }
        let path = Bytes.display(raw)
        switch format {
        case .text:
            let f = fields.map { "\($0.0)=\(Self.quoted($0.1))" }.joined(separator: " ")
            append("\(ts) [\(tid)] event \(kind) \(Self.quoted(path)) \(f)\n")
        case .json:
            let f = fields.map { k, v in "\"\(k)\":" + (Int64(v) != nil ? v : Self.json(v)) }.joined(separator: ",")
            append("{\"ts\":\(ts),\"tid\":\(tid),\"event\":\"\(kind)\",\"path\":\(Self.json(path)),\(f)}\n")
        }
    }

    /// A free-form header line (the mount's layers and marker format).
    public func note(_ text: String) {
        append(format == .json ? "{\"event\":\"mount\",\"info\":\(Self.json(text))}\n" : "# \(text)\n")
    }

    private func append(_ line: String) {
        buffer.withLock { $0.append(contentsOf: line.utf8) }
    }

    /// Writes out what is buffered; the writer thread calls this every 50 ms.
    public func flush() {
        let data = buffer.withLock { b -> [UInt8] in
            let d = b
            b.removeAll(keepingCapacity: true)
            return d
        }
        var off = 0
        while off < data.count {
            let n = data[off...].withUnsafeBytes { try? Sys.write(fd, $0) } ?? 0
            if n <= 0 { break }
            off += n
        }
    }

    /// Display text quoted when it holds a space, quote, or backslash (an escape).
    static func quoted(_ s: String) -> String {
        s.contains(where: { $0 == " " || $0 == "\"" || $0 == "\n" || $0 == "\\" }) ? json(s) : s
    }

    static func json(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += "\\u00" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// Fans union events out to the trace and the statistics.
public struct Observers: EventSink {
    public let tracer: Tracer?
    public let stats: Statistics?
    public init(tracer: Tracer?, stats: Statistics?) {
        self.tracer = tracer
        self.stats = stats
    }
    public var isEnabled: Bool { stats != nil || (tracer?.isOn ?? false) }
    public func record(_ event: UnionEvent) {
        stats?.record(event)
        tracer?.event(event)
    }
}
