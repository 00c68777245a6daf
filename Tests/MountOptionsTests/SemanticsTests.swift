import XCTest
import UnionCore
@testable import MountOptions

/// Every option keeps the meaning the earlier parser gave it (podman and containers/storage
/// depend on them, docs/podman.md), and the new ones mean what README says.
final class SemanticsTests: XCTestCase {
    func testDefaults() throws {
        let cmd = try mountWith("")
        XCTAssertEqual(cmd.timeout, 3600)
        XCTAssertFalse(cmd.skipSync || cmd.noXattrs || cmd.staticNlink || cmd.squashToRoot || cmd.singleThreaded)
        XCTAssertNil(cmd.trace)
        XCTAssertEqual(cmd.traceFormat, .text)
        XCTAssertNil(cmd.log)
        XCTAssertNil(cmd.whiteout)
        XCTAssertNil(cmd.xattrNamespace)
        XCTAssertTrue(cmd.uidMap.isIdentity && cmd.gidMap.isIdentity)
        XCTAssertEqual(cmd.fuseOptions, [])
    }

    func testContainersStorageCommandLine() throws {
        let cmd = try MountCommand.parse(arguments: [
            b("-o"), b("nodev,lowerdir=/g/l/A:/g/l/B,upperdir=/g/c/diff,workdir=/g/c/work,,volatile,uidmapping=:0:100000:65536,gidmapping=:0:100000:65536,context=\"system_u:object_r:container_file_t:s0:c1,c2\""),
            b("/g/c/merged")])
        XCTAssertEqual(cmd.fuseOptions, [b("nodev")])
        XCTAssertEqual(cmd.lowerDirs, [b("/g/l/A"), b("/g/l/B")])
        XCTAssertTrue(cmd.skipSync)
        XCTAssertEqual(cmd.uidMap.toContainer(0), 100000)
        XCTAssertEqual(cmd.gidMap.toHost(100001), 1)
    }

    func testSync() throws {
        XCTAssertTrue(try mountWith("volatile").skipSync)
        XCTAssertTrue(try mountWith("fsync=0").skipSync)
        XCTAssertFalse(try mountWith("fsync=0").writeback)
        XCTAssertTrue(try mountWith("writeback=1").writeback)
        XCTAssertFalse(try mountWith("writeback=0").writeback)
        refusedOption("writeback=2", "0 or 1")
        refusedOption("writeback=1,writeback=0", "conflicts")
        XCTAssertFalse(try mountWith("fsync=1").skipSync)
        XCTAssertTrue(try mountWith("volatile,fsync=0").skipSync)
        refusedOption("volatile,fsync=1", "fsync=1", "volatile", "conflicts")
    }

    func testMarkers() throws {
        XCTAssertEqual(try mountWith("whiteout=device").whiteout, .device)
        XCTAssertEqual(try mountWith("whiteout=oci").whiteout, .ociFile)
        XCTAssertEqual(try mountWith("xattr_namespace=trusted").xattrNamespace, .trusted)
        XCTAssertEqual(try mountWith("xattr_namespace=user").xattrNamespace, .user)
        XCTAssertEqual(try mountWith("userxattr").xattrNamespace, .user)
        XCTAssertEqual(try mountWith("userxattr,xattr_namespace=user").xattrNamespace, .user)
        refusedOption("userxattr,xattr_namespace=trusted", "conflicts")
    }

    func testTimeout() throws {
        XCTAssertEqual(try mountWith("timeout=0").timeout, 0)
        XCTAssertEqual(try mountWith("timeout=2.5").timeout, 2.5)
        XCTAssertEqual(try mountWith("timeout=0.000000001").timeout, 1e-9)
        XCTAssertEqual(try mountWith("timeout=1000000000").timeout, 1e9)
        XCTAssertEqual(try mountWith("timeout=1000000000.0").timeout, 1e9)
        XCTAssertEqual(try mountWith("timeout=007").timeout, 7)
        XCTAssertNoThrow(try mountWith("timeout=10,timeout=10.0"))  // the same number
        for v in ["1000000000.1", "1000000001", "-1", ".5", "5.", "1.0000000001", "1..2", "1.2.3", "inf", "nan", "1e3", "0x1", "1 5"] {
            refusedOption("timeout=\(v)", "timeout")
        }
    }

    func testWatch() throws {
        XCTAssertEqual(try mountWith("").watch, .auto)
        XCTAssertNil(try mountWith("").watchLimit)
        for mode in LowerWatchMode.allCases {
            XCTAssertEqual(try mountWith("watch=\(mode.rawValue)").watch, mode)
        }
        XCTAssertEqual(try mountWith("watch_limit=0").watchLimit, 0)
        XCTAssertEqual(try mountWith("watch_limit=1048576").watchLimit, 1 << 20)
        XCTAssertEqual(try mountWith("watch=inotify,watch_limit=16").watchLimit, 16)
        refusedOption("watch_limit=1048577", "0 to 1048576")
        refusedOption("watch=on", "off, auto, fanotify or inotify")
        refusedOption("watch=Auto", "off, auto, fanotify or inotify")
        refusedOption("watch=off,watch=auto", "conflicts")
        XCTAssertNoThrow(try mountWith("watch=off,watch=off"))
    }

