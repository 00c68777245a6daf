import Foundation

/// The JSON documents of OCI image layouts and `docker save` archives (Foundation Codable).
/// Only the fields swiftunionfs reads are modelled; configs are kept as their original
/// bytes, since the image ID is the digest of exactly those bytes.
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

    static func isIndex(_ t: String?) -> Bool { t == ociIndex || t == dockerManifestList }
}

public struct Platform: Codable, Sendable {
    public var architecture: String?
    public var os: String?
    public var variant: String?
}

/// A content descriptor: what a blob is, its digest and size.
public struct Descriptor: Codable, Sendable {
    public var mediaType: String?
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?
    public var platform: Platform?

    public static let refNameKey = "org.opencontainers.image.ref.name"
}

/// `index.json` of an OCI layout, or a nested image index / docker manifest list.
public struct ImageIndex: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
}

/// An image manifest (OCI, or docker schema 2 which has the same shape).
public struct ImageManifest: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
}

/// The fields of an image configuration the store uses.
public struct ImageConfig: Codable, Sendable {
    public struct RootFS: Codable, Sendable {
        public var type: String
        public var diff_ids: [Digest]
    }
    public struct History: Codable, Sendable {
        public var created: String?
        public var created_by: String?
        public var comment: String?
        public var empty_layer: Bool?
    }
    public var created: String?
    public var architecture: String?
    public var os: String?
    public var rootfs: RootFS
    public var history: [History]?
}

/// One image of a `docker save` / `podman save --format docker-archive` manifest.json.
public struct DockerArchiveImage: Codable, Sendable {
    public var Config: String
    public var RepoTags: [String]?
    public var Layers: [String]
}

enum JSON {
    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw LayersError.bad("\(what) is not valid: \(Self.reason(error))")
        }
    }

    static func reason(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let k, let c): return "missing \"\(path(c.codingPath + [k]))\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at \"\(path(c.codingPath))\""
        case DecodingError.dataCorrupted(let c): return c.codingPath.isEmpty ? "not JSON" : "\(c.debugDescription) at \"\(path(c.codingPath))\""
        default: return "\(error)"
        }
    }

    static func path(_ keys: [CodingKey]) -> String { keys.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") }

    /// Stable, readable JSON for the files the store writes.
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(value)) + [0x0a]
    }
}
