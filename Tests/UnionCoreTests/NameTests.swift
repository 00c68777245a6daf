import Glibc
import Testing
@testable import UnionCore

/// A small deterministic generator, so a failing random case can be replayed from its seed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Bytes of a random name: any byte but NUL and "/", sometimes strung from valid
/// multi-byte UTF-8 sequences so both paths of `Bytes.display` are taken.
func randomName(_ rng: inout SplitMix, maxCount: Int = 255) -> [UInt8] {
    let n = Int.random(in: 1...maxCount, using: &rng)
    var out: [UInt8] = []
    while out.count < n {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            let s = ["é", "€", "😀", "e\u{301}", "\u{85}", "\u{a0}", "\\", "\\x41"].randomElement(using: &rng)!
            out += Array(s.utf8)
        default:
            var byte = UInt8.random(in: 1...255, using: &rng)
            if byte == UInt8(ascii: "/") { byte = 0xFF }
            out.append(byte)
        }
    }
    return Array(out.prefix(n))
}

/// The reverse of `Bytes.display`, written from its documented rule: `\\` is a
/// backslash, `\xHH` is the byte HH, every other character stands for its UTF-8.
func undisplay(_ text: String) -> [UInt8]? {
    var out: [UInt8] = []
    var it = Array(text.unicodeScalars)[...]
    while let c = it.popFirst() {
        guard c == "\\" else {
            out += Array(String(c).utf8)
            continue
        }
        switch it.popFirst() {
        case "\\": out.append(UInt8(ascii: "\\"))
        case "x":
            guard it.count >= 2, let v = UInt8(String(String.UnicodeScalarView(it.prefix(2))), radix: 16) else { return nil }
            it = it.dropFirst(2)
            out.append(v)
        default: return nil
        }
    }
    return out
}

@Suite struct NameTests {
    let nfc: [UInt8] = [0xC3, 0xA9]             // "é", U+00E9
    let nfd: [UInt8] = [0x65, 0xCC, 0x81]       // "e" + U+0301: canonically equivalent, other bytes

    /// Names of every length around the inline limit (23 bytes) keep their bytes and
    /// their count, and the longest name Linux allows (255) too.
    @Test(arguments: [0, 1, 22, 23, 24, 25, 254, 255])
    func keepsBytesAcrossTheInlineBoundary(count: Int) {
        let bytes = (0..<count).map { UInt8(0xFF - $0 % 200) }
        let n = Name(bytes)
        #expect(n.count == count)
        #expect(n.isEmpty == (count == 0))
        #expect(n.bytes == bytes)
        #expect(n.withUnsafeBytes { Array($0) } == bytes)
    }

    /// withCString hands a syscall the exact bytes and a NUL right after them, for inline
    /// and heap storage alike; every non-NUL byte value survives.
    @Test(arguments: [1, 22, 23, 24, 100, 255])
    func cStringIsTerminatedForBothStorages(count: Int) {
        let bytes = (0..<count).map { UInt8(1 + $0 % 255) }
        let n = Name(bytes)
        n.withCString { p in
            #expect(strlen(p) == count)
            #expect((0..<count).map { UInt8(bitPattern: p[$0]) } == bytes)
            #expect(p[count] == 0)
        }
        // A name built by the kernel's route (from a C string) is the same name.
        #expect(n.withCString { Name(cString: $0) } == n)
    }

