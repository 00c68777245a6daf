import CFuse
import Glibc
import MountOptions
import UnionCore

/// Checks made before anything is mounted; each failure is one line for the user.
enum Validation {
    static func absolute(_ path: String) throws -> String {
        guard let r = realpath(path, nil) else {
            throw UsageError(message: "\(path): \(String(cString: strerror(errno)))")
        }
        defer { free(r) }
        return String(cString: r)
    }

    static func directory(_ path: String, role: String, writable: Bool = false) throws -> (String, stat) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw UsageError(message: "\(role) \(path): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw UsageError(message: "\(role) \(path) is not a directory") }
        guard access(path, R_OK | X_OK | (writable ? W_OK : 0)) == 0 else {
            throw UsageError(message: "\(role) \(path) is not \(writable ? "writable" : "readable"): \(String(cString: strerror(errno)))")
        }
        return (try absolute(path), st)
    }

    static func inside(_ a: String, _ b: String) -> Bool { a == b || a.hasPrefix(b == "/" ? "/" : b + "/") }

    /// Resolves and checks every directory of the command; returns them absolute.
    static func check(_ cmd: inout MountCommand) throws {
        guard !cmd.lowerDirs.isEmpty else { throw UsageError(message: "lowerdir= is required (lowerdir=TOP:...:BOTTOM)") }
        cmd.lowerDirs = try cmd.lowerDirs.map { legacyBytes(try directory(legacyPath($0), role: "lowerdir").0) }
        guard let mnt = cmd.mountpoint.map(legacyPath) else { throw UsageError(message: "no mountpoint given") }
        let mountpoint = try directory(mnt, role: "mountpoint").0
        cmd.mountpoint = legacyBytes(mountpoint)
        switch (cmd.upperDir.map(legacyPath), cmd.workDir.map(legacyPath)) {
        case (nil, nil): return
        case (.some, nil): throw UsageError(message: "upperdir needs a workdir on the same filesystem")
        case (nil, .some): throw UsageError(message: "workdir given without upperdir")
        case (let u?, let w?):
            let (upper, ust) = try directory(u, role: "upperdir", writable: true)
            let (work, wst) = try directory(w, role: "workdir", writable: true)
            guard ust.st_dev == wst.st_dev else {
                throw UsageError(message: "workdir \(work) is not on the same filesystem as upperdir \(upper)")
            }
            if inside(work, upper) || inside(upper, work) {
                throw UsageError(message: "workdir \(work) and upperdir \(upper) must not contain each other")
            }
            for lower in cmd.lowerDirs.map(legacyPath) {
                if inside(upper, lower) { throw UsageError(message: "upperdir \(upper) is inside lowerdir \(lower)") }
                if inside(lower, upper) { throw UsageError(message: "lowerdir \(lower) is inside upperdir \(upper)") }
                if inside(work, lower) { throw UsageError(message: "workdir \(work) is inside lowerdir \(lower)") }
            }
            if inside(upper, mountpoint) || inside(work, mountpoint) {
                throw UsageError(message: "upperdir and workdir must not be inside the mountpoint")
            }
            cmd.upperDir = legacyBytes(upper)
            cmd.workDir = legacyBytes(work)
        }
    }
}
