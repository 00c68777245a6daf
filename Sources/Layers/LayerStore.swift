import Foundation
import Glibc
import UnionCore

/// One layer as the layer database records it, the way Docker's does
/// (`image/overlay2/layerdb/sha256/<chain ID>/{diff,parent,size,cache-id}`).
public struct LayerRecord: Sendable {
    public var chainID: Digest
    public var diffID: Digest
    public var parent: Digest?
    public var size: Int64
    /// The directory in `layers/` holding the unpacked layer.
    public var cacheID: String
}

/// An image of the store: its ID (the digest of its config) and its layers, bottom first.
public struct StoredImage: Sendable {
    public var id: Digest
    public var names: [String]
    public var config: ImageConfig
    public var configBytes: [UInt8]
    public var layers: [LayerRecord]
}

/// The content-addressed store (docs/images.md):
///
///     STORE/layerdb/sha256/<chain-id>/diff|parent|size|cache-id   the layer database
///     STORE/layers/<cache-id>/                                     unpacked layers (kernel marker format)
///     STORE/imagedb/content/sha256/<image-id>                      image configs, as imported
///     STORE/repositories.json                                      names -> image IDs
///     STORE/tmp/                                                   staging; renamed into place
///     STORE/lock                                                   flock held by writers
///
/// Everything is created in `tmp/` and renamed into place, so a crash or a refused
/// archive leaves either nothing or a complete layer.
public final class LayerStore {
    public let path: [UInt8]
    let fd: Int32

    public static func defaultPath() -> [UInt8] {
        if let x = getenv("XDG_DATA_HOME"), x.pointee != 0 {
            return Array(UnsafeRawBufferPointer(start: x, count: strlen(x))) + Array("/swiftunionfs".utf8)
        }
        if let h = getenv("HOME"), h.pointee != 0 {
            return Array(UnsafeRawBufferPointer(start: h, count: strlen(h))) + Array("/.local/share/swiftunionfs".utf8)
        }
        return Array("/root/.local/share/swiftunionfs".utf8)
    }

    /// Opens the store at `path`; `create` makes it (and its parents) when missing.
    public init(path: [UInt8], create: Bool) throws {
        if create {
            do { try FS.makeDirectories(path, mode: 0o700) } catch { throw LayersError.io("store \(shown(path))", error) }
        }
        do {
            self.path = try FS.realpath(path)
            fd = try FS.openPath(self.path, O_RDONLY | O_DIRECTORY)
        } catch {
            throw LayersError.bad("store \(shown(path)): \(error)\(create ? "" : " (no image was imported into it)")")
        }
        if create {
            for d in ["layerdb", "layerdb/sha256", "layers", "imagedb", "imagedb/content", "imagedb/content/sha256", "tmp"] {
                do { try FS.mkdir(fd, Array(d.utf8), 0o700) } catch where error.rawValue == EEXIST {} catch {
                    throw LayersError.io("store \(shown(self.path))/\(d)", error)
                }
            }
        }
    }

    deinit { FS.close(fd) }

    /// Holds the store's writer lock while `body` runs.
    public func locked<T>(_ body: () throws -> T) throws -> T {
        let lfd: Int32
        do {
            lfd = try FS.openAt(fd, Array("lock".utf8), O_RDWR | O_CREAT, mode: 0o600)
            try FS.flock(lfd, exclusive: true)
        } catch { throw LayersError.io("locking the store", error) }
        defer { FS.close(lfd) }
        return try body()
    }

    public func subdir(_ rel: String) throws -> Int32 {
        do { return try FS.openBeneath(fd, Array(rel.utf8), O_RDONLY | O_DIRECTORY) } catch {
            throw LayersError.io("store \(shown(path))/\(rel)", error)
        }
    }

    /// The absolute path of a layer's directory: what goes into `lowerdir=`.
    public func layerPath(_ r: LayerRecord) -> [UInt8] { path + Array("/layers/\(r.cacheID)".utf8) }

    // MARK: the layer database

