import Foundation
import Glibc
import UnionCore

/// `image commit`: an upper directory becomes a new layer on top of an image (or a base
/// layer of its own), recorded under a new name, so the new image mounts and runs.
///
/// The layer is exactly what `commit -O` writes: the upper is written as an OCI layer
/// tar into the store's tmp/, then unpacked from that tar like an imported layer.
public enum ImageCommit {
    public struct Report {
        public var image: StoredImage
        public var layer: LayerRecord
        public var written: LayerWriter.Result
    }

    public static func run(store: LayerStore, upper: Int32, base: StoredImage?, name: String, createdBy: String) throws -> Report {
        try store.locked {
            let tmp = try store.subdir("tmp")
            defer { FS.close(tmp) }
            let tarName = Array("commit.\(getpid()).tar".utf8)
            let fd: Int32
            do throws(Errno) { fd = try FS.openAt(tmp, tarName, O_RDWR | O_CREAT | O_TRUNC, mode: 0o600) } catch { throw LayersError.io("store tmp/", error) }
            defer { FS.close(fd); try? FS.unlink(tmp, tarName) }
            let written = try LayerWriter.write(upper: upper, to: fd, compression: .none)
            do throws(Errno) { _ = try FS.seek(fd, 0, SEEK_SET) } catch { throw LayersError.io("store tmp/", error) }
            let (layer, _) = try store.unpack(fd, what: "committed layer", diffID: written.diffID, blob: nil,
                                              parent: base?.layers.last?.chainID)
            let config = try newConfig(base: base?.configBytes, diffID: written.diffID, createdBy: createdBy)
            let id = Digest.of(config)
            try store.storeConfig(id, config)
            try store.setName(name, id)
            return Report(image: try store.image(id), layer: layer, written: written)
        }
    }

    /// The base image's config with the new diff ID and a history entry appended (unknown
    /// fields kept as they are), or a minimal config for a first layer.
    static func newConfig(base: [UInt8]?, diffID: Digest, createdBy: String) throws -> [UInt8] {
        var config: [String: Any] = ["architecture": "amd64", "os": "linux", "config": [String: Any](),
                                     "rootfs": ["type": "layers", "diff_ids": [String]()]]
        if let base {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(base)) as? [String: Any] else {
                throw LayersError.bad("the base image's config is not a JSON object")
            }
            config = parsed
        }
        let now = ISO8601DateFormatter().string(from: Date())
        var rootfs = config["rootfs"] as? [String: Any] ?? ["type": "layers"]
        rootfs["diff_ids"] = (rootfs["diff_ids"] as? [String] ?? []) + [diffID.description]
        config["rootfs"] = rootfs
        config["history"] = (config["history"] as? [Any] ?? []) + [["created": now, "created_by": createdBy]]
        config["created"] = now
        let data = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .withoutEscapingSlashes])
        return Array(data)
    }
}
