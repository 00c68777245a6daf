import Testing
@testable import UnionCore

/// The pieces of the kernel's index format that need no mount (tests/test_index.py
/// compares the whole with the kernel).
@Suite struct InodeIndexTests {
    @Test func nlinkValuesParseAndPrintAsTheKernelsPrintf() {
        // ovl_set_nlink_common: snprintf("U%+i") / ("L%+i").
        #expect(InodeIndex.NlinkValue(relativeToLower: false, diff: 1).bytes == Array("U+1".utf8))
        #expect(InodeIndex.NlinkValue(relativeToLower: false, diff: 0).bytes == Array("U+0".utf8))
        #expect(InodeIndex.NlinkValue(relativeToLower: true, diff: -2).bytes == Array("L-2".utf8))
        #expect(InodeIndex.NlinkValue(parsing: Array("U-1".utf8)) == .init(relativeToLower: false, diff: -1))
        #expect(InodeIndex.NlinkValue(parsing: Array("L+12".utf8)) == .init(relativeToLower: true, diff: 12))
        for bad in ["", "U", "U+", "X+1", "U1", "U+1x", "u+1", "U++1"] {
            #expect(InodeIndex.NlinkValue(parsing: Array(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test func unionCountsFollowOvlGetNlink() {
        let u = InodeIndex.NlinkValue(relativeToLower: false, diff: 1)
        #expect(u.unionCount(upper: 2, lower: nil) == 3)
        #expect(InodeIndex.NlinkValue(relativeToLower: false, diff: -2).unionCount(upper: 2, lower: nil) == nil)
        let l = InodeIndex.NlinkValue(relativeToLower: true, diff: 0)
        #expect(l.unionCount(upper: 2, lower: 3) == 3)
        // Without the lower count (nothing is decoded): the names upper holds.
        #expect(l.unionCount(upper: 3, lower: nil) == 2)
    }

    @Test func entryNamesAreTheHandlesInLowerCaseHex() {
        #expect(InodeIndex.entryName([0x00, 0xfb, 0x1d, 0x0a]).bytes == Array("00fb1d0a".utf8))
    }
}
