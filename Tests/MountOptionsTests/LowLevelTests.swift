import XCTest
@testable import MountOptions

/// The number readers and the message printer on their own, and inputs too large for a
/// quadratic pass to finish.
final class LowLevelTests: XCTestCase {
    func testDecimal() {
        XCTAssertEqual(Numbers.decimal(b("0"), max: 10), 0)
        XCTAssertEqual(Numbers.decimal(b("10"), max: 10), 10)
        XCTAssertNil(Numbers.decimal(b("11"), max: 10))
        XCTAssertNil(Numbers.decimal(b(""), max: 10))
        XCTAssertEqual(Numbers.id(b("4294967295"), max: UInt32.max), UInt32.max)
        XCTAssertNil(Numbers.id(b("4294967296"), max: UInt32.max))
        XCTAssertNil(Numbers.id(b("18446744073709551616"), max: UInt32.max))   // 2^64: no wrap to 0
        XCTAssertNil(Numbers.id(b("18446744073709551615"), max: UInt32.max))
        XCTAssertEqual(Numbers.bit(b("1")), true)
        XCTAssertNil(Numbers.bit(b("01")))
        XCTAssertNil(Numbers.bit(b("")))
    }

    func testSeconds() {
        XCTAssertEqual(Numbers.seconds(b("1.5")[...]), 1.5)
        XCTAssertEqual(Numbers.seconds(b("0.123456789")[...]), 0.123456789)
        XCTAssertNil(Numbers.seconds(b("0.1234567891")[...]))
        XCTAssertNil(Numbers.seconds(b("999999999999999999999999")[...]))
    }

    func testPrintable() {
        XCTAssertEqual(Printable.text(b("plain /path")), "plain /path")
        XCTAssertEqual(Printable.text(b("tab\there")), "tab\\x09here")
        XCTAssertEqual(Printable.text([0x61, 0xFF, 0x5C, 0x7F]), "a\\xFF\\\\\\x7F")
        XCTAssertEqual(Printable.text([0xED, 0xA0, 0x80]), "\\xED\\xA0\\x80")        // a surrogate is not UTF-8
        XCTAssertEqual(Printable.text([0xC0, 0xAF]), "\\xC0\\xAF")                   // nor an overlong '/'
        XCTAssertEqual(Printable.text([0xF0, 0x9F, 0x98, 0x80]), "\u{1F600}")
        XCTAssertEqual(Printable.text([0xE2, 0x82]), "\\xE2\\x82")                   // truncated sequence
        let long = Printable.text([UInt8](repeating: 0x61, count: 1 << 20))
        XCTAssertEqual(long, String(repeating: "a", count: 240) + "...(1048576 bytes)")
    }

    /// A megabyte -o string of each shape, to the end: a quadratic pass would not finish.
    func testHugeOptionLists() throws {
        let mb = 1 << 20
        // Many items.
        let many = b("lowerdir=/l") + Array([[UInt8]](repeating: b(",nodev"), count: mb / 6).joined())
        XCTAssertEqual(try MountCommand.parse(arguments: [b("-o"), many, b("/m")]).fuseOptions.count, mb / 6)
        // Many empty items.
        let commas = b("lowerdir=/l") + [UInt8](repeating: UInt8(ascii: ","), count: mb)
        XCTAssertNoThrow(try MountCommand.parse(arguments: [b("-o"), commas, b("/m")]))
        // One long escaped path.
        let escaped = b("lowerdir=") + Array([[UInt8]](repeating: b(#"\:"#), count: mb / 2).joined())
        XCTAssertEqual(try MountCommand.parse(arguments: [b("-o"), escaped, b("/m")]).lowerDirs.first?.count, mb / 2)
        // Many layers: refused at the limit, the message short.
        let layers = b("lowerdir=") + Array([[UInt8]](repeating: b("/a:"), count: mb / 3).joined()) + b("/a")
        refusal({ try MountCommand.parse(arguments: [b("-o"), layers, b("/m")]) }, "layers, more than 500")
        // Many id triples.
        let triples = b("lowerdir=/l,uidmapping=") + Array((0..<(mb / 16)).map { b("\($0):\($0):1:") }.joined())
        refusal({ try MountCommand.parse(arguments: [b("-o"), triples, b("/m")]) }, "more than the 340")
        // Quotes everywhere, and a megabyte inside one quoted context.
        let quotes = b("lowerdir=/l,upperdir=") + [UInt8](repeating: UInt8(ascii: "\""), count: mb)
        XCTAssertEqual(try MountCommand.parse(arguments: [b("-o"), quotes, b("/m")]).upperDir?.count, mb)
        let quoted = b("lowerdir=/l,context=\"") + [UInt8](repeating: UInt8(ascii: ","), count: mb) + b("\"")
        XCTAssertNoThrow(try MountCommand.parse(arguments: [b("-o"), quoted, b("/m")]))
        // Backslashes: an even number is fine, an odd number ends in a lone one.
        let slashes = b("lowerdir=/l,upperdir=/") + [UInt8](repeating: UInt8(ascii: "\\"), count: mb)
        XCTAssertEqual(try MountCommand.parse(arguments: [b("-o"), slashes, b("/m")]).upperDir?.count, 1 + mb / 2)
        refusal({ try MountCommand.parse(arguments: [b("-o"), slashes + b(#"\"#), b("/m")]) }, "lone backslash")
        // Many unknown keys: the first one is reported.
        let unknown = b("lowerdir=/l") + Array([[UInt8]](repeating: b(",zz"), count: mb / 3).joined())
        refusal({ try MountCommand.parse(arguments: [b("-o"), unknown, b("/m")]) }, "unknown option 'zz'")
        // Many -o arguments.
        var argv: [[UInt8]] = [b("-o"), b("lowerdir=/l")]
        for _ in 0..<(mb / 16) { argv += [b("-o"), b("volatile")] }
        XCTAssertTrue(try MountCommand.parse(arguments: argv + [b("/m")]).skipSync)
    }
}
