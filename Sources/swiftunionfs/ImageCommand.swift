import Foundation
import FuseBridge
import Glibc
import Layers
import MountOptions
import UnionCore

/// `swiftunionfs image import|ls|inspect|commit`: the image store (docs/images.md).
/// The line's shape and --help are ArgumentParser's (Commands.swift); the values are read here.
enum ImageCommand {
    /// Paths (SOURCE, --store, the -o lists) stay bytes; an image NAME is a reference
    /// (repository:tag), text by definition.
    struct Args {
        var positional: [[UInt8]] = []
        var name: String?
        var store: [UInt8]?
        var format = "text"
        var options: [[UInt8]] = []
        /// The one positional argument as an image reference.
        var reference: String { String(decoding: positional[0], as: UTF8.self) }
    }

    static func parse(_ args: [[UInt8]]) throws -> Args {
        var a = Args()
        var i = 0
        func value(_ flag: String) throws -> [UInt8] {
            i += 1
            guard i < args.count, !args[i].isEmpty else { throw LayersError(.badInput, "\(flag) needs a value") }
            return args[i]
        }
        func text(_ w: [UInt8]) -> String { String(decoding: w, as: UTF8.self) }
        while i < args.count {
            let w = args[i]
            if let l = try DiffCommand.optionList(args, &i) {
                a.options.append(l)
            } else if w.elementsEqual("--name".utf8) {
                a.name = text(try value("--name"))
            } else if w.elementsEqual("--store".utf8) {
                a.store = try value("--store")
            } else if w.elementsEqual("--format".utf8) {
                a.format = text(try value("--format"))
                guard a.format == "json" || a.format == "text" else { throw LayersError(.badInput, "--format must be json or text") }
            } else if w.first == UInt8(ascii: "-") {
                throw LayersError(.badInput, "image: unknown flag \(Bytes.display(w)) (see image --help)")
            } else {
                a.positional.append(w)
            }
            i += 1
        }
        return a
    }

    static func main(_ argv: [[UInt8]]) -> Int32 {
        guard let first = argv.first else { fail("image needs a subcommand: import, ls, inspect or commit"); return 2 }
        let sub = String(decoding: first, as: UTF8.self)
        do {
            let args = try parse(Array(argv.dropFirst()))
            switch sub {
            case "import": return try importImage(args)
            case "ls", "list": return try list(args)
            case "inspect": return try inspect(args)
            case "commit": return try commit(args)
            default: throw LayersError(.badInput, "unknown image subcommand \(Bytes.display(first)) (import, ls, inspect, commit)")
            }
        } catch let e as LayersError {
            fail(e.message)
            return e.kind == .io ? 1 : 2
        } catch let e as UsageError {
            fail(e.message)
            return 2
        } catch {
            fail("image \(sub): \(error)")
            return 1
        }
    }

    static func store(_ a: Args, create: Bool) throws -> LayerStore {
        try LayerStore(path: a.store ?? LayerStore.defaultPath(), create: create)
    }

    static func mb(_ n: Int64) -> String {
        let v = Double(n) / 1_000_000
        return v < 10 ? String(format: "%.2f MB", v) : String(format: "%.1f MB", v)
    }

    // MARK: import

