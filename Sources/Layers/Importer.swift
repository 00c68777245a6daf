import Foundation
import Glibc
import UnionCore

/// `image import`: an OCI image layout directory, an OCI archive, or a `docker save` /
/// `podman save` archive, into the store. Each layer is unpacked once (keyed by chain
/// ID), checked against the digests the image names, and converted to the kernel's
/// marker format; importing what the store holds already writes nothing.
public final class Importer {
    public struct LayerResult {
        public var record: LayerRecord
        public var reused: Bool
        public var summary: Extractor.Summary?
    }
    public struct Report {
        public var imageID: Digest
        public var name: String
        public var layers: [LayerResult]
        public var unchanged: Bool
    }

    let store: LayerStore
    public init(store: LayerStore) { self.store = store }

    /// Where the image's documents and blobs are, and how to read them.
    struct Source {
        let dir: Int32
        /// Docker archives may link a layer file to another: follow links that stay inside.
        let follow: Bool
        func read(_ path: [UInt8], _ what: String) throws -> [UInt8] {
            do { return try FS.readFile(dir, path, limit: 64 << 20, followBeneath: follow) } catch {
                throw LayersError.bad("\(what) (\(shown(path))): \(error)")
            }
        }
        func open(_ path: [UInt8], _ what: String) throws -> Int32 {
            do { return follow ? try FS.openBeneathFollowing(dir, path, O_RDONLY) : try FS.openBeneath(dir, path, O_RDONLY) } catch {
                throw LayersError.bad("\(what) (\(shown(path))): \(error)")
            }
        }
    }

    /// What to import: config, layers (path + expected blob digest when the format names one).
    struct Plan {
        var configBytes: [UInt8]
        var layers: [(path: [UInt8], blob: Digest?)]
        var defaultName: String?
    }

    public func run(source: [UInt8], name: String?) throws -> Report {
        let fd: Int32
        do { fd = try FS.openPath(source, O_RDONLY) } catch { throw LayersError.bad("\(shown(source)): \(error)") }
        defer { FS.close(fd) }
        let st: stat
        do { st = try FS.fstat(fd) } catch { throw LayersError.io(shown(source), error) }
        if st.type == S_IFDIR { return try importFrom(dir: fd, name: name, what: shown(source)) }
        guard st.type == S_IFREG else { throw LayersError.bad("\(shown(source)) is neither a directory nor an archive file") }
        // An archive: unpack its files into the store's tmp/ (safely: it is untrusted input too), then read that.
        let tmp = try store.subdir("tmp")
        defer { FS.close(tmp) }
        let staged: [UInt8]
        do { staged = try FS.makeTempDirectory(tmp, prefix: "archive") } catch { throw LayersError.io("store tmp/", error) }
        defer { try? RemoveTree.remove(tmp, staged) }
        let sdir: Int32
        do { sdir = try FS.openBeneath(tmp, staged, O_RDONLY | O_DIRECTORY) } catch { throw LayersError.io("store tmp/", error) }
        defer { FS.close(sdir) }
        var opts = Extractor.Options()
        opts.layer = false
        let x = Extractor(root: sdir, options: opts, what: "image archive \(shown(source))")
        try x.run(try TarReader(fd: fd, what: "image archive \(shown(source))"))
        return try importFrom(dir: sdir, name: name, what: shown(source))
    }

    func importFrom(dir: Int32, name: String?, what: String) throws -> Report {
        let has = { (n: String) -> Bool in ((try? FS.lstat(dir, Array(n.utf8))) ?? nil) != nil }
        let plan: Plan
        let source: Source
        if has("index.json") {
            source = Source(dir: dir, follow: false)
            plan = try ociPlan(source, wanted: name, what: what)
        } else if has("manifest.json") {
            source = Source(dir: dir, follow: true)
            plan = try dockerPlan(source, wanted: name, what: what)
        } else {
            throw LayersError.bad("\(what) is not an OCI image layout or a docker/podman save archive (no index.json or manifest.json)")
        }
        let config = try JSON.decode(ImageConfig.self, plan.configBytes, what: "\(what): image config")
        guard config.rootfs.type == "layers" else { throw LayersError.bad("\(what): rootfs type \(config.rootfs.type) is not \"layers\"") }
        guard config.rootfs.diff_ids.count == plan.layers.count else {
            throw LayersError.bad("\(what): the config lists \(config.rootfs.diff_ids.count) diff IDs for \(plan.layers.count) layers")
        }
        let imageID = Digest.of(plan.configBytes)
        let imageName = name ?? plan.defaultName ?? imageID.short
        let chains = Digest.chainIDs(config.rootfs.diff_ids)
        return try store.locked {
            var results: [LayerResult] = []
            var unchanged = try store.hasConfig(imageID)
            for (i, layer) in plan.layers.enumerated() {
                if let r = try store.layer(chains[i]) {
                    results.append(LayerResult(record: r, reused: true, summary: nil))
                    continue
                }
                unchanged = false
                let blob = try source.open(layer.path, "\(what): layer \(i + 1)")
                defer { FS.close(blob) }
                let (r, summary) = try store.unpack(blob, what: "\(what): layer \(i + 1) (\(config.rootfs.diff_ids[i]))",
                                                    diffID: config.rootfs.diff_ids[i], blob: layer.blob,
                                                    parent: i > 0 ? chains[i - 1] : nil)
                results.append(LayerResult(record: r, reused: false, summary: summary))
            }
            try store.storeConfig(imageID, plan.configBytes)
            if try store.repositories()[imageName] != imageID { unchanged = false }
            try store.setName(imageName, imageID)
            return Report(imageID: imageID, name: imageName, layers: results, unchanged: unchanged)
        }
    }

