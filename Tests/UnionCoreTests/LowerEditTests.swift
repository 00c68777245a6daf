import CLinux
import Glibc
import Testing
@testable import UnionCore

/// Edits made straight to a lower layer, as the watch reports them and the union turns
/// them into invalidations: exactly what the kernel may hold stale, and nothing of
/// what lives in upper. No mount: the invalidations are collected instead of sent.
@Suite(.serialized) struct LowerEditTests {
    /// fanotify needs CAP_SYS_ADMIN; inotify works for everyone.
    static var mechanisms: [LowerWatchMode] { geteuid() == 0 ? [.fanotify, .inotify] : [.inotify] }

    func watched(_ s: Stack, _ mode: LowerWatchMode, limit: Int? = nil, upper: Bool = true) throws -> Union {
        var config = UnionConfig(lowerDirs: (1...s.lowers).map { s.path(Array("l\($0)".utf8)) },
                                 upperDir: upper ? s.path(b("u")) : nil, workDir: upper ? s.path(b("w")) : nil)
        config.watch = mode
        config.watchLimit = limit
        let u = try Union(config: config)
        _ = try u.startWatching()
        return u
    }

    /// Invalidations until `want` is among them (or 5 s pass: a failing test, not a hang).
    /// (Batches come back empty as other programs write elsewhere on the filesystem.)
    func collect(_ u: Union, until want: Invalidation) -> [Invalidation] {
        var got: [Invalidation] = []
        let deadline = ContinuousClock.now + .seconds(5)
        while !got.contains(want) && ContinuousClock.now < deadline {
            got += u.pendingInvalidations(timeout: 200)
        }
        return got
    }

    /// An edit made by another process, as edits behind a mount are: the daemon skips
    /// events of its own process (its writes to upper), so the test's own would not count.
    func outside(_ s: Stack, _ command: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let root = String(decoding: s.root, as: UTF8.self)  // mkdtemp's ASCII name
        #expect(system("cd '\(root)' && \(command)") == 0, "\(command)", sourceLocation: sourceLocation)
    }

    /// A file edit that is always reported: once its invalidation arrives, every event
    /// queued before it has been applied too.
    func sentinel(_ s: Stack, _ u: Union) throws -> Invalidation {
        outside(s, "printf s > l1/sentinel")
        // Its creation first: applied after the lookup, it would replace the new node.
        _ = collect(u, until: .entry(parent: NodeTable.rootID, name: "sentinel"))
        let id = try u.id("sentinel")
        outside(s, "printf ss > l1/sentinel")
        return .node(id)
    }

    @Test(arguments: mechanisms) func contentEditOfALowerFileDropsItsAttributesAndData(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.file("l2/d/b", "")
        let u = try watched(s, mode)
        let d = try u.id("d"), bID = try u.id("d", "b")
        outside(s, "echo 'hello bb' > l2/d/b")
        let got = collect(u, until: .node(bID))
        #expect(got.contains(.node(bID)))
        #expect(!got.contains(.entry(parent: d, name: "b")), "a content edit keeps the name")
        #expect(try u.contents(bID) == b("hello bb\n"))
    }

    @Test(arguments: mechanisms) func aCopiedUpFileNeverSeesLaterLowerEdits(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.file("l1/f", "lower")
        let u = try watched(s, mode)
        let f = try u.id("f")
        let fd = try u.open(f, flags: O_WRONLY)
        u.release(f, fd)
        outside(s, "printf 'edited below' > l1/f")
        let mark = try sentinel(s, u)
        let got = collect(u, until: mark)
        #expect(got.contains(mark))
        #expect(!got.contains(.node(f)))
        #expect(try u.contents(f) == b("lower"))
    }

    @Test(arguments: mechanisms) func anEditShadowedByAHigherLayerIsNotInvalidated(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.file("l1/x", "top"); s.file("l2/x", "below")
        let u = try watched(s, mode)
        let x = try u.id("x")
        outside(s, "printf 'edited below' > l2/x")
        let mark = try sentinel(s, u)
        #expect(!collect(u, until: mark).contains(.node(x)))
    }

