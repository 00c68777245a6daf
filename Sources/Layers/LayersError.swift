import UnionCore

/// Why an image operation failed, as the one line the user sees.
public struct LayersError: Error, CustomStringConvertible {
    public enum Kind: Sendable { case badInput, hostile, io }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }

    static func bad(_ m: String) -> LayersError { LayersError(.badInput, m) }
    static func hostile(_ m: String) -> LayersError { LayersError(.hostile, m) }
    static func io(_ what: String, _ e: Errno) -> LayersError { LayersError(.io, "\(what): \(e)") }
}

/// A byte name or path for messages: printable ASCII as is, anything else as \xNN, so a
/// message never hides or alters a byte of a hostile name.
public func shown(_ bytes: [UInt8]) -> String {
    var s = ""
    for b in bytes {
        if b >= 0x20 && b < 0x7f && b != 0x5c { s.unicodeScalars.append(Unicode.Scalar(b)) }
        else { s += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16) }
    }
    return s
}
