import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// Checks made before anything is mounted; each failure is one line for the user.
/// Paths stay bytes; they are shown with `Printable.text` (lossless, truncated).
enum Validation {
    static func show(_ path: [UInt8]) -> String { Printable.text(path) }

    static func absolute(_ path: [UInt8]) throws(UsageError) -> [UInt8] {
        do { return try Sys.realpath(path) } catch {
            throw UsageError(message: "\(show(path)): \(error.message)")
        }
    }

    static func directory(_ path: [UInt8], role: String, writable: Bool = false) throws(UsageError) -> ([UInt8], stat) {
        let st: stat
        do { st = try Sys.statPath(path) } catch { throw UsageError(message: "\(role) \(show(path)): \(error.message)") }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw UsageError(message: "\(role) \(show(path)) is not a directory") }
        do { try Sys.access(path, R_OK | X_OK | (writable ? W_OK : 0)) } catch {
            throw UsageError(message: "\(role) \(show(path)) is not \(writable ? "writable" : "readable"): \(error.message)")
        }
        return (try absolute(path), st)
    }

    /// Whether absolute path `a` is `b` or lies below it (both resolved by realpath).
    static func inside(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        if a == b { return true }
        let prefix = b == [UInt8(ascii: "/")] ? b : b + [UInt8(ascii: "/")]
        return a.starts(with: prefix)
    }

    /// Resolves and checks every directory of the command; returns them absolute.
    static func check(_ cmd: inout MountCommand) throws(UsageError) {
        guard !cmd.lowerDirs.isEmpty else { throw UsageError(message: "lowerdir= is required (lowerdir=TOP:...:BOTTOM)") }
        if cmd.passthrough == .on {
            guard Passthrough.built else {
                throw UsageError(message: "passthrough=on: this swiftunionfs is built with libfuse \(Passthrough.libfuseVersion); FUSE passthrough needs libfuse 3.16 or later (passthrough=auto uses it where available)")
            }
            guard geteuid() == 0 else {
                throw UsageError(message: "passthrough=on needs root: the kernel lets only CAP_SYS_ADMIN bind files to backing files (passthrough=auto uses it where available)")
            }
        }
        var lowers: [[UInt8]] = []
        for l in cmd.lowerDirs {
            let dir = try directory(l, role: "lowerdir").0
            // As the kernel ("conflicting lowerdir path"): one directory cannot be two layers
            // (with data-only layers `L::L` now parses, and must still be refused).
            if lowers.contains(dir) { throw UsageError(message: "conflicting lowerdir path: \(show(dir)) is given twice") }
            lowers.append(dir)
        }
        cmd.lowerDirs = lowers
        guard let mnt = cmd.mountpoint else { throw UsageError(message: "no mountpoint given") }
        let mountpoint = try directory(mnt, role: "mountpoint").0
        cmd.mountpoint = mountpoint
        switch (cmd.upperDir, cmd.workDir) {
        case (nil, nil): return
        case (.some, nil): throw UsageError(message: "upperdir needs a workdir on the same filesystem")
        case (nil, .some): throw UsageError(message: "workdir given without upperdir")
        case (let u?, let w?):
            let (upper, ust) = try directory(u, role: "upperdir", writable: true)
            let (work, wst) = try directory(w, role: "workdir", writable: true)
            guard ust.st_dev == wst.st_dev else {
                throw UsageError(message: "workdir \(show(work)) is not on the same filesystem as upperdir \(show(upper))")
            }
            if inside(work, upper) || inside(upper, work) {
                throw UsageError(message: "workdir \(show(work)) and upperdir \(show(upper)) must not contain each other")
            }
            for lower in cmd.lowerDirs {
                if inside(upper, lower) { throw UsageError(message: "upperdir \(show(upper)) is inside lowerdir \(show(lower))") }
                if inside(lower, upper) { throw UsageError(message: "lowerdir \(show(lower)) is inside upperdir \(show(upper))") }
                if inside(work, lower) { throw UsageError(message: "workdir \(show(work)) is inside lowerdir \(show(lower))") }
            }
            if inside(upper, mountpoint) || inside(work, mountpoint) {
                throw UsageError(message: "upperdir and workdir must not be inside the mountpoint")
            }
            cmd.upperDir = upper
            cmd.workDir = work
        }
    }
}
