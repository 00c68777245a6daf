import XCTest
@testable import MountOptions

/// Every option in the table, over the same hostile values: empty, missing, huge, negative,
/// non-numeric, given twice with the same and with a different value. A new option without
/// an entry here fails `testEveryOptionIsCovered`.
final class EveryOptionTests: XCTestCase {
    enum Kind {
        case path            // any bytes, unescaped
        case pathList        // lowerdir
        case flag            // a bare word
        case flagOrPath      // trace
        case log             // syslog | stderr | FILE
        case seconds
        case id              // 0 ... 4294967294
        case count           // 0 ... a maximum (watch_limit)
        case bit             // 0 | 1
        case words([String]) // one of these
        case idMap
        case operations      // trace_ops
        case anyValue        // kept as written
        case refused         // max_read, blksize
    }

    static let options: [(String, Kind)] = [
        ("lowerdir", .pathList), ("upperdir", .path), ("workdir", .path),
        ("trace", .flagOrPath), ("trace_format", .words(["text", "json"])), ("trace_ops", .operations),
        ("trace_path", .path), ("stats", .path), ("log", .log), ("timeout", .seconds),
        ("watch", .words(["off", "auto", "fanotify", "inotify"])), ("watch_limit", .count),
        ("volatile", .flag), ("fsync", .bit), ("whiteout", .words(["device", "oci"])),
        ("xattr_namespace", .words(["trusted", "user"])), ("userxattr", .flag),
        ("uidmapping", .idMap), ("gidmapping", .idMap), ("squash_to_root", .flag),
        ("squash_to_uid", .id), ("squash_to_gid", .id), ("static_nlink", .flag), ("noacl", .flag),
        ("noxattrs", .bit), ("threaded", .bit), ("xattr_permissions", .words(["0", "1", "2"])),
        ("debug", .flag), ("max_read", .refused), ("blksize", .refused),
        ("fsname", .anyValue), ("subtype", .anyValue),
        ("context", .anyValue), ("fscontext", .anyValue), ("defcontext", .anyValue), ("rootcontext", .anyValue),
        ("plugins", .anyValue), ("redirect_dir", .words(["on", "off", "follow", "nofollow"])),
        ("index", .words(["off"])), ("metacopy", .words(["on", "off"])), ("xino", .words(["on", "off", "auto"])),
        ("nfs_export", .words(["off"])), ("fast_ino", .words(["0", "1"])), ("writeback", .bit),
    ] + (OptionTable.passthroughFlags + OptionTable.ignoredFlags).map { ($0, Kind.flag) }

    /// Two different valid values (the second nil where only one exists).
    static func values(_ kind: Kind) -> (String, String?)? {
        switch kind {
        case .path: return ("/a", "/b")
        case .pathList: return ("/a:/b", "/b:/a")
        case .flagOrPath, .log: return ("/a", "/b")
        case .seconds: return ("10", "2.5")
        case .id, .count: return ("1000", "0")
        case .bit: return ("0", "1")
        case .words(let w): return (w[0], w.count > 1 ? w[1] : nil)
        case .idMap: return ("0:100000:65536", "0:200000:65536")
        case .operations: return ("open", "open:rename")
        case .anyValue: return ("x", "y")
        case .flag, .refused: return nil
        }
    }

    func parse(_ key: String, _ items: String...) throws -> MountCommand {
        var all = key == "lowerdir" ? [] : ["lowerdir=/l"]
        all += items
        return try MountCommand.parse(arguments: [b("-o"), b(all.joined(separator: ",")), b("/mnt")])
    }

    func parseBytes(_ key: String, _ item: [UInt8]) throws -> MountCommand {
        let prefix = key == "lowerdir" ? [] : b("lowerdir=/l,")
        return try MountCommand.parse(arguments: [b("-o"), prefix + item, b("/mnt")])
    }

    func testEveryOptionIsCovered() {
        let covered = Set(Self.options.map(\.0))
        let table = Set(OptionTable.table.keys.map { String(decoding: $0, as: UTF8.self) })
        XCTAssertEqual(covered.count, Self.options.count, "an option is listed twice here")
        XCTAssertEqual(table.subtracting(covered), [], "options without tests")
        XCTAssertEqual(covered.subtracting(table), [], "tests for options that do not exist")
    }

    func testEmptyValueIsRefused() {
        for (key, _) in Self.options {
            refusal({ try parse(key, "\(key)=") }, key)
        }
    }

    func testMissingValue() throws {
        for (key, kind) in Self.options {
            switch kind {
            case .flag, .flagOrPath: XCTAssertNoThrow(try parse(key, key), key)
            default: refusal({ try parse(key, key) }, key)
            }
        }
    }

