import CFuse
import FuseBridge
import Glibc
import MountOptions
import UnionCore

/// `swiftunionfs inspect`: what each layer holds at a path, and which one wins — without mounting.
enum Inspect {
    static func main(_ args: [[UInt8]]) -> Int32 {
        var tree = false
        var rest: [[UInt8]] = []
        for a in args {
            if a.elementsEqual("--tree".utf8) { tree = true } else { rest.append(a) }
        }
        do {
            var cmd = try MountCommand.parse(arguments: rest)
            cmd.lowerDirs = try cmd.lowerDirs.map { legacyBytes(try Validation.directory(legacyPath($0), role: "lowerdir").0) }
            if let u = cmd.upperDir { cmd.upperDir = legacyBytes(try Validation.directory(legacyPath(u), role: "upperdir").0) }
            // No workdir: inspecting takes no lock and never cleans or writes anything.
            cmd.workDir = nil
            let union = try Mounter.makeUnion(cmd, events: NullEventSink())
            let path = cmd.mountpoint!.split(separator: UInt8(ascii: "/")).map { legacyPath(Array($0)) }
            print(try report(union, path))
            if tree { print(try treeReport(union, path)) }
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

    /// One layer's object at a name, in words.
    static func describe(_ dirFD: Int32, _ name: String) -> (text: String, kind: Kind) {
        guard let st = try? Sys.statIfPresent(dirFD, name) else {
            if (try? Markers.hasOCIWhiteout(dir: dirFD, name: name)) == true {
                return ("whiteout (.wh.\(name) file, OCI format)", .whiteout)
            }
            return ("nothing", .absent)
        }
        switch st.fileType {
        case S_IFCHR where st.st_rdev == 0: return ("whiteout (0/0 character device, kernel format)", .whiteout)
        case S_IFDIR:
            let fd = try? Sys.openAt(dirFD, name, O_PATH | O_DIRECTORY)
            defer { if let fd { Sys.close(fd) } }
            var how: [String] = []
            if let fd {
                for x in [Markers.trustedOpaque, Markers.userOpaque] where Sys.getxattrIfPresent(fd, x) == Array("y".utf8) {
                    how.append("\(x)=y")
                }
                if (try? Sys.statIfPresent(fd, Markers.ociOpaqueName)) != nil { how.append(Markers.ociOpaqueName) }
            }
            let mode = "mode 0" + String(st.st_mode & 0o7777, radix: 8)
            return how.isEmpty ? ("directory, \(mode)", .directory) : ("opaque directory (\(how.joined(separator: ", "))), \(mode)", .opaque)
        case S_IFLNK:
            return ("symlink -> \((try? Sys.readlink(dirFD, name)) ?? "?")", .other)
        case S_IFREG:
            return ("file, \(st.st_size) bytes, mode 0\(String(st.st_mode & 0o7777, radix: 8)), owner \(st.st_uid):\(st.st_gid)", .other)
        default:
            return ("special file (type 0\(String(st.st_mode >> 12, radix: 8)))", .other)
        }
    }

    enum Kind { case absent, whiteout, directory, opaque, other }

    static func report(_ union: Union, _ path: [String]) throws -> String {
        let display = "/" + path.joined(separator: "/")
        var out = "\(display)\n"
        guard let name = path.last else {
            for l in union.layers { out += "  \(pad(l.label)) \(l.path)  directory (layer root)\n" }
            return out + "result: the root merges \(union.nodes.layers(of: union.nodes.root).count) layer(s)\n"
        }
        let parentPath = path.dropLast().isEmpty ? "." : path.dropLast().joined(separator: "/")
        var winner: String?
        var verdict = "no layer has it"
        var merging = false
        for layer in union.layers {
            guard let dfd = try layer.openDirectory(parentPath) else {
                out += "  \(pad(layer.label)) \(layer.path)  nothing (no directory \(parentPath) here)\n"
                continue
            }
            defer { Sys.close(dfd) }
            let (text, kind) = describe(dfd, name)
            var note = ""
            if winner == nil || merging {
                switch kind {
                case .whiteout where winner == nil:
                    winner = layer.label
                    verdict = "hidden: whited out in \(layer.label)"
                    note = "  <- hides every layer below"
                case .directory where winner == nil, .opaque where winner == nil:
                    winner = layer.label
                    verdict = "visible: directory from \(layer.label)"
                    merging = kind == .directory
                    note = kind == .opaque ? "  <- wins; opaque: layers below are not merged" : "  <- wins"
                case .other where winner == nil:
                    winner = layer.label
                    verdict = "visible: from \(layer.label), the topmost layer that has it"
                    note = "  <- wins; shadows every layer below"
                case .directory where merging:
                    verdict += " + \(layer.label)"
                    note = "  (merged)"
                case .opaque where merging:
                    verdict += " + \(layer.label)"
                    note = "  (merged; opaque, stops the merge)"
                    merging = false
                case .whiteout, .other:
                    if merging { note = "  (ends the merge)"; merging = false }
                default: break
                }
            } else if kind != .absent {
                note = "  (shadowed)"
            }
            out += "  \(pad(layer.label)) \(layer.path)  \(text)\(note)\n"
        }
        // What an ancestor does to the path (a whiteout or a file above a directory).
        var cur = NodeTable.rootID
        for (i, part) in path.enumerated() {
            do {
                cur = try union.lookup(cur, part).0.id
            } catch {
                if i < path.count - 1 {
                    verdict = "hidden: /\(path[...i].joined(separator: "/")) is not a visible directory"
                }
                break
            }
        }
        return out + "result: \(verdict)\n"
    }

    static func treeReport(_ union: Union, _ path: [String]) throws -> String {
        var cur = NodeTable.rootID
        for part in path { cur = try union.lookup(cur, part).0.id }
        let visible = Set(try union.list(cur).map(\.name))
        let relDir = path.isEmpty ? "." : path.joined(separator: "/")
        var names: [String] = []
        var seen = Set<String>()
        for layer in union.layers {
            guard let fd = try layer.openDirectoryForListing(relDir) else { continue }
            try Sys.readDirectory(fd) { name, _, _ in
                var n = name
                if n.hasPrefix(Markers.ociWhiteoutPrefix) && n != Markers.ociOpaqueName { n = String(n.dropFirst(4)) }
                if n != Markers.ociOpaqueName && seen.insert(n).inserted { names.append(n) }
            }
        }
        var out = "tree of /\(path.joined(separator: "/")):\n"
        for name in names.sorted() {
            var where_: [String] = []
            var firstKind: Kind?
            var firstLayer = ""
            for layer in union.layers {
                guard let dfd = try layer.openDirectory(relDir) else { continue }
                let (_, kind) = describe(dfd, name)
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
