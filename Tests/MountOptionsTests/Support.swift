import XCTest
@testable import MountOptions

func b(_ s: String) -> [UInt8] { Array(s.utf8) }

/// argv from strings and raw byte strings mixed.
protocol ArgumentBytes { var argBytes: [UInt8] { get } }
extension String: ArgumentBytes { var argBytes: [UInt8] { Array(utf8) } }
extension Array: ArgumentBytes where Element == UInt8 { var argBytes: [UInt8] { self } }

/// Parses `-o LIST /mnt`, with `lowerdir=/l,` put first unless `lower` is false.
func mountWith(_ list: ArgumentBytes, lower: Bool = true) throws -> MountCommand {
    try MountCommand.parse(arguments: [b("-o"), (lower ? b("lowerdir=/l,") : []) + list.argBytes, b("/mnt")])
}

/// The message of the refusal, checked to be one bounded line; fails the test when accepted.
@discardableResult
func refusal(_ body: () throws -> Any, _ expected: String..., file: StaticString = #filePath, line: UInt = #line) -> String? {
    do {
        let r = try body()
        XCTFail("accepted, expected a refusal mentioning \(expected): \(r)", file: file, line: line)
        return nil
    } catch let e as UsageError {
        XCTAssertFalse(e.message.contains("\n"), "more than one line: \(e.message)", file: file, line: line)
        XCTAssertLessThan(e.message.utf8.count, 1200, "unbounded message", file: file, line: line)
        XCTAssertFalse(e.message.isEmpty, file: file, line: line)
        for s in expected {
            XCTAssertTrue(e.message.contains(s), "message \(e.message.debugDescription) lacks \(s.debugDescription)", file: file, line: line)
        }
        return e.message
    } catch {
        XCTFail("threw \(error), not a UsageError", file: file, line: line)
        return nil
    }
}

func refusedOption(_ list: ArgumentBytes, _ expected: String..., lower: Bool = true,
                   file: StaticString = #filePath, line: UInt = #line) {
    guard let m = refusal({ try mountWith(list, lower: lower) }, file: file, line: line) else { return }
    for s in expected {
        XCTAssertTrue(m.contains(s), "message \(m.debugDescription) lacks \(s.debugDescription)", file: file, line: line)
    }
}
