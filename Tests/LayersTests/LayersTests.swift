import Foundation
import Glibc
import Layers
import UnionCore
import XCTest

final class DigestTests: XCTestCase {
    let a = Digest("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")!  // sha256("a")
    let b = Digest("sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d")!  // sha256("b")

    func testDigestOfBytes() {
        XCTAssertEqual(Digest.of(Array("a".utf8)), a)
        XCTAssertNil(Digest("sha256:XYZ"))
        XCTAssertNil(Digest("md5:" + String(repeating: "0", count: 64)))
    }

    /// Expected values computed independently: printf 'sha256:A sha256:B' | sha256sum.
    func testChainIDs() {
        let chains = Digest.chainIDs([a, b, a])
        XCTAssertEqual(chains[0], a)  // the bottom layer's chain ID is its diff ID
        XCTAssertEqual(chains[1].description, "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676")
        XCTAssertEqual(chains[2].description, "sha256:1472d34251a00ac55ede7b25cbe3c166a4229eae731490bfdeb83bc00f598be1")
    }
}

final class ManifestTests: XCTestCase {
    func testOCIIndexAndManifest() throws {
        let index = """
        {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
          "digest":"sha256:83e851226a44cc1f2b8b9d436bcc96dc9f785a01ba9c3457f39932c7864169a1","size":1067,
          "annotations":{"org.opencontainers.image.ref.name":"localhost/imgtest:latest"},
          "platform":{"architecture":"amd64","os":"linux"}}]}
        """
        let i = try JSONDecoder().decode(ImageIndex.self, from: Data(index.utf8))
        XCTAssertEqual(i.manifests[0].annotations?[Descriptor.refNameKey], "localhost/imgtest:latest")
        XCTAssertEqual(i.manifests[0].size, 1067)
        let manifest = """
        {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
         "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\(String(repeating: "1", count: 64))","size":10},
         "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:\(String(repeating: "2", count: 64))","size":20}]}
        """
        let m = try JSONDecoder().decode(ImageManifest.self, from: Data(manifest.utf8))
        XCTAssertEqual(m.layers.count, 1)
        XCTAssertEqual(m.layers[0].mediaType, MediaType.ociLayerGzip)
        XCTAssertThrowsError(try JSONDecoder().decode(ImageManifest.self, from: Data(manifest.replacingOccurrences(of: "sha256:2", with: "sha256:Z").utf8)))
    }

    func testDockerArchiveManifestAndConfig() throws {
        let m = #"[{"Config":"abc.json","RepoTags":["localhost/x:latest"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#
        let images = try JSONDecoder().decode([DockerArchiveImage].self, from: Data(m.utf8))
        XCTAssertEqual(images[0].Layers, ["l1/layer.tar", "l2/layer.tar"])
        let c = #"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:\#(String(repeating: "a", count: 64))"]},"history":[{"created_by":"x"}]}"#
        let config = try JSONDecoder().decode(ImageConfig.self, from: Data(c.utf8))
        XCTAssertEqual(config.rootfs.diff_ids.count, 1)
        XCTAssertEqual(config.history?.first?.created_by, "x")
    }
}

/// Extraction into a temporary directory, with the archives built byte by byte.
final class ExtractionTests: XCTestCase {
    var base = ""
    var stage: Int32 = -1

    override func setUp() {
        var t = Array("/tmp/layers-test.XXXXXX".utf8CString)
        base = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        mkdir(base + "/stage", 0o755)
        stage = open(base + "/stage", O_RDONLY | O_DIRECTORY)
    }

    override func tearDown() {
        close(stage)
        let dir = open(base, O_RDONLY | O_DIRECTORY)
        try? RemoveTree.remove(dir, Array("stage".utf8))
        close(dir)
        _ = unlink(base + "/t.tar")
        _ = unlink(base + "/outside")
        rmdir(base)
    }

    func extract(_ t: TarBuilder, format: MarkerFormat = MarkerFormat()) throws -> Extractor.Summary {
        let fd = t.write(to: base + "/t.tar")
        defer { close(fd) }
        var o = Extractor.Options()
        o.format = format
        let x = Extractor(root: stage, options: o, what: "test layer")
        try x.run(try TarReader(fd: fd, what: "test layer"))
        return x.summary
    }

