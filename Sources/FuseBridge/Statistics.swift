import CLinux
import Glibc
import UnionCore

/// Per-operation counters, kept lock-free so that they can stay on for every mount.
///
/// Latency goes into log2 buckets of nanoseconds; percentiles are read off the
/// buckets (upper bound of the bucket), which is exact enough to find a slow op.
public final class Statistics: @unchecked Sendable {
    static let buckets = 48
    private static let perOp = 4 + buckets   // count, errors, total ns, max ns, buckets…
    private let ops: UnsafeMutablePointer<UInt64>
    private let errnos: UnsafeMutablePointer<UInt64>
    private let totals: UnsafeMutablePointer<UInt64>  // read bytes, written bytes, copy-ups, copy-up bytes, copy-up µs, whiteouts, opaques, lower edits, passthrough opens, backing files
    private let started = Clock.nanoseconds()

    public init() {
        ops = .allocate(capacity: Op.allCases.count * Self.perOp)
        ops.initialize(repeating: 0, count: Op.allCases.count * Self.perOp)
        errnos = .allocate(capacity: 256)
        errnos.initialize(repeating: 0, count: 256)
        totals = .allocate(capacity: 10)
        totals.initialize(repeating: 0, count: 10)
    }

    deinit {
        ops.deallocate()
        errnos.deallocate()
        totals.deallocate()
    }

    @inline(__always)
    func record(_ op: Op, result: Int32, nanos: UInt64) {
        let base = ops + op.rawValue * Self.perOp
        suf_atomic_add(base, 1)
        if result != 0 {
            suf_atomic_add(base + 1, 1)
            suf_atomic_add(errnos + Int(min(max(result, 0), 255)), 1)
        }
        suf_atomic_add(base + 2, nanos)
        suf_atomic_max(base + 3, nanos)
        let bucket = nanos == 0 ? 0 : min(Self.buckets - 1, 64 - nanos.leadingZeroBitCount)
        suf_atomic_add(base + 4 + bucket, 1)
    }

    func addRead(_ n: Int) { suf_atomic_add(totals, UInt64(n)) }
    func addWritten(_ n: Int) { suf_atomic_add(totals + 1, UInt64(n)) }
    /// An open answered with a backing file: its reads and writes never reach the daemon.
    func addPassthroughOpen(registered: Bool) {
        suf_atomic_add(totals + 8, 1)
        if registered { suf_atomic_add(totals + 9, 1) }
    }

    func record(_ event: UnionEvent) {
        switch event {
        case .copyUp(_, _, let bytes, let micros):
            suf_atomic_add(totals + 2, 1)
            suf_atomic_add(totals + 3, UInt64(max(bytes, 0)))
            suf_atomic_add(totals + 4, UInt64(max(micros, 0)))
        case .whiteout: suf_atomic_add(totals + 5, 1)
        case .opaque: suf_atomic_add(totals + 6, 1)
        case .lowerEdit: suf_atomic_add(totals + 7, 1)
        }
    }

    public struct OpSummary: Sendable {
        public var op: Op
        public var count: UInt64
        public var errors: UInt64
        public var p50Micros: Double
        public var p99Micros: Double
        public var maxMicros: Double
        public var meanMicros: Double
    }

    public func summaries() -> [OpSummary] {
        Op.allCases.compactMap { op in
            let base = ops + op.rawValue * Self.perOp
            let count = suf_atomic_load(base)
            guard count > 0 else { return nil }
            func percentile(_ p: Double) -> Double {
                let want = UInt64((Double(count) * p).rounded(.up))
                var seen: UInt64 = 0
                for b in 0..<Self.buckets {
                    seen += suf_atomic_load(base + 4 + b)
                    if seen >= want { return Double(UInt64(1) << UInt64(b)) / 1000 }
                }
                return Double(suf_atomic_load(base + 3)) / 1000
            }
            return OpSummary(op: op, count: count, errors: suf_atomic_load(base + 1),
                             p50Micros: min(percentile(0.5), Double(suf_atomic_load(base + 3)) / 1000),
                             p99Micros: min(percentile(0.99), Double(suf_atomic_load(base + 3)) / 1000),
                             maxMicros: Double(suf_atomic_load(base + 3)) / 1000,
                             meanMicros: Double(suf_atomic_load(base + 2)) / Double(count) / 1000)
        }
    }

    public func errorsByName() -> [(String, UInt64)] {
        (1..<256).compactMap { e in
            let n = suf_atomic_load(errnos + e)
            return n > 0 ? (Errno(Int32(e)).name, n) : nil
        }
    }

    private func total(_ i: Int) -> UInt64 { suf_atomic_load(totals + i) }

    /// A human-readable table, for stderr at unmount or on SIGUSR2.
    public func text() -> String {
        var out = "swiftunionfs statistics (\(Text.fixed(Double(Clock.nanoseconds() - started) / 1e9, 1)) s mounted)\n"
        out += "op                    count   errors    p50 us    p99 us    max us\n"
        for s in summaries() {
            out += Text.pad(s.op.name, 18) + Text.pad("\(s.count)", 9, left: true) + Text.pad("\(s.errors)", 9, left: true)
            for v in [s.p50Micros, s.p99Micros, s.maxMicros] { out += Text.pad(Text.fixed(v, 1), 10, left: true) }
            out += "\n"
        }
        let errs = errorsByName().map { "\($0.0)=\($0.1)" }.joined(separator: " ")
        out += "errors: \(errs.isEmpty ? "none" : errs)\n"
        out += "bytes read \(total(0)), written \(total(1))\n"
        out += "copy-ups \(total(2)) (\(total(3)) bytes, \(total(4)) us), whiteouts \(total(5)), opaque dirs \(total(6))\n"
        out += "lower edits seen \(total(7))\n"
        out += "passthrough opens \(total(8)) (backing files \(total(9))): their reads and writes are not counted above\n"
        return out
    }

    /// The same as JSON, for `-o stats=FILE`.
    public func json() -> String {
        let ops = summaries().map { s in
            "\"\(s.op.name)\":{\"count\":\(s.count),\"errors\":\(s.errors),\"p50_us\":\(s.p50Micros),\"p99_us\":\(s.p99Micros),\"max_us\":\(s.maxMicros),\"mean_us\":\(Text.fixed(s.meanMicros, 3))}"
        }.joined(separator: ",")
        let errs = errorsByName().map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",")
        return "{\"ops\":{\(ops)},\"errors\":{\(errs)},\"bytes_read\":\(total(0)),\"bytes_written\":\(total(1)),"
            + "\"copy_ups\":{\"count\":\(total(2)),\"bytes\":\(total(3)),\"us\":\(total(4))},"
            + "\"whiteouts\":\(total(5)),\"opaque_dirs\":\(total(6)),\"lower_edits\":\(total(7)),"
            + "\"passthrough\":{\"opens\":\(total(8)),\"backing_files\":\(total(9))}}\n"
    }
}
