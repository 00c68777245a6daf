import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// `swiftunionfs inspect`: what each layer holds at a path, and which one wins — without
/// mounting. The verdict is the resolver's own decisions (`Union.explain`), so it cannot
/// tell a different story from the lookups of a mount; only the description of what each
/// layer holds is written here.
enum Inspect {
    static func main(_ args: [[UInt8]]) -> Int32 {
        var tree = false
        var rest: [[UInt8]] = []
        for a in args {
            if a.elementsEqual("--tree".utf8) { tree = true } else { rest.append(a) }
        }
        do {
            var cmd = try MountCommand.parse(arguments: rest)
            var lowers: [[UInt8]] = []
            for l in cmd.lowerDirs { lowers.append(try Validation.directory(l, role: "lowerdir").0) }
            cmd.lowerDirs = lowers
            if let u = cmd.upperDir { cmd.upperDir = try Validation.directory(u, role: "upperdir").0 }
            // No workdir: inspecting takes no lock and never cleans or writes anything.
            cmd.workDir = nil
            let union: Union
            do { union = try Union(config: Mounter.config(cmd)) } catch {
                throw UsageError(message: Daemon.describe(error, Mounter.config(cmd)))
            }
            let path = Bytes.components(cmd.mountpoint!).filter { $0 != .dot }
            // Which watch a mount with these options would use, found the way a mount finds it.
            let watch: String
            do { watch = Daemon.describeWatch(try union.startWatching(), timeout: cmd.timeout) } catch {
                watch = "\(error.message) (a mount with these options would refuse to start)"
            }
            print(try report(union, path) + "features: \(union.featureSummary)")
            if tree { print(try treeReport(union, path)) }
            print("watch: \(watch)")
            return 0
        } catch let e as UsageError {
            fail(e.message)
            return 2
        } catch let e as Errno {
            fail("inspect: \(e)")
            return 1
        } catch {
            fail("inspect: \(error)")
            return 1
        }
    }

    enum Kind { case absent, whiteout, directory, opaque, other }

    /// One layer's object at a name, in words (for display only: the verdict comes from
    /// the resolver).
    static func describe(_ layer: Layer, _ dirFD: Int32, _ name: Name) -> (text: String, kind: Kind) {
        var st: stat?
        do { st = try Sys.statIfPresent(dirFD, name) } catch { return ("unreadable (\(error.name))", .other) }
        // The owner and mode a layer keeps in an xattr (xattr_permissions) are what a mount shows.
        var kept = ""
        if let raw = st, let x = layer.ownerXattr {
            do {
                st = try layer.withOwnerXattr(raw, .entry(dirFD, name))
                if st?.st_mode != raw.st_mode || st?.st_uid != raw.st_uid || st?.st_gid != raw.st_gid { kept = " (from \(x))" }
            } catch { return ("owner xattr \(x) unreadable (\(error.name))", .other) }
        }
        guard let st else {
            if (try? Markers.hasOCIWhiteout(dir: dirFD, name: name)) == true {
                return ("whiteout (.wh.\(name) file, OCI format)", .whiteout)
            }
            return ("nothing", .absent)
        }
        switch st.fileType {
        case S_IFCHR where st.st_rdev == 0: return ("whiteout (0/0 character device, kernel format)", .whiteout)
        case S_IFDIR:
            var how: [String] = []
            let target = Sys.XattrTarget.entry(dirFD, name)
            for x in Markers.opaqueXattrs {
                if (try? Sys.getxattrIfPresent(target, x)) == [UInt8(ascii: "y")] { how.append("\(x)=y") }
            }
            if (try? Sys.statIfPresent(dirFD, name + "/" + Markers.ociOpaqueName)) != nil { how.append("\(Markers.ociOpaqueName)") }
            let mode = "mode 0" + String(st.st_mode & 0o7777, radix: 8) + kept
            return how.isEmpty ? ("directory, \(mode)", .directory) : ("opaque directory (\(how.joined(separator: ", "))), \(mode)", .opaque)
        case S_IFLNK:
            return ("symlink -> \((try? Sys.readlink(dirFD, name)).map { Bytes.display($0) } ?? "?")", .other)
        case S_IFREG:
            return ("file, \(st.st_size) bytes, mode 0\(String(st.st_mode & 0o7777, radix: 8)), owner \(st.st_uid):\(st.st_gid)\(kept)", .other)
        default:
            return ("special file (type 0\(String(st.st_mode >> 12, radix: 8)))", .other)
        }
    }

