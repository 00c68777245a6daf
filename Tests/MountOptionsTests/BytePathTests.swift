import XCTest
@testable import MountOptions

/// Paths are bytes: what is not UTF-8 stays as given, and canonically equivalent spellings
/// stay different.
final class BytePathTests: XCTestCase {
    let nfc: [UInt8] = [0xC3, 0xA9]               // é, U+00E9
    let nfd: [UInt8] = [0x65, 0xCC, 0x81]         // e + U+0301
    let latin1: [UInt8] = [0xE9]                  // é in Latin-1: not UTF-8
    let ff: [UInt8] = [0xFF]

    func testNonUTF8BytesInEveryPathOption() throws {
        let odd = b("/x") + ff + latin1 + b("y")
        var list = b("lowerdir=") + odd + b(":") + odd + b("2")
        for key in ["upperdir", "workdir", "trace", "stats", "log", "trace_path"] {
            list += b(",\(key)=") + odd + b(key)
        }
        let cmd = try MountCommand.parse(arguments: [b("-o"), list, odd + b("src"), odd + b("mnt")])
        XCTAssertEqual(cmd.lowerDirs, [odd, odd + b("2")])
        XCTAssertEqual(cmd.upperDir, odd + b("upperdir"))
        XCTAssertEqual(cmd.workDir, odd + b("workdir"))
        XCTAssertEqual(cmd.trace, .file(odd + b("trace")))
        XCTAssertEqual(cmd.statsFile, odd + b("stats"))
        XCTAssertEqual(cmd.log, .file(odd + b("log")))
        XCTAssertEqual(cmd.tracePath, odd + b("trace_path"))
        XCTAssertEqual(cmd.source, odd + b("src"))
        XCTAssertEqual(cmd.mountpoint, odd + b("mnt"))
    }

    func testNFCAndNFDStayDistinct() throws {
        let a = b("/l/") + nfc, d = b("/l/") + nfd
        // Two layers whose names are canonically equivalent are two layers.
        let cmd = try mountWith(b("lowerdir=") + a + b(":") + d, lower: false)
        XCTAssertEqual(cmd.lowerDirs, [a, d])
        // The same setting spelled NFC then NFD is two different values.
        refusedOption(b("upperdir=") + a + b(",upperdir=") + d, "conflicts")
        XCTAssertNoThrow(try mountWith(b("upperdir=") + a + b(",upperdir=") + a))
    }

    func testEscapedBytesNextToNonUTF8() throws {
        let cmd = try mountWith(b("upperdir=/a") + ff + b(#"\:\,"#) + latin1 + b(#"\\"#))
        XCTAssertEqual(cmd.upperDir, b("/a") + ff + b(":,") + latin1 + b(#"\"#))
        // A backslash before a byte that is not UTF-8 takes that byte.
        XCTAssertEqual(try mountWith(b(#"upperdir=/\"#) + ff).upperDir, b("/") + ff)
    }

    func testMessagesShowBytesLosslessly() {
        let m = refusal({ try mountWith(b("frob=/a") + ff + latin1 + b(#"\\"#) + [0x0A]) })
        XCTAssertEqual(m, #"unknown option 'frob=/a\xFF\xE9\\\\\x0A' (see --help)"#)
        let n = refusal({ try mountWith(b("frob=") + nfc + nfd) })
        XCTAssertEqual(n, "unknown option 'frob=\u{E9}e\u{301}' (see --help)")
    }

    func testNoUnicodeInterpretation() {
        // Keywords are bytes: a fullwidth or composed look-alike is not the keyword.
        refusedOption("whiteout=ｏci", "device or oci")
        refusedOption("trace_format=te\u{301}xt", "text or json")
        // log=syslog is the keyword, log=./syslog a file; NFD/ligature spellings are files.
        XCTAssertEqual(try mountWith("log=syslog").log, .syslog)
        XCTAssertEqual(try mountWith("log=./syslog").log, .file(b("./syslog")))
        XCTAssertEqual(try mountWith("log=stderr").log, .stderr)
        XCTAssertEqual(try mountWith("log=/var/log/suf").log, .file(b("/var/log/suf")))
    }
}