    func testValueOnAFlagIsRefused() {
        for (key, kind) in Self.options {
            guard case .flag = kind else { continue }
            refusal({ try parse(key, "\(key)=1") }, key, "takes no value")
            refusal({ try parse(key, "\(key)=") }, key)
        }
    }

    func testValidValuesAndTheSameValueTwice() throws {
        for (key, kind) in Self.options {
            if case .flag = kind {
                XCTAssertNoThrow(try parse(key, key, key), "\(key) twice")
                continue
            }
            guard let (v, _) = Self.values(kind) else { continue }
            XCTAssertNoThrow(try parse(key, "\(key)=\(v)"), key)
            XCTAssertNoThrow(try parse(key, "\(key)=\(v)", "\(key)=\(v)"), "\(key) twice, same value")
            // ... also when the two come in separate -o lists.
            let pre = key == "lowerdir" ? "" : "lowerdir=/l,"
            XCTAssertNoThrow(try MountCommand.parse(arguments: [b("-o"), b(pre + "\(key)=\(v)"), b("-o"), b("\(key)=\(v)"), b("/m")]), key)
        }
    }

    func testADifferentValueTwiceIsRefusedNamingBoth() {
        for (key, kind) in Self.options {
            guard let (v, second) = Self.values(kind), let w = second else { continue }
            refusal({ try parse(key, "\(key)=\(v)", "\(key)=\(w)") }, "\(key)=\(v)", "\(key)=\(w)", "conflicts")
            let pre = key == "lowerdir" ? "" : "lowerdir=/l,"
            refusal({ try MountCommand.parse(arguments: [b("-o"), b(pre + "\(key)=\(v)"), b("-o"), b("\(key)=\(w)"), b("/m")]) },
                    "\(key)=\(v)", "\(key)=\(w)")
        }
    }

    func testNegativeValues() throws {
        for (key, kind) in Self.options {
            switch kind {
            case .path, .flagOrPath, .log:
                // "-1" is a relative path like any other.
                XCTAssertEqual(try pathValue(key, try parse(key, "\(key)=-1")), b("-1"), key)
            case .pathList:
                XCTAssertEqual(try parse(key, "\(key)=-1").lowerDirs, [b("-1")])
            case .anyValue:
                XCTAssertNoThrow(try parse(key, "\(key)=-1"), key)
            case .idMap:
                refusal({ try parse(key, "\(key)=-1:0:1") }, key)
                refusal({ try parse(key, "\(key)=0:-1:1") }, key)
                refusal({ try parse(key, "\(key)=0:0:-1") }, key)
            case .flag:
                refusal({ try parse(key, "\(key)=-1") }, key)
            default:
                refusal({ try parse(key, "\(key)=-1") }, key)
                refusal({ try parse(key, "\(key)=-0") }, key)
            }
        }
    }

    func testNonNumericValues() throws {
        for (key, kind) in Self.options {
            switch kind {
            case .seconds, .id, .count, .bit, .idMap:
                for v in ["abc", " 1", "1 ", "+1", "0x10", "1e3", "inf", "nan", "１", "1_0", "٣"] {
                    refusal({ try parse(key, "\(key)=\(v)") }, key)
                }
            case .words:
                refusal({ try parse(key, "\(key)=abc") }, key)
            default: continue
            }
        }
    }

    func testHugeValues() throws {
        let huge = [UInt8](repeating: UInt8(ascii: "7"), count: 1 << 20)
        for (key, kind) in Self.options {
            let item = b("\(key)=") + huge
            switch kind {
            case .path, .flagOrPath, .log:
                XCTAssertEqual(try pathValue(key, try parseBytes(key, item)), huge, key)
            case .pathList:
                XCTAssertEqual(try parseBytes(key, item).lowerDirs, [huge])
            case .anyValue, .operations:
                XCTAssertNoThrow(try parseBytes(key, item), key)
            default:
                // A megabyte of digits is still not a number in range, and the message stays short.
                refusal({ try parseBytes(key, item) }, key)
            }
        }
    }

    func testRefusedOptions() {
        refusal({ try parse("max_read", "max_read=131072") }, "max_read", "not supported")
        refusal({ try parse("blksize", "blksize=4096") }, "blksize", "not supported")
    }

    /// The path an option of a path kind set.
    func pathValue(_ key: String, _ cmd: MountCommand) throws -> [UInt8]? {
        switch key {
        case "upperdir": return cmd.upperDir
        case "workdir": return cmd.workDir
        case "trace_path": return cmd.tracePath
        case "stats": return cmd.statsFile
        case "trace": if case .file(let f) = cmd.trace { return f }; return nil
        case "log": if case .file(let f) = cmd.log { return f }; return nil
        default: XCTFail("no path option \(key)"); return nil
        }
    }
}