    static func blobPath(_ d: Digest) -> [UInt8] { Array("blobs/sha256/\(d.hex)".utf8) }

    func verifiedBlob(_ s: Source, _ d: Descriptor, _ what: String) throws -> [UInt8] {
        let b = try s.read(Self.blobPath(d.digest), what)
        guard Digest.of(b) == d.digest else { throw LayersError.bad("\(what): content does not match its digest \(d.digest)") }
        return b
    }

    func ociPlan(_ s: Source, wanted: String?, what: String) throws -> Plan {
        var index = try JSON.decode(ImageIndex.self, try s.read(Array("index.json".utf8), "\(what): index.json"), what: "\(what): index.json")
        var refName: String?
        for _ in 0..<8 {
            guard !index.manifests.isEmpty else { throw LayersError.bad("\(what): the index lists no image") }
            // A name given that matches a ref name picks that image; else the first for linux/amd64 (or without platform).
            let byName = wanted.flatMap { w in index.manifests.first { d in
                guard let r = d.annotations?[Descriptor.refNameKey] else { return false }
                return r == w || w.hasSuffix(":" + r) || r.hasSuffix(":" + w)
            } }
            let byPlatform = index.manifests.first { d in
                guard let p = d.platform else { return true }
                return p.os == "linux" && (p.architecture == "amd64" || p.architecture == nil)
            }
            let desc = byName ?? byPlatform ?? index.manifests[0]
            refName = refName ?? desc.annotations?[Descriptor.refNameKey]
            let bytes = try verifiedBlob(s, desc, "\(what): manifest \(desc.digest)")
            if MediaType.isIndex(desc.mediaType) {
                index = try JSON.decode(ImageIndex.self, bytes, what: "\(what): index \(desc.digest)")
                continue
            }
            let m = try JSON.decode(ImageManifest.self, bytes, what: "\(what): manifest \(desc.digest)")
            let config = try verifiedBlob(s, m.config, "\(what): config \(m.config.digest)")
            return Plan(configBytes: config, layers: m.layers.map { (Self.blobPath($0.digest), $0.digest) },
                        defaultName: refName.map { $0.contains(":") || $0.contains("/") ? $0 : "localhost/unnamed:" + $0 })
        }
        throw LayersError.bad("\(what): image indexes nested too deep")
    }

    func dockerPlan(_ s: Source, wanted: String?, what: String) throws -> Plan {
        let images = try JSON.decode([DockerArchiveImage].self, try s.read(Array("manifest.json".utf8), "\(what): manifest.json"),
                                     what: "\(what): manifest.json")
        guard !images.isEmpty else { throw LayersError.bad("\(what): manifest.json lists no image") }
        let img = wanted.flatMap { w in images.first { ($0.RepoTags ?? []).contains { $0 == w || $0 == w + ":latest" || $0.hasSuffix("/" + w) } } } ?? images[0]
        let config = try s.read(Array(img.Config.utf8), "\(what): config")
        return Plan(configBytes: config, layers: img.Layers.map { (Array($0.utf8), nil) }, defaultName: img.RepoTags?.first)
    }
}

extension LayerStore {
    /// Unpacks one layer blob (any compression) into `tmp/`, checks its diff ID (and blob
    /// digest when known), and moves it into place. On any failure nothing stays behind.
    public func unpack(_ blob: Int32, what: String, diffID expected: Digest?, blob expectedBlob: Digest?,
                       parent: Digest?) throws -> (LayerRecord, Extractor.Summary) {
        let tmp = try subdir("tmp")
        defer { FS.close(tmp) }
        let format = try Whiteouts.probe(tmp)
        let staged: [UInt8]
        do { staged = try FS.makeTempDirectory(tmp, prefix: "layer") } catch { throw LayersError.io("store tmp/", error) }
        var moved = false
        defer { if !moved { try? RemoveTree.remove(tmp, staged) } }
        let sdir: Int32
        do {
            sdir = try FS.openBeneath(tmp, staged, O_RDONLY | O_DIRECTORY)
            try FS.fchmod(sdir, 0o755)  // a layer's root, unless the archive has a "./" entry
        } catch { throw LayersError.io("store tmp/", error) }
        defer { FS.close(sdir) }
        var opts = Extractor.Options()
        opts.format = format
        let reader = try TarReader(fd: blob, what: what)
        let x = Extractor(root: sdir, options: opts, what: what)
        try x.run(reader)
        let (blobDigest, diffID) = try reader.finish()
        if let expectedBlob, blobDigest != expectedBlob {
            throw LayersError.bad("\(what): the blob's digest is \(blobDigest), not \(expectedBlob)")
        }
        if let expected, diffID != expected {
            throw LayersError.bad("\(what): the uncompressed layer's digest is \(diffID), not the diff ID \(expected) the config names")
        }
        let chainID = parent.map { Digest.of(Array("\($0) \(diffID)".utf8)) } ?? diffID
        moved = true
        let record = try commitLayer(staged: staged, chainID: chainID, diffID: diffID, parent: parent, size: x.summary.size)
        return (record, x.summary)
    }
}
