/// Where the daemon reports what goes wrong on its own account — a layer answering
/// EIO, a copy-up that failed, the open-file limit reached — once it has no terminal.
/// The bridge sends these to syslog, a `log=` file or stderr; never nowhere.
public protocol Diagnostics: Sendable {
    func report(_ line: String)
}

/// For unit tests and `inspect`: keeps nothing.
public struct NullDiagnostics: Diagnostics {
    public init() {}
    public func report(_ line: String) {}
}
