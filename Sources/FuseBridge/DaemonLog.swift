import CLinux
import Glibc
import Synchronization
import UnionCore

/// Where the daemon's own problems go once it serves: a layer answering EIO, a failed
/// copy-up, the open-file limit reached. After daemonizing stderr is /dev/null, so by
/// default lines go to stderr in the foreground and to syslog (facility daemon, as
/// fuse-overlayfs logs) in the background; `log=FILE` sends them to a file instead.
///
/// At most `burst` lines a second are written; the rest are counted and the count is
/// written with the next line, so a failing disk cannot flood the log.
public final class DaemonLog: Diagnostics, Sendable {
    public enum Destination: Sendable, Equatable {
        case syslog, stderr
        case file(Int32)
    }

    private struct State {
        var destination: Destination
        var windowStart: Int64 = 0
        var inWindow = 0
        var suppressed = 0
    }
    private let state: Mutex<State>
    /// Chosen by the user (`log=`), or nil: stderr until daemonized, then syslog.
    private let chosen: Bool
    static let burst = 20

    public init(destination: Destination?) {
        chosen = destination != nil
        state = Mutex(State(destination: destination ?? .stderr))
        if destination == .syslog { suf_openlog("swiftunionfs") }
    }

    /// The process has left its terminal: unless told otherwise, log to syslog from now.
    public func daemonized() {
        guard !chosen else { return }
        suf_openlog("swiftunionfs")
        state.withLock { $0.destination = .syslog }
    }

    public var destination: Destination { state.withLock { $0.destination } }

    /// The log file's descriptor, which must outlive the layers' at unmount.
    public var fileDescriptor: Int32? {
        if case .file(let fd) = destination { return fd }
        return nil
    }

    public func report(_ line: String) {
        let now = Int64(Clock.nanoseconds() / 1_000_000_000)
        let (dest, text): (Destination, String?) = state.withLock { s in
            if s.windowStart != now {
                s.windowStart = now
                s.inWindow = 0
            }
            guard s.inWindow < Self.burst else {
                s.suppressed += 1
                return (s.destination, nil)
            }
            s.inWindow += 1
            let note = s.suppressed > 0 ? " (\(s.suppressed) earlier lines suppressed)" : ""
            s.suppressed = 0
            return (s.destination, line + note)
        }
        guard let text else { return }
        switch dest {
        case .syslog: suf_syslog(LOG_ERR, text)
        case .stderr: Text.write(STDERR_FILENO, "swiftunionfs: \(text)\n")
        case .file(let fd):
            let ts = Text.fixed(Double(Clock.nanoseconds()) / 1e9, 6)
            Text.write(fd, "\(ts) [\(getpid())] \(text)\n")
        }
    }

    /// Errnos that say something is wrong with the layers or the daemon, not with the
    /// request: these are logged; the ordinary answers (ENOENT, EEXIST, EACCES from a
    /// permission check, ...) are not.
    public static func isSerious(_ e: Errno) -> Bool {
        [EIO, EMFILE, ENFILE, ENOMEM, ENOSPC, EDQUOT, EOVERFLOW, EUCLEAN, ESTALE, EBADMSG, ENOTCONN, EFBIG].contains(e.rawValue)
    }
}
