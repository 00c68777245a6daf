import XCTest
import UnionCore

/// IDMap (UnionCore) as defence in depth: invalid maps cannot be made, and no id a client sends
/// makes a lookup trap, whatever the map.
final class IDMapBoundsTests: XCTestCase {
    typealias R = IDMap.Range

    func testValidatingInit() {
        XCTAssertThrowsError(try IDMap(ranges: [R(container: 0, host: 0, count: 0)])) { XCTAssertEqual($0 as? IDMap.Problem, .zeroCount(0)) }
        XCTAssertThrowsError(try IDMap(ranges: [R(container: UInt32.max, host: 0, count: 2)])) {
            XCTAssertEqual($0 as? IDMap.Problem, .containerOverflow(0))
        }
        XCTAssertThrowsError(try IDMap(ranges: [R(container: 0, host: 0, count: 1), R(container: 1, host: UInt32.max, count: 1)])) {
            XCTAssertEqual($0 as? IDMap.Problem, .hostOverflow(1))
        }
        XCTAssertThrowsError(try IDMap(ranges: [R(container: 50, host: 10, count: 5), R(container: 0, host: 0, count: 11)])) {
            XCTAssertEqual($0 as? IDMap.Problem, .hostOverlap(0, 1))
        }
        XCTAssertThrowsError(try IDMap(ranges: [R(container: 0, host: 0, count: 5), R(container: 4, host: 9, count: 1)])) {
            XCTAssertEqual($0 as? IDMap.Problem, .containerOverlap(0, 1))
        }
        let many = (0...IDMap.maxRanges).map { R(container: UInt32($0), host: UInt32($0), count: 1) }
        XCTAssertThrowsError(try IDMap(ranges: many)) { XCTAssertEqual($0 as? IDMap.Problem, .tooManyRanges(IDMap.maxRanges + 1)) }
        XCTAssertNoThrow(try IDMap(ranges: Array(many.dropLast())))
        XCTAssertNoThrow(try IDMap(ranges: []))
    }

    func testLegacyParseRefusesWhatTheInitRefuses() {
        XCTAssertNil(IDMap.parse("4294967295:0:2"))   // SHOWN:STORED:COUNT: shown overflows
        XCTAssertNil(IDMap.parse("0:4294967295:2"))
        XCTAssertNil(IDMap.parse("0:0:10:5:20:1"))
        XCTAssertEqual(IDMap.parse("0:1000:1")?.toContainer(1000), 0)
    }

    /// Every lookup at and around the extremes of every side of a map, for maps touching the top.
    func testNoTrapAtTheExtremes() throws {
        let maps = [
            try IDMap(ranges: [R(container: 4294967294, host: 0, count: 1)]),
            try IDMap(ranges: [R(container: 0, host: 4294967294, count: 1)]),
            try IDMap(ranges: [R(container: 0, host: 0, count: 4294967295)]),
            try IDMap(ranges: [R(container: 1, host: 0, count: 4294967294)]),
            try IDMap(ranges: [R(container: 0, host: 1, count: 4294967294)]),
            try IDMap(ranges: [R(container: 4294967290, host: 10, count: 5), R(container: 10, host: 4294967290, count: 5)]),
            IDMap.identity,
        ]
        let probes: [UInt32] = [0, 1, 2, 9, 10, 11, 65534, 65535, 65536, 2147483647, 2147483648,
                                4294967289, 4294967290, 4294967293, 4294967294, UInt32.max]
        for m in maps {
            for id in probes {
                let shown = m.toContainer(id)
                if let back = m.toHost(shown), shown != IDMap.overflow || m.isIdentity { XCTAssertEqual(back, id) }
                _ = m.toHost(id)
            }
        }
        let top = maps[0]
        XCTAssertEqual(top.toContainer(0), 4294967294)
        XCTAssertEqual(top.toHost(4294967294), 0)
        XCTAssertNil(top.toHost(UInt32.max))
        XCTAssertEqual(top.toContainer(UInt32.max), IDMap.overflow)
    }
}
