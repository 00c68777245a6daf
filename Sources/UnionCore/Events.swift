/// Things the union does on its own account, beyond the operation asked for:
/// the trace reports them as events of their own. Paths are merged paths, as bytes.
public enum UnionEvent: Sendable {
    /// `path` copied from `layer` to upper: `bytes` of data in `micros` microseconds.
    case copyUp(path: [UInt8], layer: String, bytes: Int64, micros: Int64)
    /// A whiteout written in upper for `path`, in `format` ("device" or "oci").
    case whiteout(path: [UInt8], format: String)
    /// `path` marked opaque with `xattr`.
    case opaque(path: [UInt8], xattr: String)
    /// A lower layer reported an edit made behind the mount at `path`: its `change` is
    /// "names" (created, removed, renamed) or "attributes" (content, size, mode, ...).
    case lowerEdit(path: [UInt8], layer: String, change: String)
}

public protocol EventSink: Sendable {
    /// Checked before an event is built, so a disabled sink costs one load.
    var isEnabled: Bool { get }
    func record(_ event: UnionEvent)
}

public struct NullEventSink: EventSink {
    public init() {}
    public var isEnabled: Bool { false }
    public func record(_ event: UnionEvent) {}
}