    func lstatAt(_ rel: String) -> stat? {
        var st = stat()
        return fstatat(stage, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil
    }

    func xattr(_ rel: String, _ name: String) -> String? {
        let comps = rel.split(separator: "/").map { Array($0.utf8) }
        let dir = comps.count > 1 ? try? FS.openBeneath(stage, Array(comps.dropLast().joined(separator: [0x2f])), O_RDONLY | O_DIRECTORY) : stage
        guard let dir else { return nil }
        defer { if dir != stage { close(dir) } }
        return (try? FS.getXattr(dir, comps.last!, Array(name.utf8))).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) }
    }

    func testWhiteoutsBecomeKernelMarkers() throws {
        try XCTSkipUnless(geteuid() == 0, "0/0 devices and trusted.* need root")
        var t = TarBuilder()
        t.add("etc/", .dir, mode: 0o755)
        t.add("etc/.wh.passwd", .file)
        t.add("var/", .dir)
        t.add("var/cache/", .dir)
        t.add("var/cache/.wh..wh..opq", .file)
        t.add("var/cache/kept", .file, content: "k")
        t.add("var/.wh..wh.plnk", .file)
        let s = try extract(t)
        let wh = try XCTUnwrap(lstatAt("etc/passwd"))
        XCTAssertEqual(wh.st_mode & S_IFMT, S_IFCHR)
        XCTAssertEqual(wh.st_rdev, 0)
        XCTAssertNil(lstatAt("etc/.wh.passwd"))
        XCTAssertEqual(xattr("var/cache", "trusted.overlay.opaque"), "y")
        XCTAssertNil(lstatAt("var/cache/.wh..wh..opq"))
        XCTAssertNotNil(lstatAt("var/cache/kept"))
        XCTAssertNil(lstatAt("var/.wh..wh.plnk"))
        XCTAssertEqual(s.whiteouts, 1)
        XCTAssertEqual(s.opaqueDirs, 1)
    }

    func testUnprivilegedFormatKeepsOCIWhiteoutsAndUserXattr() throws {
        var t = TarBuilder()
        t.add("d/", .dir)
        t.add("d/.wh.gone", .file)
        t.add("d/.wh..wh..opq", .file)
        _ = try extract(t, format: MarkerFormat(whiteout: .ociFile, xattrNamespace: .user))
        let wh = try XCTUnwrap(lstatAt("d/.wh.gone"))
        XCTAssertEqual(wh.st_mode & S_IFMT, S_IFREG)
        XCTAssertNil(lstatAt("d/gone"))
        XCTAssertEqual(xattr("d", "user.overlay.opaque"), "y")
    }

    func testArchiveXattrCannotForgeAMarker() throws {
        try XCTSkipUnless(geteuid() == 0, "trusted.* needs root")
        // libarchive writes the pax xattr record; the extractor must store it escaped.
        let path = base + "/x.tar"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd); unlink(path) }
        let w = try TarWriter(fd: fd, compression: .none)
        var e = ArchiveEntry(path: Array("d/".utf8), kind: .directory)
        e.perm = 0o755
        e.xattrs = [(Array("trusted.overlay.opaque".utf8), Array("y".utf8))]
        try w.writeHeader(e)
        _ = try w.finish()
        lseek(fd, 0, SEEK_SET)
        let x = Extractor(root: stage, options: Extractor.Options(), what: "t")
        try x.run(try TarReader(fd: fd, what: "t"))
        XCTAssertNil(xattr("d", "trusted.overlay.opaque"))
        XCTAssertEqual(xattr("d", "trusted.overlay.overlay.opaque"), "y")
    }

    func assertHostile(_ t: TarBuilder, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try extract(t), file: file, line: line) { e in
            guard let le = e as? LayersError else { return XCTFail("not a LayersError: \(e)", file: file, line: line) }
            XCTAssertEqual(le.kind, .hostile, le.message, file: file, line: line)
            XCTAssertTrue(le.message.contains(message), le.message, file: file, line: line)
            XCTAssertFalse(le.message.contains("\n"), file: file, line: line)
        }
        XCTAssertNil(lstatAt("../outside"), "something was written outside the layer", file: file, line: line)
    }

    func testDotDotIsRefused() {
        var t = TarBuilder()
        t.add("a/", .dir)
        t.add("a/../../outside", .file, content: "x")
        assertHostile(t, "contains '..'")
    }

    func testAbsoluteNameIsRefused() {
        var t = TarBuilder()
        t.add(base + "/outside", .file, content: "x")
        assertHostile(t, "absolute name")
    }

    func testEntryBeneathASymlinkIsRefused() {
        var t = TarBuilder()
        t.add("s", .symlink, link: base)
        t.add("s/outside", .file, content: "x")
        assertHostile(t, "beneath a symlink")
    }

    func testHardLinkOutsideIsRefused() {
        var t = TarBuilder()
        t.add("h", .hardlink, link: "../outside")
        assertHostile(t, "contains '..'")
        var u = TarBuilder()
        u.add("h", .hardlink, link: "/etc/passwd")
        assertHostile(u, "absolute name")
    }

    func testHardLinkToANameNotYetExtractedIsRefused() {
        var t = TarBuilder()
        t.add("h", .hardlink, link: "later")
        t.add("later", .file, content: "x")
        assertHostile(t, "not a file extracted before it")
        var u = TarBuilder()
        u.add("d/", .dir)
        u.add("h", .hardlink, link: "d")
        assertHostile(u, "not a file extracted before it")
    }

    func testHardLinkInsideAndByteNamesWork() throws {
        var t = TarBuilder()
        let odd: [UInt8] = Array("caf".utf8) + [0xe9, 0xff] + Array(".txt".utf8)  // not UTF-8
        t.add(odd, .file, content: Array("x".utf8))
        t.add(Array("h".utf8), .hardlink, link: odd)
        _ = try extract(t)
        var a = stat(), b = stat()
        let oddPath = odd + [0]
        XCTAssertEqual(oddPath.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { fstatat(stage, $0.baseAddress!, &a, AT_SYMLINK_NOFOLLOW) } }, 0)
        XCTAssertEqual(fstatat(stage, "h", &b, AT_SYMLINK_NOFOLLOW), 0)
        XCTAssertEqual(a.st_ino, b.st_ino)
    }
}