    func testOwnersAndXattrs() throws {
        XCTAssertTrue(try mountWith("squash_to_root").squashToRoot)
        XCTAssertEqual(try mountWith("squash_to_uid=0").squashToUID, 0)
        XCTAssertEqual(try mountWith("squash_to_gid=4294967294").squashToGID, 4294967294)
        refusedOption("squash_to_uid=4294967295", "0 to 4294967294")
        refusedOption("squash_to_gid=99999999999", "0 to 4294967294")
        let both = try mountWith("squash_to_root,squash_to_uid=5")   // squash_to_uid wins, in the core
        XCTAssertTrue(both.squashToRoot)
        XCTAssertEqual(both.squashToUID, 5)
        XCTAssertTrue(try mountWith("noxattrs=1").noXattrs)
        XCTAssertFalse(try mountWith("noxattrs=0").noXattrs)
        XCTAssertTrue(try mountWith("static_nlink").staticNlink)
        XCTAssertTrue(try mountWith("threaded=0").singleThreaded)
        XCTAssertFalse(try mountWith("threaded=1").singleThreaded)
        XCTAssertEqual(try mountWith("xattr_permissions=0").xattrPermissions, .off)
        XCTAssertEqual(try mountWith("xattr_permissions=1").xattrPermissions, .security)
        XCTAssertEqual(try mountWith("xattr_permissions=2").xattrPermissions, .user)
        XCTAssertEqual(try mountWith("xattr_permissions=2,xattr_permissions=2").xattrPermissions, .user)
        refusedOption("xattr_permissions=1,xattr_permissions=2", "conflicts")
        for bad in ["3", "02", "-1", "x", "1 "] { refusedOption("xattr_permissions=\(bad)", "must be 0, 1") }
    }

    func testTracing() throws {
        XCTAssertEqual(try mountWith("trace").trace, .stderr)
        XCTAssertEqual(try mountWith("trace=/t").trace, .file(b("/t")))
        XCTAssertEqual(try mountWith("trace=stderr").trace, .file(b("stderr")))  // a file, as before
        refusedOption("trace,trace=/t", "conflicts")
        XCTAssertEqual(try mountWith("trace_format=json").traceFormat, .json)
        XCTAssertEqual(try mountWith("trace_ops=open:rename+read_dir").traceOps, ["open", "rename", "read_dir"])
        refusedOption("trace_ops=open::rename", "operation names")
        refusedOption("trace_ops=op\u{E9}n", "operation names")
        XCTAssertEqual(try mountWith("trace_path=/usr/lib").tracePath, b("/usr/lib"))
        XCTAssertEqual(try mountWith("stats=/s.json").statsFile, b("/s.json"))
        XCTAssertNoThrow(try mountWith("log=syslog,log=syslog"))
        refusedOption("log=syslog,log=stderr", "conflicts")
    }

    func testPassedThrough() throws {
        let cmd = try mountWith("allow_other,default_permissions,ro,nosuid,fsname=my\\,fs,subtype=x,fsname=my\\,fs")
        // As written: libfuse undoes the escapes itself.
        XCTAssertEqual(cmd.fuseOptions, [b("allow_other"), b("default_permissions"), b("ro"), b("nosuid"), b("fsname=my\\,fs"), b("subtype=x")])
        refusedOption("fsname=a,fsname=b", "conflicts")
        // Contradicting mount flags follow mount(8): both go to libfuse, the last one wins there.
        XCTAssertEqual(try mountWith("ro,rw").fuseOptions, [b("ro"), b("rw")])
        refusedOption("allow_other=1", "takes no value")
        refusedOption("splice_read", "unknown option")
        refusedOption("kernel_cache", "unknown option")
    }

    func testIgnored() throws {
        let cmd = try mountWith("noauto,_netdev,defaults,relatime,noacl,redirect_dir=on,index=off,metacopy=on,xino=auto,nfs_export=off,fast_ino=1,plugins=/p,context=\"a:b\",fscontext=x,defcontext=y,rootcontext=z")
        XCTAssertEqual(cmd.fuseOptions, [])
        XCTAssertTrue(cmd.noACL, "noacl turns the kernel's ACL checks off")
        XCTAssertFalse(try mountWith("defaults").noACL)
        refusedOption("index=1", "on or off")
        refusedOption("xino=maybe", "on, off or auto")
        refusedOption("redirect_dir=yes", "on, off, follow or nofollow")
        refusedOption("fast_ino=2", "0 or 1")
        refusedOption("writeback", "needs a value")
        refusedOption("context=a,context=b", "conflicts")
    }
}
