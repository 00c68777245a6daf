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
    typealias Word = [UInt8]
    static func b(_ s: String) -> Word { Array(s.utf8) }

    /// `run`'s flags that take a value: their values are not options, and the command starts
    /// at the first word that is neither.
    static let runValued: [Word] = ["--hostname", "--bind", "--workdir", "-w", "--env", "-e", "-o"].map(b)

    static func expandOrExit(_ argv: [Word]) -> [Word] {
        if argv.first == b("image") { return argv }  // the image subcommands read image= themselves
        do { return try expand(argv) } catch let e as LayersError {
            fail(e.message)
            exit(2)
        } catch let e as UsageError {
            fail(e.message)
            exit(2)
        } catch {
            fail("\(error)")
            exit(2)
        }
    }

    /// The command line with `image=`/`store=`/`--image` replaced by the image's layers, byte
    /// for byte as given otherwise (a path in any other argument is never decoded).
    static func expand(_ argv: [Word]) throws -> [Word] {
        var args = argv
        let isRun = argv.first == b("run")
        var image: Word?
        var store: Word?
        var lists: [(index: Int, attached: Bool)] = []   // -o values, and "-oLIST" words
        let dashO = b("-o"), imageFlag = b("--image"), imageEq = b("--image=")
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == b("--") { break }
            if a == dashO && i + 1 < args.count {
                lists.append((i + 1, false))
                i += 2
                continue
            }
            if a.starts(with: dashO) && a.count > 2 { lists.append((i, true)); i += 1; continue }
            if isRun {
                if a == imageFlag || a.starts(with: imageEq) {
                    let v: Word
                    if a == imageFlag {
                        guard i + 1 < args.count else { throw LayersError(.badInput, "--image needs a name") }
                        v = args[i + 1]
                        args.removeSubrange(i...(i + 1))
                    } else {
                        v = Array(a.dropFirst(imageEq.count))
                        args.remove(at: i)
                    }
                    try set(&image, v, "image")
                    continue
                }
                if runValued.contains(a) { i += 2; continue }
                if a.first != UInt8(ascii: "-") && i > 0 { break }  // the command and its arguments
            }
            i += 1
        }
        // Take image= and store= out of every list.
        for (idx, isAttached) in lists {
            let list = isAttached ? Array(args[idx].dropFirst(2)) : args[idx]
            var kept: [Word] = []
            for item in try OptionWords.items(list) {
                if let v = OptionWords.value(of: "image", in: item) { try set(&image, OptionWords.unescape(v), "image") }
                else if let v = OptionWords.value(of: "store", in: item) { try set(&store, OptionWords.unescape(v), "store") }
                else { kept.append(item) }
            }
            args[idx] = (isAttached ? dashO : []) + Array(kept.joined(separator: [UInt8(ascii: ",")]))
        }
        guard let image else {
            if store != nil { throw LayersError(.badInput, "store= needs image=NAME") }
            return argv  // nothing to expand: the line exactly as given
        }
        guard !image.isEmpty else { throw LayersError(.badInput, "image= needs a name") }
        let s = try LayerStore(path: store ?? LayerStore.defaultPath(), create: false)
        // An image name is a reference (repository:tag), text by definition.
        let stored = try s.image(try s.resolve(String(decoding: image, as: UTF8.self)))
        let layers = Array(s.lowerDirs(stored).map(OptionWords.escapeLayer).joined(separator: [UInt8(ascii: ":")]))
        // Onto an existing lowerdir= (which stays on top), else a list of its own.
        for (idx, isAttached) in lists {
            var items = try OptionWords.items(isAttached ? Array(args[idx].dropFirst(2)) : args[idx])
            if let k = items.firstIndex(where: { OptionWords.value(of: "lowerdir", in: $0) != nil }) {
                items[k] += [UInt8(ascii: ":")] + layers
                args[idx] = (isAttached ? dashO : []) + Array(items.joined(separator: [UInt8(ascii: ",")]))
                return args
            }
        }
        let lowerItem = b("lowerdir=") + layers
        if let (idx, _) = lists.first {
            let sep: Word = args[idx].last == UInt8(ascii: ",") || args[idx].isEmpty || args[idx] == dashO ? [] : [UInt8(ascii: ",")]
            args[idx] += sep + lowerItem
        } else {
            let at = ["run", "inspect", "diff", "commit"].map(b).contains(argv.first ?? []) ? 1 : 0
            args.insert(contentsOf: [dashO, lowerItem], at: min(at, args.count))
        }
        return args
    }

    static func set(_ slot: inout Word?, _ value: Word, _ key: String) throws {
        if slot != nil { throw LayersError(.badInput, "\(key)= given twice") }
        slot = value
    }
}