    /// The directory at `parts` in one layer, walked one name at a time without following
    /// symlinks; nil where the layer has none.
    static func openDirectory(_ layer: Layer, _ parts: [Name]) -> Int32? {
        if parts.isEmpty { return try? Sys.dup(layer.rootFD) }
        return (try? ifPresent { () throws(Errno) -> Int32 in
            try Sys.openBeneath(layer.rootFD, Bytes.join(parts), O_PATH | O_DIRECTORY)
        }) ?? nil
    }

    /// The node id of the merged directory at `parts`, and an explanation when an
    /// ancestor is not a visible directory.
    static func walk(_ union: Union, _ parts: [Name]) -> (UInt64?, String?) {
        var cur = NodeTable.rootID
        for (i, part) in parts.enumerated() {
            do throws(Errno) {
                let (node, _) = try union.lookup(cur, part)
                guard node.isDirectory else {
                    return (nil, "hidden: /\(Bytes.display(Bytes.join(Array(parts[...i])))) is not a directory")
                }
                cur = node.id
            } catch {
                return (nil, "hidden: /\(Bytes.display(Bytes.join(Array(parts[...i])))) is not a visible directory (\(error.name))")
            }
        }
        return (cur, nil)
    }

    static func report(_ union: Union, _ path: [Name]) throws -> String {
        var out = "/\(Bytes.display(Bytes.join(path)))\n"
        guard let name = path.last else {
            for l in union.layers { out += "  \(pad(l.label)) \(l.displayPath)  directory (layer root)\n" }
            return out + "result: the root merges \(union.nodes.layers(of: union.nodes.root).count) layer(s)\n"
        }
        let parentParts = Array(path.dropLast())
        let (parentID, ancestorVerdict) = walk(union, parentParts)
        var notes: [Int: String] = [:]
        var verdict = "no layer has it"
        var stack: [Int] = []
        if let parentID {
            let explained = try union.explain(parentID, name)
            stack = explained.stack
            (notes, verdict) = narrate(union, explained.steps)
        }
        let consulted = Set(notes.keys)
        for layer in union.layers {
            // The parent where the lookups find it in this layer (under its old name when
            // it was renamed with a redirect), else where its path says.
            var where_ = parentParts
            var found: Int32?
            if let parentID, stack.contains(layer.index), let d = try? union.layerDirectory(parentID, in: layer.index) {
                found = d.fd
                where_ = Bytes.components(d.path)
            }
            guard let dfd = found ?? openDirectory(layer, parentParts) else {
                out += "  \(pad(layer.label)) \(layer.displayPath)  nothing (no directory /\(Bytes.display(Bytes.join(parentParts))) here)\n"
                continue
            }
            defer { Sys.close(dfd) }
            let at = where_ == parentParts ? "" : " (at /\(Bytes.display(Bytes.join(where_ + [name]))))"
            let (text, kind) = describe(layer, dfd, name)
            var note = notes[layer.index] ?? ""
            if note.isEmpty && kind != .absent && !consulted.contains(layer.index) {
                note = stack.contains(layer.index) || ancestorVerdict != nil ? "  (shadowed)" : "  (not merged: the directory above is opaque here or absent)"
            }
            out += "  \(pad(layer.label)) \(layer.displayPath)  \(text)\(at)\(note)\n"
        }
        return out + "result: \(ancestorVerdict ?? verdict)\n"
    }

