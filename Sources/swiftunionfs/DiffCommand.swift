import Foundation
import FuseBridge
import Glibc
import Layers
import MountOptions
import UnionCore

/// `swiftunionfs diff -o lowerdir=...,upperdir=... [--format json]`: the upper's changes
/// against its lowers, as `podman diff` lists them (rules in Layers/Changes.swift).
enum DiffCommand {
    static let usage = "usage: swiftunionfs diff -o lowerdir=TOP:...:BOTTOM,upperdir=DIR [--format json]   (or -o image=NAME,upperdir=DIR)"

    /// The union's directories from the -o lists of a diff or commit command line, as bytes.
    static func unionDirs(_ lists: [[UInt8]], needLowers: Bool) throws -> (lowers: [[UInt8]], upper: [UInt8]) {
        var cmd = MountCommand()
        for l in lists { try cmd.apply(optionList: l) }
        guard let upper = cmd.upperDir else { throw UsageError(message: "upperdir= is required") }
        if needLowers && cmd.lowerDirs.isEmpty { throw UsageError(message: "lowerdir= (or image=) is required") }
        return (cmd.lowerDirs, upper)
    }

    static func openDir(_ path: [UInt8], role: String) throws -> Int32 {
        do { return try FS.openPath(path, O_RDONLY | O_DIRECTORY) } catch {
            throw UsageError(message: "\(role) \(Bytes.display(path)): \(error)")
        }
    }

    /// `-o LIST` / `-oLIST` words of a command line, or nil for any other word.
    static func optionList(_ args: [[UInt8]], _ i: inout Int) throws -> [UInt8]? {
        let a = args[i], dashO = Array("-o".utf8)
        if a == dashO {
            i += 1
            guard i < args.count else { throw UsageError(message: "-o needs a list of options") }
            return args[i]
        }
        return a.starts(with: dashO) && a.count > 2 ? Array(a.dropFirst(2)) : nil
    }

    static func main(_ args: [[UInt8]]) -> Int32 {
        var lists: [[UInt8]] = [], json = false
        do {
            var i = 0
            while i < args.count {
                if let l = try optionList(args, &i) {
                    lists.append(l)
                } else if args[i].elementsEqual("--format".utf8) {
                    i += 1
                    let v = i < args.count ? String(decoding: args[i], as: UTF8.self) : ""
                    guard v == "json" || v == "text" else { throw UsageError(message: "--format must be json or text") }
                    json = v == "json"
                } else {
                    throw UsageError(message: "diff: unexpected argument \(Bytes.display(args[i])) (\(usage))")
                }
                i += 1
            }
            let (lowers, upper) = try unionDirs(lists, needLowers: false)
            let ufd = try openDir(upper, role: "upperdir")
            defer { FS.close(ufd) }
            let lfds = try lowers.map { try openDir($0, role: "lowerdir") }
            defer { lfds.forEach(FS.close) }
            let changes = try Changes.compute(upper: ufd, lowers: lfds)
            if json { printJSON(changes) } else { printText(changes) }
            return 0
        } catch let e as UsageError {
            fail(e.message)
            return 2
        } catch let e as Errno {
            fail("diff: \(e)")
            return 1
        } catch {
            fail("diff: \(error)")
            return 1
        }
    }

    static func printText(_ changes: [Changes.Change]) {
        var out: [UInt8] = []
        for c in changes {
            out += Array(c.kind.rawValue.utf8) + [0x20] + c.path + [0x0a]
            if out.count > 1 << 16 { emit(out); out.removeAll() }
        }
        emit(out)
    }

    static func emit(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }

    /// podman's JSON: {"changed": [...], "added": [...], "deleted": [...]}, empty lists left out.
    /// JSON holds text: paths are written with the project's lossless escaping
    /// (`Bytes.display`, docs/tracing.md), never repaired; the text format is byte-exact.
    static func printJSON(_ changes: [Changes.Change]) {
        func list(_ k: Changes.Kind) -> [String] { changes.filter { $0.kind == k }.map { Bytes.display($0.path) } }
        var doc: [String: [String]] = [:]
        for (key, kind) in [("changed", Changes.Kind.changed), ("added", .added), ("deleted", .deleted)] where !list(kind).isEmpty {
            doc[key] = list(kind)
        }
        let d = (try? JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        print(String(decoding: d, as: UTF8.self))
    }
}
