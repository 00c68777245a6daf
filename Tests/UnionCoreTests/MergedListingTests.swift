import Glibc
import Testing
@testable import UnionCore

/// One layer's raw entries, as (name, d_type, d_ino) triples.
func raw(_ entries: [(Name, UInt8, UInt64)]) -> [MergedListing.RawEntry] {
    entries.map { MergedListing.RawEntry(name: $0.0, type: $0.1, ino: $0.2) }
}

@Suite struct MergedListingTests {
    let dir = UInt8(DT_DIR), reg = UInt8(DT_REG), chr = UInt8(DT_CHR)

    @Test func topLayerWinsAndNamesShowOnce() throws {
        var l = MergedListing()
        try l.add(layer: 0, isUpper: true, entries: raw([("a", reg, 1), ("d", dir, 2)])) { _ in false }
        try l.add(layer: 1, isUpper: false, entries: raw([("a", reg, 10), ("b", reg, 11), ("d", dir, 12)])) { _ in false }
        let m = l.merged()
        #expect(m.map(\.name) == ["a", "d", "b"])
        #expect(m[0].ino == 1 && m[0].layer == 0)
        // A merged subdirectory remembers its lower copy: the kernel reports that number.
        #expect(m[1].lowerIno == 12 && m[1].lowerLayer == 1)
    }

    @Test func whiteoutsHideOnlyLowerLayers() throws {
        var l = MergedListing()
        try l.add(layer: 0, isUpper: true, entries: raw([("gone", chr, 1), ("dev", chr, 2)])) { $0 == "gone" }
        try l.add(layer: 1, isUpper: false, entries: raw([("gone", reg, 3), ("kept", reg, 4)])) { _ in false }
        #expect(l.merged().map(\.name) == ["dev", "kept"])
    }

    @Test func ociMarkersNeverShowAndHideBelow() throws {
        var l = MergedListing()
        try l.add(layer: 0, isUpper: false, entries: raw([(".wh.x", reg, 1), (".wh..wh..opq", reg, 2), ("y", reg, 3)])) { _ in false }
        try l.add(layer: 1, isUpper: false, entries: raw([("x", reg, 4), ("z", reg, 5)])) { _ in false }
        #expect(l.merged().map(\.name) == ["y", "z"])
    }

    @Test func fileAboveDirectoryStopsTheMerge() throws {
        var l = MergedListing()
        try l.add(layer: 0, isUpper: true, entries: raw([("n", reg, 1)])) { _ in false }
        try l.add(layer: 1, isUpper: false, entries: raw([("n", dir, 2)])) { _ in false }
        let m = l.merged()
        #expect(m.count == 1 && m[0].type == reg && m[0].lowerIno == nil)
    }
}

@Suite struct IDMapTests {
    @Test func parsesTriplesAndMapsBothWays() throws {
        let m = try #require(IDMap.parse("0:1000:1:1:100000:65536"))
        #expect(m.toContainer(1000) == 0)
        #expect(m.toContainer(100_000) == 1)
        #expect(m.toContainer(5) == IDMap.overflow)
        #expect(m.toHost(0) == 1000)
        #expect(m.toHost(70000) == nil)
    }

    @Test func rejectsMalformed() {
        #expect(IDMap.parse("0:1000") == nil)
        #expect(IDMap.parse("a:b:c") == nil)
        #expect(IDMap.parse("0:0:0") == nil)
    }
}