    @Test(arguments: mechanisms) func aNameMadeInALowerDropsTheNegativeEntry(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.mkdirs("l2/d/e")
        let u = try watched(s, mode)
        let e = try u.id("d", "e")
        #expect(throws: Errno.noEntry) { try u.lookup(e, "new") }
        outside(s, "printf n > l2/d/e/new")
        let got = collect(u, until: .entry(parent: e, name: "new"))
        #expect(got.contains(.entry(parent: e, name: "new")))
        #expect(got.contains(.node(e)), "the directory's cached listing goes too")
        #expect(try u.names(e) == ["new"])
    }

    @Test(arguments: mechanisms) func aDirectoryReplacedInALowerGetsANewNode(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.file("l1/d/e/old", "o")
        let u = try watched(s, mode)
        let d = try u.id("d"), e = try u.id("d", "e")
        #expect(try u.names(e) == ["old"])
        outside(s, "mv l1/d/e l1/e2 && mkdir l1/d/e && printf f > l1/d/e/fresh")
        let got = collect(u, until: .entry(parent: d, name: "e"))
        #expect(got.contains(.entry(parent: d, name: "e")))
        // The old node keeps its descriptors on the moved directory; the name gets a new one.
        let again = try u.id("d", "e")
        #expect(again != e)
        #expect(try u.names(again) == ["fresh"])
    }

    @Test(arguments: mechanisms) func aModeChangeOfALowerDirectoryIsItsOwnAttributes(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.mkdirs("l1/d/e")
        let u = try watched(s, mode, upper: false)
        let e = try u.id("d", "e")
        outside(s, "chmod 700 l1/d/e")
        #expect(collect(u, until: .node(e)).contains(.node(e)))
        #expect(try u.getattr(e).st_mode & 0o777 == 0o700)
    }

    @Test(arguments: mechanisms) func anOCIWhiteoutAddedBelowHidesTheName(_ mode: LowerWatchMode) throws {
        let s = Stack()
        s.file("l2/d/x", "x"); s.mkdirs("l1/d")
        let u = try watched(s, mode)
        let d = try u.id("d")
        #expect(try u.names(d) == ["x"])  // the listing finds l1/d free of markers
        _ = try u.lookup(d, "x")
        outside(s, ": > l1/d/.wh.x")
        #expect(collect(u, until: .entry(parent: d, name: "x")).contains(.entry(parent: d, name: "x")))
        #expect(throws: Errno.noEntry) { try u.lookup(d, "x") }
    }

    @Test func theInotifyBudgetSpentLeavesFurtherDirectoriesUnwatched() throws {
        let s = Stack()
        s.file("l1/a/b/c/f", "f")
        // Two watches for the root (l1, l2), one for l1/a: then the budget is spent.
        let u = try watched(s, .inotify, limit: 3)
        let a = try u.id("a"), bb = try u.id("a", "b"), c = try u.id("a", "b", "c")
        _ = try u.lookup(c, "f")
        #expect(u.watch?.mechanism == .inotify(limit: 3))
        #expect(u.lowerEditsReported(NodeTable.rootID))
        #expect(u.lowerEditsReported(a))
        #expect(!u.lowerEditsReported(bb) && !u.lowerEditsReported(c), "beyond the budget: short timeouts")
        #expect(!u.lowerEditsReported(attributesOf: c))
        #expect(u.lowerEditsReported(attributesOf: bb) == false)
        #expect(u.lowerEditsReported(attributesOf: a))
    }

    @Test func aLostEventQueueReplacesEveryLowerName() throws {
        let s = Stack()
        s.file("l1/d/f", "f"); s.file("u/top", "t")
        let u = try watched(s, .inotify)
        let d = try u.id("d"), f = try u.id("d", "f"), top = try u.id("top")
        var batch = LowerWatch.Batch()
        batch.overflow = true
        let got = u.apply(batch)
        #expect(got.contains(.entry(parent: NodeTable.rootID, name: "d")))
        #expect(got.contains(.entry(parent: d, name: "f")))
        #expect(got.contains(.node(f)) && got.contains(.node(NodeTable.rootID)))
        #expect(!got.contains(.entry(parent: NodeTable.rootID, name: "top")), "upper-only names stand")
        #expect(try u.id("d") != d)
        #expect(try u.id("top") == top)
    }

    @Test func watchOffWatchesNothing() throws {
        let s = Stack()
        s.file("l1/f", "f")
        let u = try s.union()
        #expect(u.watch == nil)
        #expect(try u.startWatching() == nil)
        #expect(u.lowerEditsReported(try u.id("f")))
    }
}