    /// The resolver's decisions as notes per layer and a verdict.
    static func narrate(_ union: Union, _ steps: [(layer: Int, decision: ResolveDecision)]) -> ([Int: String], String) {
        var notes: [Int: String] = [:]
        var verdict = "no layer has it"
        var winnerIsDirectory = false
        for (li, d) in steps {
            let label = union.layers[li].label
            switch d {
            case .absent, .absentKnownMarkerFree:
                notes[li] = notes[li] ?? ""
            case .whiteout, .ociWhiteout:
                verdict = "hidden: whited out in \(label)"
                notes[li] = "  <- hides every layer below"
            case .wins(let st):
                winnerIsDirectory = st.isDirectory
                if st.isDirectory {
                    verdict = "visible: directory from \(label)"
                    notes[li] = "  <- wins"
                } else {
                    verdict = "visible: from \(label), the topmost layer that has it"
                    notes[li] = "  <- wins; shadows every layer below"
                }
            case .merges:
                verdict += " + \(label)"
                notes[li] = "  (merged)"
            case .opaque:
                notes[li] = winnerIsDirectory && notes[li] == "  (merged)"
                    ? "  (merged; opaque, stops the merge)" : "  <- wins; opaque: layers below are not merged"
            case .endsMerge:
                notes[li] = "  (ends the merge)"
            case .redirect(let to):
                notes[li] = (notes[li] ?? "") + "; redirect: the layers below are searched for \(Bytes.display(to))"
            case .metacopy:
                notes[li] = (notes[li] ?? "") + "; metacopy: its data is in a layer below"
                verdict += " (metadata only)"
            case .data:
                verdict += ", data from \(label)"
                notes[li] = "  <- holds the data"
            }
        }
        return (notes, verdict)
    }

    static func treeReport(_ union: Union, _ path: [Name]) throws -> String {
        guard let dirID = walk(union, path).0 else { throw UsageError(message: "/\(Bytes.display(Bytes.join(path))) is not a visible directory") }
        let visible = Set(try union.list(dirID).map(\.name))
        var names: [Name] = []
        var seen = Set<Name>()
        for layer in union.layers {
            guard let dfd = openDirectory(layer, path) else { continue }
            defer { Sys.close(dfd) }
            let fd = try Sys.reopen(dfd, O_RDONLY | O_DIRECTORY)
            try Sys.readDirectory(fd) { (name: Name, _: UInt8, _: UInt64) throws(Errno) in
                if name == Markers.ociOpaqueName { return }
                let n = Markers.ociWhiteoutTarget(name) ?? name
                if seen.insert(n).inserted { names.append(n) }
            }
        }
        var out = "tree of /\(Bytes.display(Bytes.join(path))):\n"
        for name in names.sorted(by: { $0.bytes.lexicographicallyPrecedes($1.bytes) }) {
            var where_: [String] = []
            var firstKind: Kind?
            var firstLayer = ""
            for layer in union.layers {
                guard let dfd = openDirectory(layer, path) else { continue }
                let (_, kind) = describe(layer, dfd, name)
                Sys.close(dfd)
                if kind == .absent { continue }
                if firstKind == nil { firstKind = kind; firstLayer = layer.label }
                where_.append(layer.label + (kind == .whiteout ? "(whiteout)" : kind == .opaque ? "(opaque)" : ""))
            }
            let mark: String
            if visible.contains(name) {
                if firstLayer == "upper" && where_.count > 1 { mark = "copied-up/changed" }
                else if where_.count > 1 { mark = "shadows" }
                else { mark = "visible" }
            } else if firstKind == .whiteout {
                mark = "whited-out"
            } else {
                mark = "hidden"
            }
            out += "  \(pad(mark, 18)) \(name)  [\(where_.joined(separator: ", "))]\n"
        }
        return out
    }

    static func pad(_ s: String, _ n: Int = 8) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
}
