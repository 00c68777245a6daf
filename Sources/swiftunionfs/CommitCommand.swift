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
    static func openUpper(_ path: [UInt8]) throws -> Int32 {
        let fd = try DiffCommand.openDir(path, role: "upperdir")
        var tries = 0
        while flock(fd, LOCK_SH | LOCK_NB) != 0 && tries < 40 {
            tries += 1
            usleep(50_000)
        }
        if tries == 40 {
            FS.close(fd)
            throw UsageError(message: "upperdir \(Bytes.display(path)) is in use by a mount; unmount it before committing")
        }
        return fd
    }

    static func compression(_ out: [UInt8]) throws -> TarWriter.Compression {
        func ends(_ s: String) -> Bool { out.count >= s.utf8.count && out.suffix(s.utf8.count).elementsEqual(s.utf8) }
        if ends(".tar") { return .none }
        if ends(".tar.gz") || ends(".tgz") { return .gzip }
        if ends(".tar.zst") || ends(".tar.zstd") { return .zstd }
        throw UsageError(message: "-O \(Bytes.display(out)): the name must end in .tar, .tar.gz or .tar.zst (it chooses the compression)")
    }

    static func main(_ args: [[UInt8]]) -> Int32 {
        var lists: [[UInt8]] = [], output: [UInt8]?
        do {
            var i = 0
            while i < args.count {
                if let l = try DiffCommand.optionList(args, &i) {
                    lists.append(l)
                } else if args[i].elementsEqual("-O".utf8) {
                    i += 1
                    guard i < args.count, !args[i].isEmpty else { throw UsageError(message: "-O needs a value") }
                    output = args[i]
                } else {
                    throw UsageError(message: "commit: unexpected argument \(Bytes.display(args[i])) (\(usage))")
                }
                i += 1
            }
            guard let output else { throw UsageError(message: "commit needs -O LAYER.tar[.gz|.zst]") }
            let comp = try compression(output)
            let (_, upper) = try DiffCommand.unionDirs(lists, needLowers: false)
            let ufd = try openUpper(upper)
            defer { FS.close(ufd) }
            // Written beside the target and renamed over it: no half-written layer under its name.
            let tmp = output + Array(".tmp.\(getpid())".utf8)
            let fd: Int32
            do { fd = try FS.openPath(tmp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644) } catch {
                throw UsageError(message: "-O \(Bytes.display(output)): \(error)")
            }
            let r: LayerWriter.Result
            do {
                defer { FS.close(fd) }
                r = try LayerWriter.write(upper: ufd, to: fd, compression: comp)
                try FS.fsync(fd)
            } catch {
                try? Sys.unlinkPath(tmp)
                throw error
            }
            do { try Sys.renamePath(tmp, output) } catch {
                try? Sys.unlinkPath(tmp)
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