    @Test func everyByteExceptNULAndSlash() {
        var all = Array(UInt8(1)...UInt8(255))
        all.removeAll { $0 == UInt8(ascii: "/") }
        #expect(all.count == 254)
        let n = Name(all)
        #expect(n.bytes == all)
        n.withCString { #expect(strlen($0) == 254) }
        for byte in all {
            let one = Name([byte])
            #expect(one.bytes == [byte])
            #expect(one.description == Bytes.display([byte]))
        }
    }

    /// NFC and NFD spellings of one text are different names: different keys in a
    /// dictionary and a set, unequal, and ordered by their bytes.
    @Test func canonicallyEquivalentNamesAreDistinct() {
        let a = Name(Array("caf".utf8) + nfc), b = Name(Array("caf".utf8) + nfd)
        #expect(a != b)
        #expect(Set([a, b]).count == 2)
        var d: [Name: Int] = [:]
        d[a] = 1
        d[b] = 2
        #expect(d[a] == 1 && d[b] == 2)
        #expect(b < a)   // 'e' (0x65) sorts before 0xC3
        // Swift's own String would have merged them: the reason Name exists.
        #expect(String(decoding: a.bytes, as: UTF8.self) == String(decoding: b.bytes, as: UTF8.self))
        // Latin-1 "é" (one byte 0xE9) is a third name.
        let latin1 = Name(Array("caf".utf8) + [0xE9])
        #expect(Set([a, b, latin1]).count == 3)
    }

    /// However a name is built (literal, array, slice, C string, concatenation, dropFirst
    /// across the inline boundary), equal bytes mean equal names with equal hashes.
    @Test func equalityAndHashAreByteEquality() {
        let long = Array(repeating: UInt8(ascii: "a"), count: 24)
        let viaConcat: Name = Name(Array(long[0..<12])) + Name(Array(long[12...]))
        #expect(viaConcat == Name(long))
        #expect(viaConcat.hashValue == Name(long).hashValue)
        let dropped = Name([UInt8(ascii: "x")] + long).dropFirst(1)
        #expect(dropped == Name(long))
        let shortened = Name(long).dropFirst(1)          // 24 -> 23 bytes: heap -> inline
        #expect(shortened == Name(Array(long[1...])))
        #expect(shortened.hashValue == Name(Array(long[1...])).hashValue)
        let literal: Name = "aaaaaaaaaaaaaaaaaaaaaaaa"
        #expect(literal == Name(long))
        #expect(Name(long[...]) == Name(long))
        var rng = SplitMix(seed: 12)
        for _ in 0..<500 {
            let x = randomName(&rng), y = randomName(&rng, maxCount: 30)
            #expect((Name(x) == Name(y)) == (x == y))
            #expect(Name(x).hashValue == Name(x + []).hashValue)
            #expect(Name(x) + Name(y) == Name(x + y))
        }
    }

    /// `<` is the byte order of `sort` in the C locale, across both storages.
    @Test func orderIsByteOrder() {
        var rng = SplitMix(seed: 7)
        let names = (0..<300).map { _ in randomName(&rng, maxCount: 40) }
        #expect(names.map { Name($0) }.sorted().map(\.bytes) == names.sorted { $0.lexicographicallyPrecedes($1) })
        let a23 = Name(Array(repeating: UInt8(ascii: "a"), count: 23))
        let a24 = Name(Array(repeating: UInt8(ascii: "a"), count: 24))
        #expect(a23 < a24 && !(a24 < a23))
        #expect(Name([0x7F]) < Name([0x80]))   // unsigned bytes: 0x80..0xFF sort last
        #expect(Name("a") < Name("ab"))
    }

    @Test func prefixDropAndConcatenate() {
        let latin1: Name = Name(Array(".wh.".utf8) + [0xE9, 0x74, 0xE9])
        #expect(latin1.hasPrefix(".wh."))
        #expect(!latin1.hasPrefix(".wh.\u{e9}"))          // U+00E9 is C3 A9, not E9
        #expect(latin1.dropFirst(4) == Name([0xE9, 0x74, 0xE9]))
        #expect(latin1.hasPrefix(Name()))
        #expect(!Name("ab").hasPrefix("abc"))
        #expect(Name("abc").dropFirst(3).isEmpty)
        #expect(Name("abc").dropFirst(10).isEmpty)
        let long = Name(Array(repeating: 0xFE, count: 200))
        #expect(long.hasPrefix(Name(Array(repeating: 0xFE, count: 199))))
        #expect((Name(".wh.") + long).dropFirst(4) == long)
        #expect(Name.dot.isDotOrDotDot && Name.dotDot.isDotOrDotDot && !Name("...").isDotOrDotDot)
    }

    @Test func pathJoinAndSplitKeepBytes() {
        let parts = [Name([0xE9]), Name(nfd), Name("a\\b")]
        let joined = Bytes.join(parts)
        #expect(joined == [0xE9, 0x2F] + nfd + [0x2F] + Array("a\\b".utf8))
        #expect(Bytes.components(joined) == parts)
        #expect(Bytes.components(Array("//a//b/".utf8)) == ["a", "b"])
    }
}

@Suite struct DisplayTests {
    @Test func printableUTF8PassesAndTheRestIsEscaped() {
        #expect(Bytes.display(Array("usr/lib/libc.so.6".utf8)) == "usr/lib/libc.so.6")
        #expect(Bytes.display([0xC3, 0xA9]) == "é")
        #expect(Bytes.display([0x65, 0xCC, 0x81]) == "e\u{301}")
        #expect(Bytes.display([0xE9]) == "\\xe9")                       // Latin-1 é
        #expect(Bytes.display(Array("a\\b".utf8)) == "a\\\\b")
        #expect(Bytes.display([0x0A, 0x09, 0x01, 0x1F, 0x7F]) == "\\x0a\\x09\\x01\\x1f\\x7f")
        #expect(Bytes.display([0xC2, 0x85]) == "\\xc2\\x85")            // U+0085, a C1 control
        #expect(Bytes.display([0xC2, 0xA0]) == "\u{a0}")
        #expect(Bytes.display([0xC0, 0x80]) == "\\xc0\\x80")            // overlong NUL
        #expect(Bytes.display([0xED, 0xA0, 0x80]) == "\\xed\\xa0\\x80")  // a surrogate
        #expect(Bytes.display([0xE2, 0x82]) == "\\xe2\\x82")            // cut short
        #expect(Bytes.display([0xF4, 0x90, 0x80, 0x80]) == "\\xf4\\x90\\x80\\x80")  // past U+10FFFF
        #expect(Bytes.display([0xF0, 0x9F, 0x98, 0x80]) == "😀")
        #expect(Bytes.display([0xFF, 0xC3, 0xA9]) == "\\xffé")           // a bad byte does not eat the next
        // A name that looks like an escape is not one.
        #expect(Bytes.display(Array("\\xe9".utf8)) == "\\\\xe9")
        #expect(Name([0xE9]).description == "\\xe9")
    }

