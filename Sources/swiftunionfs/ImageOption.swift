import FuseBridge
import Glibc
import Layers
import MountOptions

/// `image=NAME[,store=DIR]` wherever `lowerdir=` is accepted (mount, run, inspect, diff,
/// commit), and `run --image NAME`: a pre-pass over the command line, before the option
/// parser sees it, that replaces them by `lowerdir=` with the image's layers from the
/// store, top first, each path escaped for the lowerdir syntax. A `lowerdir=` given as
/// well stays on top of the image's layers.
enum ImageOption {
    /// `run`'s flags that take a value: their values are not options, and the command starts
    /// at the first word that is neither.
    static let runValued: Set<String> = ["--hostname", "--bind", "--workdir", "-w", "--env", "-e", "-o"]

    /// Only a command line that names an image goes through the (text) pre-pass: every
    /// other keeps its exact bytes.
    static func expandOrExit(_ raw: [[UInt8]]) -> [[UInt8]] {
        func mentions(_ a: [UInt8], _ word: String) -> Bool {
            let w = Array(word.utf8)
            return a.count >= w.count && (0...(a.count - w.count)).contains { a[$0..<($0 + w.count)].elementsEqual(w) }
        }
        guard raw.contains(where: { mentions($0, "image=") || mentions($0, "--image") }) else { return raw }
        return expandOrExit(raw.map { String(decoding: $0, as: UTF8.self) }).map { Array($0.utf8) }
    }

    static func expandOrExit(_ argv: [String]) -> [String] {
        if argv.first == "image" { return argv }  // the image subcommands read image= themselves
        do { return try expand(argv) } catch let e as LayersError {
            fail(e.message)
            exit(2)
        } catch {
            fail("\(error)")
            exit(2)
        }
    }

    static func expand(_ argv: [String]) throws -> [String] {
        var args = argv
        let isRun = argv.first == "run"
        var image: String?
        var store: String?
        var lists: [(index: Int, attached: Bool)] = []   // -o values, and "-oLIST" words
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { break }
            if a == "-o" && i + 1 < args.count {
                lists.append((i + 1, false))
                i += 2
                continue
            }
            if a.hasPrefix("-o") && a.count > 2 { lists.append((i, true)); i += 1; continue }
            if isRun {
                if a == "--image" || a.hasPrefix("--image=") {
                    let v: String
                    if a == "--image" {
                        guard i + 1 < args.count else { throw LayersError(.badInput, "--image needs a name") }
                        v = args[i + 1]
                        args.removeSubrange(i...(i + 1))
                    } else {
                        v = String(a.dropFirst("--image=".count))
                        args.remove(at: i)
                    }
                    try set(&image, v, "image")
                    continue
                }
                if runValued.contains(a) { i += 2; continue }
                if !a.hasPrefix("-") && i > 0 { break }  // the command and its arguments
            }
            i += 1
        }
        // Take image= and store= out of every list.
        for (idx, isAttached) in lists {
            let word = args[idx]
            let text = isAttached ? String(word.dropFirst(2)) : word
            var kept: [String] = []
            for item in split(text) {
                if item.hasPrefix("image=") { try set(&image, String(item.dropFirst(6)), "image") }
                else if item.hasPrefix("store=") { try set(&store, String(item.dropFirst(6)), "store") }
                else { kept.append(item) }
            }
            args[idx] = (isAttached ? "-o" : "") + kept.joined(separator: ",")
        }
        guard let image else {
            if store != nil { throw LayersError(.badInput, "store= needs image=NAME") }
            return args
        }
        guard !image.isEmpty else { throw LayersError(.badInput, "image= needs a name") }
        let s = try LayerStore(path: store.map { Array($0.utf8) } ?? LayerStore.defaultPath(), create: false)
        let stored = try s.image(try s.resolve(image))
        let layers = s.lowerDirs(stored).map { escape(String(decoding: $0, as: UTF8.self)) }.joined(separator: ":")
        // Onto an existing lowerdir= (which stays on top), else a list of its own.
        for (idx, isAttached) in lists {
            let word = args[idx]
            let text = isAttached ? String(word.dropFirst(2)) : word
            var items = split(text)
            if let k = items.firstIndex(where: { $0.hasPrefix("lowerdir=") }) {
                items[k] += ":" + layers
                args[idx] = (isAttached ? "-o" : "") + items.joined(separator: ",")
                return args
            }
        }
        if let (idx, _) = lists.first {
            let sep = args[idx].hasSuffix(",") || args[idx].isEmpty || args[idx] == "-o" ? "" : ","
            args[idx] += sep + "lowerdir=" + layers
        } else {
            let at = ["run", "inspect", "diff", "commit"].contains(argv.first ?? "") ? 1 : 0
            args.insert(contentsOf: ["-o", "lowerdir=" + layers], at: min(at, args.count))
        }
        return args
    }

    static func set(_ slot: inout String?, _ value: String, _ key: String) throws {
        if slot != nil { throw LayersError(.badInput, "\(key)= given twice") }
        slot = value
    }

    /// Splits an option list on commas outside quotes and not escaped (as the option parser does).
    static func split(_ text: String) -> [String] {
        var items: [String] = [], cur = "", quoted = false, escaped = false
        for ch in text {
            if escaped { cur.append(ch); escaped = false; continue }
            if ch == "\\" { cur.append(ch); escaped = true; continue }
            if ch == "\"" { quoted.toggle(); cur.append(ch); continue }
            if ch == "," && !quoted { items.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        items.append(cur)
        return items.filter { !$0.isEmpty }
    }

    /// A path as one lowerdir entry: `\`, `:`, `,` and `"` escaped with a backslash.
    static func escape(_ path: String) -> String {
        var out = ""
        for ch in path {
            if ch == "\\" || ch == ":" || ch == "," || ch == "\"" { out.append("\\") }
            out.append(ch)
        }
        return out
    }
}
