import XCTest
import UnionCore
@testable import MountOptions

/// uidmapping=/gidmapping=: fuse-overlayfs's STORED:SHOWN:COUNT triples, checked so that no
/// mapping the daemon accepts can make a lookup overflow.
final class IDMappingTests: XCTestCase {
    func map(_ v: String, _ key: String = "uidmapping") throws -> IDMap {
        let cmd = try mountWith("\(key)=\(v)")
        return key == "uidmapping" ? cmd.uidMap : cmd.gidMap
    }

    func testMeaningStoredThenShown() throws {
        for key in ["uidmapping", "gidmapping"] {
            let m = try map("0:100000:65536:65536:0:1", key)
            XCTAssertEqual(m.toContainer(0), 100000, key)       // stored 0 shows as 100000
            XCTAssertEqual(m.toContainer(65535), 165535, key)
            XCTAssertEqual(m.toContainer(65536), 0, key)
            XCTAssertEqual(m.toContainer(65537), IDMap.overflow, key)
            XCTAssertEqual(m.toHost(100005), 5, key)            // a chown to 100005 stores 5
            XCTAssertNil(m.toHost(99999), key)
        }
    }

    func testEmptyItemsAreSkippedAsFuseOverlayfsDoes() throws {
        // containers/storage writes a leading ':'.
        let m = try map(":0:100000:65536")
        XCTAssertEqual(m.ranges, [IDMap.Range(container: 100000, host: 0, count: 65536)])
        XCTAssertEqual(try map("0::100000:65536:"), m)
        XCTAssertEqual(try map("0:100000:65536::"), m)
    }

    func testEmptyOrNoTriple() {
        refusedOption("uidmapping=", "empty value")
        refusedOption("gidmapping=:", "no STORED:SHOWN:COUNT triple")
        refusedOption("uidmapping=:::", "no STORED:SHOWN:COUNT triple")
    }

    func testNotAMultipleOfThree() {
        refusedOption("uidmapping=0:1000", "2 numbers")
        refusedOption("uidmapping=0:1000:1:5", "4 numbers")
        refusedOption("gidmapping=1", "1 numbers")
    }

    func testNonNumericNegativeAndTooLargeFields() {
        for v in ["a:0:1", "0:b:1", "0:0:c", "-1:0:1", "0:-5:1", "0:0:-1", "0x10:0:1", "1e3:0:1",
                  " 1:0:1", "1:0:1 ", "+1:0:1", "4294967296:0:1", "0:99999999999999999999:1"] {
            refusedOption("uidmapping=\(v)", "uidmapping=", "not a decimal id")
        }
    }

    func testZeroCount() {
        refusedOption("uidmapping=0:0:0", "count of 0")
        refusedOption("gidmapping=0:1000:1:5:5:0", "5:5:0 has a count of 0")
    }

    func testOverflowPastTheLastID() throws {
        // The daemon used to trap on the first stat after mounting this.
        refusedOption("uidmapping=0:4294967295:2", "0:4294967295:2", "shown ids past 4294967294")
        refusedOption("uidmapping=4294967295:0:2", "stored ids past 4294967294")
        refusedOption("uidmapping=4294967295:0:1", "stored ids past 4294967294")
        refusedOption("uidmapping=0:4294967295:1", "shown ids past 4294967294")
        refusedOption("uidmapping=1:0:4294967295", "stored ids past")
        refusedOption("uidmapping=0:1:4294967295", "shown ids past")
        refusedOption("uidmapping=0:0:4294967296", "not a decimal id")
        // The largest ranges that fit: like the kernel's uid_map, up to 4294967294.
        let all = try map("0:0:4294967295")
        XCTAssertEqual(all.toContainer(4294967294), 4294967294)
        XCTAssertEqual(all.toContainer(UInt32.max), IDMap.overflow)
        let top = try map("4294967294:0:1:0:4294967294:1")
        XCTAssertEqual(top.toContainer(4294967294), 0)
        XCTAssertEqual(top.toContainer(0), 4294967294)
        XCTAssertEqual(top.toHost(4294967294), 0)
        XCTAssertNil(top.toHost(UInt32.max))
    }

    func testOverlaps() throws {
        refusedOption("uidmapping=0:0:10:5:100:10", "0:0:10 and 5:100:10 share stored ids")
        refusedOption("uidmapping=0:0:10:100:5:10", "share shown ids")
        refusedOption("uidmapping=100:0:10:0:50:101", "share stored ids")   // second contains the first
        refusedOption("uidmapping=0:0:1:0:1:1", "share stored ids")         // the same stored id twice
        refusedOption("uidmapping=0:7:1:1:7:1", "share shown ids")          // the same shown id twice
        // Adjacent is not overlapping, in either order.
        XCTAssertNoThrow(try map("10:10:10:0:0:10"))
        XCTAssertNoThrow(try map("0:100:10:10:0:100"))
    }

    func testTheKernelsLimitOfRanges() throws {
        let ok = (0..<IDMap.maxRanges).map { "\($0):\($0 + 1000):1" }.joined(separator: ":")
        XCTAssertEqual(try map(ok).ranges.count, IDMap.maxRanges)
        refusedOption("uidmapping=" + ok + ":5000:9000:1", "341 triples")
    }

    func testGivenTwice() throws {
        XCTAssertNoThrow(try mountWith("uidmapping=0:1:1,uidmapping=0:1:1"))
        XCTAssertNoThrow(try mountWith("uidmapping=:0:1:1,uidmapping=0:1:1"))  // the same mapping, spelled differently
        refusedOption("uidmapping=0:1:1,uidmapping=0:2:1", "conflicts")
        XCTAssertNoThrow(try mountWith("uidmapping=0:1:1,gidmapping=0:2:1"))
    }
}