/// The layer writer: the same tree gives the same bytes, and reads back as written.
final class LayerWriterTests: XCTestCase {
    func testReproducibleAndRoundTrip() throws {
        var t = Array("/tmp/layers-writer.XXXXXX".utf8CString)
        let base = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        defer { let d = open("/tmp", O_RDONLY | O_DIRECTORY); try? RemoveTree.remove(d, Array(base.dropFirst(5).utf8)); close(d) }
        mkdir(base + "/up", 0o755)
        mkdir(base + "/up/d", 0o750)
        let f = open(base + "/up/d/file", O_WRONLY | O_CREAT, 0o640)
        _ = write(f, "hello", 5)
        ftruncate(f, 1 << 20)
        _ = pwrite(f, "end", 3, (1 << 20) - 3)
        close(f)
        link(base + "/up/d/file", base + "/up/d/again")
        symlink("d/file", base + "/up/sl")
        let up = open(base + "/up", O_RDONLY | O_DIRECTORY)
        defer { close(up) }
        func layer(_ name: String, _ c: TarWriter.Compression) throws -> (LayerWriter.Result, [UInt8]) {
            let fd = open(base + "/" + name, O_RDWR | O_CREAT | O_TRUNC, 0o600)
            defer { close(fd) }
            let r = try LayerWriter.write(upper: up, to: fd, compression: c)
            return (r, Array(try Data(contentsOf: URL(fileURLWithPath: base + "/" + name))))
        }
        let (r1, b1) = try layer("a.tar.gz", .gzip)
        usleep(1_100_000)  // a second later: no timestamp may leak into the output
        let (r2, b2) = try layer("b.tar.gz", .gzip)
        XCTAssertEqual(b1, b2)
        XCTAssertEqual(r1.blob, r2.blob)
        XCTAssertEqual(r1.blob, Digest.of(b1))
        let (r3, b3) = try layer("c.tar", .none)
        XCTAssertEqual(r3.diffID, r1.diffID)  // the diff ID is the uncompressed stream's
        XCTAssertEqual(Digest.of(b3), r3.diffID)

        let fd = open(base + "/a.tar.gz", O_RDONLY)
        defer { close(fd) }
        let reader = try TarReader(fd: fd, what: "t")
        var seen: [String: ArchiveEntry] = [:]
        var content: [UInt8] = []
        while let e = try reader.next() {
            seen[String(decoding: e.path, as: UTF8.self)] = e
            if e.path == Array("d/again".utf8) || e.path == Array("d/file".utf8), e.kind == .file {
                content = [UInt8](repeating: 0, count: Int(e.size))
                try reader.readData { off, buf in for (i, x) in buf.enumerated() { content[Int(off) + i] = x } }
            }
        }
        let (blob, diff) = try reader.finish()
        XCTAssertEqual(blob, r1.blob)
        XCTAssertEqual(diff, r1.diffID)
        XCTAssertEqual(Array(seen.keys).sorted(), ["d/", "d/again", "d/file", "sl"])
        // Names are sorted: d/again comes first and holds the data; d/file links to it.
        XCTAssertEqual(seen["d/again"]?.kind, .file)
        XCTAssertEqual(seen["d/file"]?.kind, .hardlink)
        XCTAssertEqual(seen["d/file"]?.linkTarget, Array("d/again".utf8))
        XCTAssertEqual(seen["d/"]?.perm, 0o750)
        XCTAssertEqual(seen["sl"]?.linkTarget, Array("d/file".utf8))
        XCTAssertEqual(content.count, 1 << 20)
        XCTAssertEqual(Array(content.prefix(5)), Array("hello".utf8))
        XCTAssertEqual(Array(content.suffix(3)), Array("end".utf8))
        XCTAssertLessThan(b3.count, 64 << 10, "the hole of the sparse file is stored")
    }
}
