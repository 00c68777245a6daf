import XCTest
@testable import MountOptions

/// The -o list's escapes, as the kernel's overlayfs reads them (fs/overlayfs/params.c):
/// a backslash takes the next byte literally in the list, in lowerdir's colon list and in every
/// path; the splitter honours `\,`.
final class EscapeTests: XCTestCase {
    func testEscapedColonAndCommaAndBackslashInEveryPathOption() throws {
        // as written: /a\:b\,c\\d   means: /a:b,c\d
        let written = #"/a\:b\,c\\d"#
        let meant = b(#"/a:b,c\d"#)
        let cmd = try mountWith("upperdir=\(written),workdir=\(written)w,trace=\(written)t,stats=\(written)s,log=\(written)g,trace_path=\(written)p")
        XCTAssertEqual(cmd.upperDir, meant)
        XCTAssertEqual(cmd.workDir, meant + b("w"))
        XCTAssertEqual(cmd.trace, .file(meant + b("t")))
        XCTAssertEqual(cmd.statsFile, meant + b("s"))
        XCTAssertEqual(cmd.log, .file(meant + b("g")))
        XCTAssertEqual(cmd.tracePath, meant + b("p"))
    }

    func testLowerdirSplitsOnUnescapedColonsOnly() throws {
        let cmd = try mountWith(#"lowerdir=/a\:b:/c\,d:/e\\:/f"#, lower: false)
        XCTAssertEqual(cmd.lowerDirs, [b("/a:b"), b("/c,d"), b(#"/e\"#), b("/f")])
    }

    func testEscapedCommaDoesNotEndTheItem() throws {
        let cmd = try mountWith(#"upperdir=/u\,workdir=/w"#)
        XCTAssertEqual(cmd.upperDir, b("/u,workdir=/w"))
        XCTAssertNil(cmd.workDir)
    }

    func testBackslashBeforeAnyByteMeansThatByte() throws {
        XCTAssertEqual(try mountWith(#"upperdir=/\u\p"#).upperDir, b("/up"))
        XCTAssertEqual(try mountWith(#"upperdir=\/x"#).upperDir, b("/x"))
        XCTAssertEqual(try mountWith(#"upperdir=/x\="#).upperDir, b("/x="))
        XCTAssertEqual(try mountWith("upperdir=/x\\\u{FF}"[...].utf8.map { $0 }).upperDir, b("/x\u{FF}"))
    }

    func testTrailingBackslashIsRefused() {
        refusedOption(#"upperdir=/u\"#, "lone backslash")
        refusedOption(#"lowerdir=/a\"#, "lone backslash", lower: false)
        refusedOption(#"volatile,\"#, "lone backslash")
        // An escaped backslash at the end is a backslash.
        XCTAssertEqual(try mountWith(#"upperdir=/u\\"#).upperDir, b(#"/u\"#))
    }

    func testEmptyItemsAreSkipped() throws {
        // containers/storage writes ",,volatile" when no mountopt is configured.
        let cmd = try mountWith(",,volatile,,")
        XCTAssertTrue(cmd.skipSync)
        XCTAssertEqual(try MountCommand.parse(arguments: [b("-o"), b(""), b("-o"), b("lowerdir=/l"), b("/m")]).lowerDirs, [b("/l")])
    }

    func testEmptyLayersAreRefused() {
        // (FeatureOptionTests has the kernel's exact rules for colons, and '::' data layers.)
        for v in ["lowerdir=:/a", "lowerdir=/a:", "lowerdir=::/b", "lowerdir=:", "lowerdir=/a:::/b"] {
            refusedOption(v, "lowerdir=", lower: false)
        }
        // An escaped colon alone is a layer named ":".
        XCTAssertEqual(try mountWith(#"lowerdir=\:"#, lower: false).lowerDirs, [b(":")])
    }

    func testTooManyLayers() throws {
        let ok = (0..<MountCommand.maxLowerDirs).map { "/l\($0)" }.joined(separator: ":")
        XCTAssertEqual(try mountWith("lowerdir=" + ok, lower: false).lowerDirs.count, MountCommand.maxLowerDirs)
        refusedOption("lowerdir=" + ok + ":/one-more", "501 layers", lower: false)
    }

    func testQuotesOnlyInSELinuxContexts() throws {
        // containers/storage: context="system_u:object_r:container_file_t:s0:c1,c2"
        let cmd = try mountWith(#"context="system_u:object_r:container_file_t:s0:c1,c2",volatile"#)
        XCTAssertTrue(cmd.skipSync)
        refusedOption(#"context="a,b"#, "unterminated double quote")
        // Elsewhere a quote is an ordinary byte of a path.
        let q = try mountWith(#"upperdir=/a"b,workdir=/w"c"#)
        XCTAssertEqual(q.upperDir, b(#"/a"b"#))
        XCTAssertEqual(q.workDir, b(#"/w"c"#))
    }

    func testKeysAreExactBytes() {
        refusedOption("Upperdir=/u", "unknown option")
        refusedOption("upperdir =/u", "unknown option")
        refusedOption(" upperdir=/u", "unknown option")
        refusedOption(#"upper\dir=/u"#, "unknown option")
        refusedOption(b("upperdir") + [0xC2, 0xA0] + b("=/u"), "unknown option")
        refusedOption("ｕpperdir=/u", "unknown option")  // fullwidth u
    }

    func testSplitterItems() throws {
        let items = try OptionList.split(b(#"a,b\,c,,d="x,y",context="p,q",e\\,f"#))
        XCTAssertEqual(items.map { Array($0.text) }, [b("a"), b(#"b\,c"#), b(#"d="x"#), b(#"y""#), b(#"context="p,q""#), b(#"e\\"#), b("f")])
        XCTAssertEqual(items[1].rawValue, nil)
        XCTAssertEqual(items[2].key.map { $0 }, b("d"))
        XCTAssertEqual(items[2].rawValue.map { Array($0) }, b(#""x"#))
    }
}
