import FuseBridge
import Glibc
import Layers
import MountOptions
import UnionCore

/// `swiftunionfs commit -o [lowerdir=...,]upperdir=DIR -O layer.tar[.gz|.zst]`: the upper as
/// a reproducible OCI image layer (rules in Layers/LayerWriter.swift); prints its diff ID
/// and blob digest.
enum CommitCommand {
    static let usage = "usage: swiftunionfs commit -o [lowerdir=...|image=NAME,]upperdir=DIR -O LAYER.tar[.gz|.zst]"

    /// The upper, opened and locked: a mounted union holds the lock, and committing an upper
    /// that is being written would record a torn state. A daemon still exiting after its
    /// unmount gets 2 s to let go, as a remount does.
    static func openUpper(_ path: String) throws -> Int32 {
        let fd = try DiffCommand.openDir(path, role: "upperdir")
        var tries = 0
        while flock(fd, LOCK_SH | LOCK_NB) != 0 && tries < 40 {
            tries += 1
            usleep(50_000)
        }
        if tries == 40 {
            FS.close(fd)
            throw UsageError(message: "upperdir \(path) is in use by a mount; unmount it before committing")
        }
        return fd
    }

    static func compression(_ out: String) throws -> TarWriter.Compression {
        if out.hasSuffix(".tar") { return .none }
        if out.hasSuffix(".tar.gz") || out.hasSuffix(".tgz") { return .gzip }
        if out.hasSuffix(".tar.zst") || out.hasSuffix(".tar.zstd") { return .zstd }
        throw UsageError(message: "-O \(out): the name must end in .tar, .tar.gz or .tar.zst (it chooses the compression)")
    }

    static func main(_ args: [String]) -> Int32 {
        var lists: [String] = [], output: String?
        do {
            var i = 0
            while i < args.count {
                let a = args[i]
                switch a {
                case "-o", "-O":
                    i += 1
                    guard i < args.count, !args[i].isEmpty else { throw UsageError(message: "\(a) needs a value") }
                    if a == "-o" { lists.append(args[i]) } else { output = args[i] }
                default:
                    if a.hasPrefix("-o") && a.count > 2 { lists.append(String(a.dropFirst(2))) }
                    else { throw UsageError(message: "commit: unexpected argument \(a) (\(usage))") }
                }
                i += 1
            }
            guard let output else { throw UsageError(message: "commit needs -O LAYER.tar[.gz|.zst]") }
            let comp = try compression(output)
            let (_, upper) = try DiffCommand.unionDirs(lists, needLowers: false)
            let ufd = try openUpper(upper)
            defer { FS.close(ufd) }
            // Written beside the target and renamed over it: no half-written layer under its name.
            let tmp = output + ".tmp.\(getpid())"
            let fd: Int32
            do { fd = try FS.openPath(Array(tmp.utf8), O_WRONLY | O_CREAT | O_EXCL, mode: 0o644) } catch {
                throw UsageError(message: "-O \(output): \(error)")
            }
            let r: LayerWriter.Result
            do {
                r = try LayerWriter.write(upper: ufd, to: fd, compression: comp)
                try FS.fsync(fd)
                FS.close(fd)
                guard rename(tmp, output) == 0 else { throw Errno(errno) }
            } catch {
                FS.close(fd)
                unlink(tmp)
                throw error
            }
            print("diff ID: \(r.diffID)")
            print("blob:    \(r.blob)  (\(r.bytes) bytes, \(comp.rawValue), \(r.entries) entries)")
            return 0
        } catch let e as UsageError {
            fail(e.message)
            return 2
        } catch let e as LayersError {
            fail("commit: \(e.message)")
            return e.kind == .io ? 1 : 2
        } catch {
            fail("commit: \(error)")
            return 1
        }
    }
}
