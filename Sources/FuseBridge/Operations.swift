import CFuse
import CLinux
import Glibc
import UnionCore

/// The libfuse low-level callbacks. Each one decodes its arguments, calls one
/// `Union` method inside `Bridge.serve` (which traces and answers errors), and
/// encodes the reply. No union logic lives here.
enum Operations {
    static func bridge(_ req: fuse_req_t?) -> Bridge {
        Unmanaged<Bridge>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    static func caller(_ req: fuse_req_t?) -> Caller {
        let ctx = fuse_req_ctx(req)!.pointee
        return Caller(uid: ctx.uid, gid: ctx.gid, pid: ctx.pid, umask: ctx.umask)
    }

    /// A name from the kernel, byte for byte.
    static func name(_ p: UnsafePointer<CChar>?) -> Name { p.map { Name(cString: $0) } ?? Name() }

    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            Unmanaged<Bridge>.fromOpaque(userdata!).takeUnretainedValue().negotiate(conn!)
        }
        ops.lookup = { req, parent, name in
            let b = Operations.bridge(req), n = Operations.name(name)
            let epoch = b.union.lowerEditEpoch
            b.serve(req, .lookup, parent, name: n, replyError: { b.replyNegative(req, $0, parent: parent) }) { () throws(Errno) in
                let (node, st) = try b.union.lookup(parent, n)
                b.replyEntry(req, node.id, st, parent: parent)
            }
            b.union.repliedEntries(parent, [n], since: epoch)
        }
        ops.forget = { req, ino, count in
            Operations.bridge(req).union.forget(ino, count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, list in
            let b = Operations.bridge(req)
            for i in 0..<count { b.union.forget(list![i].ino, list![i].nlookup) }
            fuse_reply_none(req)
        }
        ops.getattr = { req, ino, fi in
            let b = Operations.bridge(req)
            b.serve(req, .getattr, ino) { () throws(Errno) in
                let fd = fi.map { Int32(truncatingIfNeeded: $0.pointee.fh) }
                if let fd { b.union.refreshHandle(fd) }
                b.replyAttr(req, try b.union.getattr(ino, fd: fd), of: ino)
            }
        }
        ops.setattr = { req, ino, attr, toSet, fi in
            let b = Operations.bridge(req)
            b.serve(req, .setattr, ino, args: { "valid=0x\(String(toSet, radix: 16))" }) { () throws(Errno) in
                let a = attr!.pointee
                var c = AttributeChange()
                if toSet & FUSE_SET_ATTR_MODE != 0 { c.mode = a.st_mode }
                if toSet & FUSE_SET_ATTR_UID != 0 { c.uid = a.st_uid }
                if toSet & FUSE_SET_ATTR_GID != 0 { c.gid = a.st_gid }
                if toSet & FUSE_SET_ATTR_SIZE != 0 { c.size = Int64(a.st_size) }
                if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { c.atime = .now } else if toSet & FUSE_SET_ATTR_ATIME != 0 { c.atime = .at(a.st_atim) }
                if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { c.mtime = .now } else if toSet & FUSE_SET_ATTR_MTIME != 0 { c.mtime = .at(a.st_mtim) }
                let fd = fi.map { Int32(truncatingIfNeeded: $0.pointee.fh) }
                if let mode = try b.setIDMode(req, ino, toSet, c, fd: fd) { c.mode = mode }
                b.replyAttr(req, try b.union.setattr(ino, c, fd: fd), of: ino)
            }
        }
        ops.readlink = { req, ino in
            let b = Operations.bridge(req)
            b.serve(req, .readlink, ino) { () throws(Errno) in
                let target = try b.union.readlink(ino)
                Bytes.withCString(target) { _ = fuse_reply_readlink(req, $0) }
            }
        }
        ops.mknod = { req, parent, name, mode, rdev in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .mknod, parent, name: n, args: { "mode=0\(String(mode, radix: 8))" }) { () throws(Errno) in
                let caller = Operations.caller(req)
                let m = (mode & S_IFMT) | (try b.creationMode(parent, mode & ~S_IFMT, caller))
                let (node, st) = try b.union.mknod(parent, n, mode: m, rdev: rdev, caller: caller)
                b.replyEntry(req, node.id, st, parent: parent)
            }
        }
        ops.mkdir = { req, parent, name, mode in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .mkdir, parent, name: n, args: { "mode=0\(String(mode, radix: 8))" }) { () throws(Errno) in
                let caller = Operations.caller(req)
                let (node, st) = try b.union.mkdir(parent, n, mode: try b.creationMode(parent, mode, caller), caller: caller)
                b.replyEntry(req, node.id, st, parent: parent)
            }
        }
        ops.symlink = { req, target, parent, name in
            let b = Operations.bridge(req), n = Operations.name(name), t = Bytes.fromCString(target!)
            b.serve(req, .symlink, parent, name: n, args: { "target=" + Bytes.display(t) }) { () throws(Errno) in
                let (node, st) = try b.union.symlink(parent, n, target: t, caller: Operations.caller(req))
                b.replyEntry(req, node.id, st, parent: parent)
            }
        }
        ops.unlink = { req, parent, name in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .unlink, parent, name: n) { () throws(Errno) in
                try b.union.unlink(parent, n)
                fuse_reply_err(req, 0)
            }
        }
        ops.rmdir = { req, parent, name in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .rmdir, parent, name: n) { () throws(Errno) in
                try b.union.rmdir(parent, n)
                fuse_reply_err(req, 0)
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            let b = Operations.bridge(req), n = Operations.name(name), nn = Operations.name(newName)
            b.serve(req, .rename, parent, name: n, args: { "to=" + Bytes.display(b.union.displayPath(newParent, child: nn)) + " flags=\(flags)" }) { () throws(Errno) in
                try b.union.rename(parent, n, newParent, nn, flags: flags)
                fuse_reply_err(req, 0)
            }
        }
        ops.link = { req, ino, newParent, newName in
            let b = Operations.bridge(req), nn = Operations.name(newName)
            b.serve(req, .link, ino, args: { "to=" + Bytes.display(b.union.displayPath(newParent, child: nn)) }) { () throws(Errno) in
                let (node, st) = try b.union.link(ino, newParent, nn)
                b.replyEntry(req, node.id, st, parent: newParent)
            }
        }
        ops.open = { req, ino, fi in
            let b = Operations.bridge(req)
            let flags = fi!.pointee.flags
            b.serve(req, .open, ino, args: { "flags=\(OpenFlags.describe(flags))" }) { () throws(Errno) in
                let wanted = b.openFlags(flags)
                let fd: Int32
                do throws(Errno) {
                    fd = try b.union.open(ino, flags: wanted)
                } catch where error.rawValue == EACCES && wanted & O_ACCMODE != flags & O_ACCMODE {
                    // A daemon that is not root may not read a write-only file: open it as asked;
                    // the kernel then fails only a partial-page write that needs to read.
                    fd = try b.union.open(ino, flags: flags & ~O_APPEND)
                }
                fi!.pointee.fh = UInt64(fd)
                if flags & O_TRUNC != 0 {
                    do throws(Errno) { try b.dropSetIDForWrite(req, ino, fd: fd) } catch {
                        b.union.release(ino, fd)
                        throw error
                    }
                }
                // The page cache survives close unless a lower edit to the file could go unreported.
                fi!.pointee.keep_cache = b.union.lowerEditsReported(attributesOf: ino) ? 1 : 0
                do throws(Errno) {
                    if let backing = try b.attachBacking(req, ino, fd: fd, flags: flags) { suf_fi_set_backing(fi, backing) }
                } catch {
                    b.union.release(ino, fd)
                    throw error
                }
                if fuse_reply_open(req, fi) != 0 {
                    b.passthrough.detach(req, ino)
                    b.union.release(ino, fd)
                }
            }
        }
        ops.create = { req, parent, name, mode, fi in
            let b = Operations.bridge(req), n = Operations.name(name)
            let flags = fi!.pointee.flags
            b.serve(req, .create, parent, name: n, args: { "flags=\(OpenFlags.describe(flags)) mode=0\(String(mode, radix: 8))" }) { () throws(Errno) in
                let caller = Operations.caller(req)
                let (node, st, fd) = try b.union.create(parent, n, mode: try b.creationMode(parent, mode, caller), flags: b.openFlags(flags), caller: caller)
                fi!.pointee.fh = UInt64(fd)
                do throws(Errno) {
                    if let backing = try b.attachBacking(req, node.id, fd: fd, flags: O_RDWR) { suf_fi_set_backing(fi, backing) }
                } catch {
                    b.union.release(node.id, fd)
                    throw error
                }
                var e = b.entry(node.id, st, parent: parent)
                if fuse_reply_create(req, &e, fi) != 0 {
                    b.passthrough.detach(req, node.id)
                    b.union.release(node.id, fd)
                }
            }
        }
        ops.read = { req, ino, size, offset, fi in
            let b = Operations.bridge(req)
            let fd = Int32(truncatingIfNeeded: fi!.pointee.fh)
            b.serve(req, .read, ino, args: { "size=\(size) off=\(offset)" }) { () throws(Errno) in
                b.stats?.addRead(size)
                b.union.refreshHandle(fd)
                // Small reads: pread + one write is cheaper than setting up a splice pipe.
                if size <= Bridge.spliceThreshold {
                    // (withUnsafeTemporaryAllocation is rethrows: the typed error crosses as a Result.)
                    let result = withUnsafeTemporaryAllocation(byteCount: size, alignment: 4096) { buf in
                        Result { () throws(Errno) in
                            let n = try b.union.read(fd, into: buf, at: Int64(offset))
                            fuse_reply_buf(req, buf.baseAddress?.assumingMemoryBound(to: CChar.self), n)
                        }
                    }
                    return try result.get()
                }
                let rc = suf_reply_fd(req, fd, Int64(offset), size)
                if rc != 0 { throw Errno(-rc) }
            }
        }
        ops.write = { req, ino, buf, size, offset, fi in
            let b = Operations.bridge(req)
            let fd = Int32(truncatingIfNeeded: fi!.pointee.fh)
            b.serve(req, .write, ino, args: { "size=\(size) off=\(offset)" }) { () throws(Errno) in
                if b.killPriv.load(ordering: .relaxed), suf_fi_writepage(fi) == 0 { try b.dropSetIDForWrite(req, ino, fd: fd) }
                let n = try b.union.write(fd, UnsafeRawBufferPointer(start: buf, count: size), at: Int64(offset))
                b.stats?.addWritten(n)
                fuse_reply_write(req, n)
            }
        }
        ops.flush = { req, ino, fi in fuse_reply_err(req, 0) }
        ops.release = { req, ino, fi in
            let b = Operations.bridge(req)
            b.passthrough.detach(req, ino)
            b.union.release(ino, Int32(truncatingIfNeeded: fi!.pointee.fh))
            fuse_reply_err(req, 0)
        }
        ops.fsync = { req, ino, datasync, fi in
            let b = Operations.bridge(req)
            b.serve(req, .fsync, ino) { () throws(Errno) in
                try b.union.fsync(Int32(truncatingIfNeeded: fi!.pointee.fh), dataOnly: datasync != 0)
                fuse_reply_err(req, 0)
            }
        }
        ops.opendir = { req, ino, fi in
            let b = Operations.bridge(req)
            b.serve(req, .opendir, ino) { () throws(Errno) in
                let dir = try b.union.opendir(ino)
                fi!.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(dir).toOpaque()))
                fi!.pointee.cache_readdir = dir.cacheable ? 1 : 0
                fi!.pointee.keep_cache = dir.cacheable ? 1 : 0
                if fuse_reply_open(req, fi) != 0 { Unmanaged.passUnretained(dir).release() }
            }
        }
        ops.readdir = { req, ino, size, offset, fi in
            let b = Operations.bridge(req)
            b.serve(req, .readdir, ino, args: { "off=\(offset)" }) { () throws(Errno) in try b.replyDirectory(req, ino, size, offset, fi!, plus: false) }
        }
        ops.readdirplus = { req, ino, size, offset, fi in
            let b = Operations.bridge(req)
            b.serve(req, .readdirplus, ino, args: { "off=\(offset)" }) { () throws(Errno) in try b.replyDirectory(req, ino, size, offset, fi!, plus: true) }
        }
        ops.releasedir = { req, ino, fi in
            Unmanaged<MergedDirectory>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi!.pointee.fh))!).release()
            fuse_reply_err(req, 0)
        }
        ops.fsyncdir = { req, ino, datasync, fi in
            let b = Operations.bridge(req)
            b.serve(req, .fsyncdir, ino) { () throws(Errno) in
                try b.union.fsyncdir(ino)
                fuse_reply_err(req, 0)
            }
        }
        ops.statfs = { req, ino in
            let b = Operations.bridge(req)
            b.serve(req, .statfs, ino) { () throws(Errno) in
                var sv = try b.union.statfs(ino)
                fuse_reply_statfs(req, &sv)
            }
        }
        ops.setxattr = { req, ino, name, value, size, flags in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .setxattr, ino, args: { "name=\(n) size=\(size)" }) { () throws(Errno) in
                try b.union.setxattr(ino, n, UnsafeRawBufferPointer(start: value, count: size), flags: flags)
                fuse_reply_err(req, 0)
            }
        }
        ops.getxattr = { req, ino, name, size in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .getxattr, ino, args: { "name=\(n)" }) { () throws(Errno) in
                let value = try b.union.getxattr(ino, n)
                if size == 0 { fuse_reply_xattr(req, value.count); return }
                guard value.count <= size else { throw Errno.range }
                value.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), value.count) }
            }
        }
        ops.listxattr = { req, ino, size in
            let b = Operations.bridge(req)
            b.serve(req, .listxattr, ino) { () throws(Errno) in
                var list: [UInt8] = []
                for n in try b.union.listxattr(ino) {
                    n.withUnsafeBytes { list.append(contentsOf: $0) }
                    list.append(0)
                }
                if size == 0 { fuse_reply_xattr(req, list.count); return }
                guard list.count <= size else { throw Errno.range }
                list.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), list.count) }
            }
        }
        ops.removexattr = { req, ino, name in
            let b = Operations.bridge(req), n = Operations.name(name)
            b.serve(req, .removexattr, ino, args: { "name=\(n)" }) { () throws(Errno) in
                try b.union.removexattr(ino, n)
                fuse_reply_err(req, 0)
            }
        }
        ops.fallocate = { req, ino, mode, offset, length, fi in
            let b = Operations.bridge(req)
            b.serve(req, .fallocate, ino, args: { "mode=\(mode) off=\(offset) len=\(length)" }) { () throws(Errno) in
                try b.union.fallocate(Int32(truncatingIfNeeded: fi!.pointee.fh), mode: mode, offset: Int64(offset), length: Int64(length))
                fuse_reply_err(req, 0)
            }
        }
        ops.lseek = { req, ino, offset, whence, fi in
            let b = Operations.bridge(req)
            b.serve(req, .lseek, ino, args: { "off=\(offset) whence=\(whence)" }) { () throws(Errno) in
                b.union.refreshHandle(Int32(truncatingIfNeeded: fi!.pointee.fh))
                fuse_reply_lseek(req, off_t(try b.union.lseek(Int32(truncatingIfNeeded: fi!.pointee.fh), offset: Int64(offset), whence: whence)))
            }
        }
        ops.copy_file_range = { req, inoIn, offIn, fiIn, inoOut, offOut, fiOut, len, flags in
            let b = Operations.bridge(req)
            b.serve(req, .copyFileRange, inoOut, args: { "len=\(len)" }) { () throws(Errno) in
                b.union.refreshHandle(Int32(truncatingIfNeeded: fiIn!.pointee.fh))
                let n = try b.union.copyFileRange(Int32(truncatingIfNeeded: fiIn!.pointee.fh), Int64(offIn),
                                                  Int32(truncatingIfNeeded: fiOut!.pointee.fh), Int64(offOut), len)
                fuse_reply_write(req, n)
            }
        }
        return ops
    }
}

enum OpenFlags {
    static func describe(_ flags: Int32) -> String {
        var parts: [String] = [["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][Int(flags & O_ACCMODE)]]
        for (bit, name) in [(O_CREAT, "O_CREAT"), (O_EXCL, "O_EXCL"), (O_TRUNC, "O_TRUNC"), (O_APPEND, "O_APPEND"),
                            (O_DIRECTORY, "O_DIRECTORY"), (O_NOFOLLOW, "O_NOFOLLOW"), (O_DIRECT, "O_DIRECT")] where flags & bit != 0 {
            parts.append(name)
        }
        return parts.joined(separator: "|")
    }
}