    /// Every rendering decodes back to the exact bytes, and holds nothing a terminal or
    /// a line-based reader would act on.
    @Test func isLosslessAndPrintable() throws {
        var rng = SplitMix(seed: 0x5AFE)
        for _ in 0..<3000 {
            let bytes = randomName(&rng, maxCount: 64)
            let text = Bytes.display(bytes)
            #expect(undisplay(text) == bytes, "\(bytes)")
            for u in text.unicodeScalars {
                #expect(u.value >= 0x20 && u.value != 0x7F && !(0x80..<0xA0).contains(u.value))
            }
        }
        // Every single byte and every pair, exhaustively.
        for x in 0...255 {
            #expect(undisplay(Bytes.display([UInt8(x)])) == [UInt8(x)])
            for y in stride(from: 0, through: 255, by: 5) {
                #expect(undisplay(Bytes.display([UInt8(x), UInt8(y)])) == [UInt8(x), UInt8(y)])
            }
        }
    }

    /// Different byte strings never render the same (compared as UTF-8: String equality
    /// would call the NFC and NFD renderings equal).
    @Test func isInjective() {
        var rng = SplitMix(seed: 99)
        var seen: [[UInt8]: [UInt8]] = [:]
        for _ in 0..<3000 {
            let bytes = randomName(&rng, maxCount: 6)
            let text = Array(Bytes.display(bytes).utf8)
            if let other = seen[text] { #expect(other == bytes) }
            seen[text] = bytes
        }
    }
}