    static func importImage(_ a: Args) throws -> Int32 {
        guard a.positional.count == 1 else { throw LayersError(.badInput, "image import needs one SOURCE (see image --help)") }
        let s = try store(a, create: true)
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        let r = try Importer(store: s).run(source: a.positional[0], name: a.name)
        clock_gettime(CLOCK_MONOTONIC, &t1)
        let secs = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) / 1e9
        let fresh = r.layers.filter { !$0.reused }.count
        print("\(r.unchanged ? "already in the store" : "imported"): \(r.name) \(r.imageID) (\(r.layers.count) layers: \(fresh) unpacked, \(r.layers.count - fresh) already in the store) in \(String(format: "%.2f", secs)) s")
        for (i, l) in r.layers.enumerated() {
            var line = "  layer \(i + 1)  diff \(l.record.diffID)  chain \(l.record.chainID)  \(mb(l.record.size))"
            if let sum = l.summary {
                line += "  unpacked: \(sum.entries) entries, \(sum.whiteouts) whiteouts, \(sum.opaqueDirs) opaque"
                if sum.skippedDevices > 0 { line += ", \(sum.skippedDevices) device nodes skipped (mknod refused)" }
            } else {
                line += "  (shared)"
            }
            print(line)
        }
        return 0
    }

    // MARK: ls and inspect

    static func list(_ a: Args) throws -> Int32 {
        guard a.positional.isEmpty else { throw LayersError(.badInput, "image ls takes no arguments") }
        let s = try store(a, create: true)
        var rows: [[String: Any]] = []
        for (name, id) in try s.names() {
            let img = try s.image(id)
            rows.append(["Name": name, "Id": id.description, "Layers": img.layers.count,
                         "Size": img.layers.reduce(Int64(0)) { $0 + $1.size }, "Created": img.config.created ?? ""])
        }
        if a.format == "json" { return printJSON(rows) }
        let w = max(24, rows.map { ($0["Name"] as! String).count }.max() ?? 0) + 2
        print("NAME".padding(toLength: w, withPad: " ", startingAt: 0) + "IMAGE ID      LAYERS  SIZE        CREATED")
        for r in rows {
            let id = (r["Id"] as! String).dropFirst(7).prefix(12)
            print((r["Name"] as! String).padding(toLength: w, withPad: " ", startingAt: 0) + id + "  "
                  + String(describing: r["Layers"]!).padding(toLength: 8, withPad: " ", startingAt: 0)
                  + mb(r["Size"] as! Int64).padding(toLength: 12, withPad: " ", startingAt: 0) + (r["Created"] as! String))
        }
        return 0
    }

    static func printJSON(_ value: Any) -> Int32 {
        guard let d = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
            fail("cannot encode JSON")
            return 1
        }
        print(String(decoding: d, as: UTF8.self))
        return 0
    }

    static func inspect(_ a: Args) throws -> Int32 {
        guard a.positional.count == 1 else { throw LayersError(.badInput, "image inspect needs one NAME") }
        let s = try store(a, create: false)
        let img = try s.image(try s.resolve(a.reference))
        // The lowerdir= value to mount with, shown with the lossless escaping (docs/tracing.md).
        let lowers = Bytes.display(Array(s.lowerDirs(img).map(OptionWords.escapeLayer).joined(separator: [UInt8(ascii: ":")])))
        let chains = img.layers.map(\.chainID.description)
        if a.format == "json" {
            let layers: [[String: Any]] = img.layers.map { r in
                var d: [String: Any] = ["DiffID": r.diffID.description, "ChainID": r.chainID.description, "Size": r.size,
                                        "CacheID": r.cacheID, "Dir": Bytes.display(s.layerPath(r))]
                if let p = r.parent { d["Parent"] = p.description }
                return d
            }
            var doc: [String: Any] = [
                "Id": img.id.description, "RepoTags": img.names,
                "RootFS": ["Type": img.config.rootfs.type, "Layers": img.config.rootfs.diff_ids.map(\.description)],
                "ChainIDs": chains,
                "GraphDriver": ["Name": "swiftunionfs", "Data": ["LowerDir": lowers]],
                "LayerDB": layers,
                "Size": img.layers.reduce(Int64(0)) { $0 + $1.size },
            ]
            if let c = img.config.created { doc["Created"] = c }
            if let x = img.config.architecture { doc["Architecture"] = x }
            if let x = img.config.os { doc["Os"] = x }
            return printJSON([doc])
        }
        print("Image:    \(img.id)")
        print("Names:    \(img.names.joined(separator: ", "))")
        if let c = img.config.created { print("Created:  \(c)") }
        print("RootFS (diff IDs, bottom first):")
        for d in img.config.rootfs.diff_ids { print("  \(d)") }
        print("Layer database (chain ID <- parent: diff ID, size, cache ID):")
        for r in img.layers {
            print("  \(r.chainID) <- \(r.parent?.description ?? "(none)")")
            print("      diff \(r.diffID)  size \(r.size)  cache-id \(r.cacheID)")
        }
        print("GraphDriver.Data.LowerDir (top first; mount with -o image=\(a.reference)):")
        print("  \(lowers)")
        return 0
    }

    // MARK: commit

    static func commit(_ a: Args) throws -> Int32 {
        guard let name = a.name, !name.isEmpty else { throw LayersError(.badInput, "image commit needs --name NAME") }
        guard a.positional.isEmpty else { throw LayersError(.badInput, "image commit takes no arguments besides its flags") }
        var baseName: String?, storePath = a.store, upper: [UInt8]?
        for list in a.options {
            for item in try OptionWords.items(list) {
                if let v = OptionWords.value(of: "image", in: item) { baseName = String(decoding: OptionWords.unescape(v), as: UTF8.self) }
                else if let v = OptionWords.value(of: "store", in: item) { storePath = OptionWords.unescape(v) }
                else if let v = OptionWords.value(of: "upperdir", in: item) { upper = OptionWords.unescape(v) }
                else if OptionWords.value(of: "workdir", in: item) != nil { continue }
                else { throw LayersError(.badInput, "image commit: option \(Bytes.display(item)) is not image=, store= or upperdir=") }
            }
        }
        guard let upper, !upper.isEmpty else { throw LayersError(.badInput, "image commit needs -o upperdir=DIR") }
        var sa = a
        sa.store = storePath
        let s = try store(sa, create: true)
        let base = try baseName.map { try s.image(try s.resolve($0)) }
        let ufd = try CommitCommand.openUpper(upper)
        defer { FS.close(ufd) }
        let r = try ImageCommit.run(store: s, upper: ufd, base: base, name: name,
                                    createdBy: "swiftunionfs image commit" + (baseName.map { " on \($0)" } ?? ""))
        print("committed: \(name) \(r.image.id) (\(r.image.layers.count) layers)")
        print("  new layer  diff \(r.layer.diffID)  chain \(r.layer.chainID)  \(mb(r.layer.size))  \(r.written.entries) entries")
        return 0
    }
}
