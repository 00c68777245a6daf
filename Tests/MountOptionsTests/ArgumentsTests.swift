import XCTest
@testable import MountOptions

/// The argv forms: ours, mount.fuse3's, repeated -o, flags.
final class ArgumentsTests: XCTestCase {
    func parse(_ args: ArgumentBytes...) throws -> MountCommand {
        try MountCommand.parse(arguments: args.map(\.argBytes))
    }

    func testOwnForm() throws {
        let cmd = try parse("-f", "-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/mnt")
        XCTAssertTrue(cmd.foreground)
        XCTAssertNil(cmd.source)
        XCTAssertEqual(cmd.mountpoint, b("/mnt"))
        XCTAssertEqual(cmd.lowerDirs, [b("/a"), b("/b")])
        XCTAssertEqual(cmd.upperDir, b("/u"))
        XCTAssertEqual(cmd.workDir, b("/w"))
    }

    func testMountFuse3Form() throws {
        // mount -t fuse.swiftunionfs layers /c/merged -o ...  runs  swiftunionfs layers /c/merged -o rw,...
        let cmd = try parse("layers", "/c/merged", "-o", "rw,lowerdir=/l,upperdir=/u,workdir=/w,nodev,_netdev")
        XCTAssertEqual(cmd.source, b("layers"))
        XCTAssertEqual(cmd.mountpoint, b("/c/merged"))
        XCTAssertEqual(cmd.fuseOptions, [b("rw"), b("nodev")])
        XCTAssertEqual(cmd.lowerDirs, [b("/l")])
    }

    func testRepeatedAndAttachedO() throws {
        let cmd = try parse("-o", "lowerdir=/l", "-oupperdir=/u", "-o", "workdir=/w,volatile", "-o", "volatile", "/m")
        XCTAssertEqual(cmd.upperDir, b("/u"))
        XCTAssertEqual(cmd.workDir, b("/w"))
        XCTAssertTrue(cmd.skipSync)
        refusal({ try self.parse("-o", "lowerdir=/l", "-o", "lowerdir=/k", "/m") }, "lowerdir=/k", "lowerdir=/l", "conflicts")
        refusal({ try self.parse("-olowerdir=/l", "-o", "fsync=1", "-o", "volatile", "/m") }, "volatile", "fsync=1")
    }

    func testFlags() throws {
        let cmd = try parse("-d", "-s", "-v", "-o", "lowerdir=/l", "/m")
        XCTAssertTrue(cmd.debug && cmd.foreground && cmd.singleThreaded && cmd.verbose)
        XCTAssertTrue(try parse("--debug", "--verbose", "-o", "lowerdir=/l", "/m").verbose)
        XCTAssertTrue(try parse("-s", "-s", "-o", "lowerdir=/l,threaded=0", "/m").singleThreaded)
        refusal({ try self.parse("-s", "-o", "lowerdir=/l,threaded=1", "/m") }, "threaded=1", "-s")
        XCTAssertFalse(try parse("-o", "lowerdir=/l,threaded=1", "/m").singleThreaded)
        XCTAssertTrue(try parse("-o", "lowerdir=/l,debug", "/m").foreground)
    }

    func testBadForms() {
        refusal({ try self.parse("-o") }, "-o needs a list")
        refusal({ try self.parse("/m", "-o") }, "-o needs a list")
        refusal({ try self.parse("-o", "lowerdir=/l") }, "no mountpoint")
        refusal({ try self.parse("-o", "lowerdir=/l", "a", "b", "c") }, "too many arguments: a b c")
        refusal({ try self.parse("-x", "-o", "lowerdir=/l", "/m") }, "unknown flag -x")
        refusal({ try self.parse("--frobnicate", "-o", "lowerdir=/l", "/m") }, "unknown flag --frobnicate")
        refusal({ try self.parse("--", "-o", "lowerdir=/l", "/m") }, "unknown flag --")
        refusal({ try self.parse("-o", "lowerdir=/l", "") }, "empty argument")
        refusal({ try self.parse("/m") }, "lowerdir= is required")
        refusal({ try self.parse("-o", "upperdir=/u", "/m") }, "lowerdir= is required")
        refusal({ try self.parse("-o", "lowerdir", "/m") }, "lowerdir needs a value")
        refusal({ try self.parse() }, "no mountpoint")
    }

    func testDashAloneIsAPath() throws {
        XCTAssertEqual(try parse("-o", "lowerdir=/l", "-").mountpoint, b("-"))
    }

    func testNonUTF8Positionals() throws {
        let cmd = try parse(b("/s") + [0xFF], "-o", "lowerdir=/l", b("/m") + [0xE9])
        XCTAssertEqual(cmd.source, b("/s") + [0xFF])
        XCTAssertEqual(cmd.mountpoint, b("/m") + [0xE9])
    }
}
