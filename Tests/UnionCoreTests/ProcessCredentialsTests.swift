import Glibc
import Testing
@testable import UnionCore

/// /proc/<pid>/status as the set-id rules read it: groups and effective capabilities, from
/// bytes; anything malformed reads as "cannot say" (the caller then counts as unprivileged).
@Suite struct ProcessCredentialsTests {
    @Test func groupsAndCapabilitiesFromAStatusFile() {
        let text = Array("Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nCapInh:\t0000000000000000\nCapEff:\t0000000000000010\n".utf8)
        let c = ProcessCredentials.parseStatus(text)
        #expect(c?.groups == [4, 24, 27, 1000])
        #expect(c?.effectiveCapabilities == 0x10)
    }

    @Test func noGroupsAndFullCapabilities() {
        let c = ProcessCredentials.parseStatus(Array("Groups:\t\nCapEff:\t000001ffffffffff\n".utf8))
        #expect(c?.groups == [] && c?.effectiveCapabilities == 0x1ff_ffff_ffff)
    }

    @Test func malformedOrMissingCapabilitiesCannotSay() {
        #expect(ProcessCredentials.parseStatus(Array("Groups:\t1\n".utf8)) == nil)
        #expect(ProcessCredentials.parseStatus(Array("CapEff:\tzz\n".utf8)) == nil)
        #expect(ProcessCredentials.parseStatus(Array("CapEff:\t1ffffffffffffffffff\n".utf8)) == nil)
    }

    @Test func thisProcessReadsItsOwn() {
        let c = ProcessCredentials.of(tid: getpid())
        #expect(c != nil)
        // The suite runs as root in the initial user namespace (scripts/test needs root).
        if getuid() == 0 { #expect(c!.effectiveCapabilities & (1 << 4) != 0 && c!.inInitialUserNamespace) }
    }
}
