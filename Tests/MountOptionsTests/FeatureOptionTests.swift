import XCTest
@testable import MountOptions
import UnionCore

/// redirect_dir=, metacopy=, index=, nfs_export= and data-only layers (`::`), with the
/// kernel's rules for them together (fs/overlayfs/params.c).
final class FeatureOptionTests: XCTestCase {
    func testDataOnlyLayers() throws {
        // As Linux 6.16+, without metacopy=on too.
        XCTAssertEqual(try mountWith("lowerdir=/a::/b", lower: false).dataLayerCount, 1)
        let one = try mountWith("lowerdir=/a::/b,metacopy=on", lower: false)
        XCTAssertEqual(one.lowerDirs, [b("/a"), b("/b")])
        XCTAssertEqual(one.dataLayerCount, 1)
        let two = try mountWith("lowerdir=/a:/b::/c::/d,metacopy=on", lower: false)
        XCTAssertEqual(two.lowerDirs, [b("/a"), b("/b"), b("/c"), b("/d")])
        XCTAssertEqual(two.dataLayerCount, 2)
        XCTAssertEqual(try mountWith("lowerdir=/a:/b", lower: false).dataLayerCount, 0)
    }

    func testEscapedColonsAreNotSeparators() throws {
        // An escaped colon then a separator; two escaped colons inside one path.
        let a = try mountWith(#"lowerdir=/a\::/b"#, lower: false)
        XCTAssertEqual(a.lowerDirs, [b("/a:"), b("/b")])
        XCTAssertEqual(a.dataLayerCount, 0)
        let c = try mountWith(#"lowerdir=/a\:\:/b"#, lower: false)
        XCTAssertEqual(c.lowerDirs, [b("/a::/b")])
        let d = try mountWith(#"lowerdir=/x::/d\:1,metacopy=on"#, lower: false)
        XCTAssertEqual(d.lowerDirs, [b("/x"), b("/d:1")])
        XCTAssertEqual(d.dataLayerCount, 1)
    }

    func testMalformedLayerListsAreRefusedAsTheKernelRefusesThem() {
        refusedOption("lowerdir=/a:::/b,metacopy=on", "only single ':' or double '::'", lower: false)
        refusedOption("lowerdir=:/a", "leading ':'", lower: false)
        refusedOption("lowerdir=::/a,metacopy=on", "leading ':'", lower: false)
        refusedOption("lowerdir=/a:", "trailing colons", lower: false)
        refusedOption("lowerdir=/a::", "trailing colons", lower: false)
        refusedOption("lowerdir=/a::/b:/c,metacopy=on", "regular lower layers cannot follow data lower layers", lower: false)
    }

    func testTheSameLayersSplitDifferentlyConflict() {
        refusedOption("lowerdir=/a:/b,lowerdir=/a::/b,metacopy=on", "conflicts", lower: false)
    }

    func testRedirectDirAndMetacopyResolveAsTheKernels() throws {
        XCTAssertEqual(try mountWith("").redirectDir, .off)
        XCTAssertEqual(try mountWith("").metacopy, false)
        // metacopy=on turns redirect_dir on when it is not given.
        let m = try mountWith("metacopy=on")
        XCTAssertEqual(m.redirectDir, .on)
        XCTAssertEqual(m.metacopy, true)
        XCTAssertEqual(try mountWith("metacopy=on,redirect_dir=on").redirectDir, .on)
        for mode in ["off", "follow", "nofollow"] {
            refusedOption("upperdir=/u,workdir=/w,metacopy=on,redirect_dir=\(mode)",
                          "conflicting options: metacopy=on,redirect_dir=\(mode)")
        }
        // Without an upper, follow is all that redirect_dir=on does.
        XCTAssertEqual(try mountWith("redirect_dir=follow").redirectDir, .on)
        XCTAssertEqual(try mountWith("upperdir=/u,workdir=/w,redirect_dir=follow").redirectDir, .follow)
        XCTAssertEqual(try mountWith("redirect_dir=nofollow").redirectDir, .nofollow)
        // Rootless too: the user.overlay.* namespace carries them (the kernel refuses this pair).
        XCTAssertEqual(try mountWith("userxattr,metacopy=on").redirectDir, .on)
        XCTAssertEqual(try mountWith("userxattr,redirect_dir=on").redirectDir, .on)
    }

    func testIndexIsTakenAndNFSExportIsRefusedOn() throws {
        XCTAssertTrue(try mountWith("upperdir=/u,workdir=/w,index=on").index)
        XCTAssertTrue(try mountWith("userxattr,upperdir=/u,workdir=/w,index=on").index)
        XCTAssertFalse(try mountWith("index=off").index)
        refusedOption("nfs_export=on", "NFS export of the union is not supported")
        XCTAssertNoThrow(try mountWith("index=off,nfs_export=off"))
        refusedOption("index=yes", "on or off")
        refusedOption("metacopy=yes", "on or off")
        refusedOption("redirect_dir=yes", "on, off, follow or nofollow")
    }
}