    func text(_ dir: Int32, _ name: String) throws(Errno) -> String? {
        do {
            let b = try FS.readFile(dir, Array(name.utf8), limit: 4096)
            return String(decoding: b, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch where error.rawValue == ENOENT { return nil }
    }

    /// The record of a layer, or nil when the store does not hold it (or holds it incompletely).
    public func layer(_ chainID: Digest) throws -> LayerRecord? {
        let dfd: Int32
        do { dfd = try FS.openBeneath(fd, Array("layerdb/sha256/\(chainID.hex)".utf8), O_RDONLY | O_DIRECTORY) } catch {
            if error.rawValue == ENOENT { return nil }
            throw LayersError.io("layer database", error)
        }
        defer { FS.close(dfd) }
        do {
            guard let diff = try text(dfd, "diff").flatMap(Digest.init), let cache = try text(dfd, "cache-id"),
                  let size = try text(dfd, "size").flatMap({ Int64($0) }) else {
                throw LayersError.bad("layer database entry \(chainID) is incomplete")
            }
            let parent = try text(dfd, "parent").flatMap(Digest.init)
            guard cache.utf8.allSatisfy({ $0 != 0x2f }), !cache.isEmpty, cache != ".", cache != ".." else {
                throw LayersError.bad("layer database entry \(chainID) has a bad cache-id")
            }
            return LayerRecord(chainID: chainID, diffID: diff, parent: parent, size: size, cacheID: cache)
        } catch let e as Errno { throw LayersError.io("layer database entry \(chainID)", e) }
    }

    /// Moves a fully unpacked layer from `tmp/<staged>` into place and records it.
    /// Returns the record that is in the store afterwards (another writer's, if it won).
    func commitLayer(staged: [UInt8], chainID: Digest, diffID: Digest, parent: Digest?, size: Int64) throws -> LayerRecord {
        let tmp = try subdir("tmp")
        defer { FS.close(tmp) }
        if let existing = try layer(chainID) {
            try? RemoveTree.remove(tmp, staged)
            return existing
        }
        let record = LayerRecord(chainID: chainID, diffID: diffID, parent: parent, size: size, cacheID: chainID.hex)
        let layers = try subdir("layers")
        defer { FS.close(layers) }
        do {
            // A directory left by an interrupted commit (layer moved, record not written) is replaced.
            if try FS.lstat(layers, Array(record.cacheID.utf8)) != nil { try RemoveTree.remove(layers, Array(record.cacheID.utf8)) }
            try FS.rename(tmp, staged, layers, Array(record.cacheID.utf8), flags: FS.renameNoReplace)
        } catch {
            try? RemoveTree.remove(tmp, staged)
            throw LayersError.io("moving layer \(chainID) into the store", error)
        }
        try writeRecord(record)
        return record
    }

    func writeRecord(_ r: LayerRecord) throws {
        let tmp = try subdir("tmp")
        defer { FS.close(tmp) }
        let db = try subdir("layerdb/sha256")
        defer { FS.close(db) }
        do {
            let name = try FS.makeTempDirectory(tmp, prefix: "db")
            let d = try FS.openBeneath(tmp, name, O_RDONLY | O_DIRECTORY)
            defer { FS.close(d) }
            try FS.writeFileAtomically(d, Array("diff".utf8), Array(r.diffID.description.utf8))
            if let p = r.parent { try FS.writeFileAtomically(d, Array("parent".utf8), Array(p.description.utf8)) }
            try FS.writeFileAtomically(d, Array("size".utf8), Array(String(r.size).utf8))
            try FS.writeFileAtomically(d, Array("cache-id".utf8), Array(r.cacheID.utf8))
            try FS.rename(tmp, name, db, Array(r.chainID.hex.utf8), flags: FS.renameNoReplace)
        } catch {
            throw LayersError.io("writing the layer database entry \(r.chainID)", error)
        }
    }

    // MARK: images and names

    struct Repositories: Codable { var Repositories: [String: Digest] }

    func repositories() throws -> [String: Digest] {
        do {
            let b = try FS.readFile(fd, Array("repositories.json".utf8))
            return try JSON.decode(Repositories.self, b, what: "repositories.json").Repositories
        } catch let e as Errno where e.rawValue == ENOENT { return [:] }
        catch let e as Errno { throw LayersError.io("repositories.json", e) }
    }

    /// Names `id` `name` (replacing what the name meant before). Caller holds the lock.
    func setName(_ name: String, _ id: Digest) throws {
        var repos = try repositories()
        if repos[name] == id { return }
        repos[name] = id
        do { try FS.writeFileAtomically(fd, Array("repositories.json".utf8), try JSON.encode(Repositories(Repositories: repos))) }
        catch let e as Errno { throw LayersError.io("repositories.json", e) }
    }

    func hasConfig(_ id: Digest) throws -> Bool {
        do { return try FS.lstat(fd, Array("imagedb/content/sha256/\(id.hex)".utf8)) != nil }
        catch { throw LayersError.io("image database", error) }
    }

    func storeConfig(_ id: Digest, _ bytes: [UInt8]) throws {
        if try hasConfig(id) { return }
        let dir = try subdir("imagedb/content/sha256")
        defer { FS.close(dir) }
        do { try FS.writeFileAtomically(dir, Array(id.hex.utf8), bytes) } catch { throw LayersError.io("image database", error) }
    }

    /// Every name in the store with the image it names, sorted by name.
    public func names() throws -> [(String, Digest)] { try repositories().sorted { $0.key < $1.key } }

    /// Resolves NAME as given, then NAME:latest, localhost/NAME[:latest], then an image ID (prefix).
    public func resolve(_ name: String) throws -> Digest {
        let repos = try repositories()
        for candidate in [name, name + ":latest", "localhost/" + name, "localhost/" + name + ":latest"] {
            if let id = repos[candidate] { return id }
        }
        let hex = name.hasPrefix("sha256:") ? String(name.dropFirst(7)) : name
        if hex.count >= 4 {
            let matches = Set(repos.values.filter { $0.hex.hasPrefix(hex) })
            if matches.count == 1 { return matches.first! }
            if matches.count > 1 { throw LayersError.bad("image ID prefix \(name) is ambiguous") }
        }
        throw LayersError.bad("no image \(name) in the store \(shown(path)) (see swiftunionfs image ls)")
    }

    public func image(_ id: Digest) throws -> StoredImage {
        let bytes: [UInt8]
        do { bytes = try FS.readFile(fd, Array("imagedb/content/sha256/\(id.hex)".utf8)) } catch {
            throw LayersError.io("image \(id)", error)
        }
        let config = try JSON.decode(ImageConfig.self, bytes, what: "image config \(id)")
        var layers: [LayerRecord] = []
        for chain in Digest.chainIDs(config.rootfs.diff_ids) {
            guard let r = try layer(chain) else {
                throw LayersError.bad("image \(id.short): layer \(chain) is missing from the store")
            }
            layers.append(r)
        }
        let names = try repositories().filter { $0.value == id }.map(\.key).sorted()
        return StoredImage(id: id, names: names, config: config, configBytes: bytes, layers: layers)
    }

    /// The lowerdir stack an image mounts as: top layer first.
    public func lowerDirs(_ image: StoredImage) -> [[UInt8]] { image.layers.reversed().map(layerPath) }
}
