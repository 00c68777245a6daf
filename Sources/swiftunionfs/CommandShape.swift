import ArgumentParser
import FuseBridge
import Glibc

/// The version `--version` prints (and scripts/package reads).
let version = "0.1.0"

/// Checks argv against the command types of Commands.swift and answers what ArgumentParser
/// answers by itself: `--help` (also `help SUBCOMMAND`), `--version`,
/// `--generate-completion-script SHELL`. A line it refuses is one line on stderr and exit
/// status 2 — the documented status for bad input, where ArgumentParser would use 64.
enum CommandShape {
    static let usageStatus: Int32 = 2

    static func parse(_ argv: [[UInt8]]) -> ParsableCommand {
        // ArgumentParser takes Strings; these only decide the shape (see Commands.swift).
        let words = argv.map { String(decoding: $0, as: UTF8.self) }
        // -V, as fuse-overlayfs and mount(8) spell --version, for the mount form.
        if words.first == "-V" || (!isSubcommand(words.first) && words.contains("-V")) {
            print("swiftunionfs \(version)")
            exit(0)
        }
        do {
            var command = try SwiftUnionFS.parseAsRoot(words)
            guard ours.contains(where: { type(of: command) == $0 }) else {
                // ArgumentParser's own: `help SUBCOMMAND` answers by running.
                try command.run()
                exit(0)
            }
            return command
        } catch {
            let code = SwiftUnionFS.exitCode(for: error)
            if code == .success {
                // help, the version, a completion script: on stdout
                print(SwiftUnionFS.fullMessage(for: error))
                exit(0)
            }
            fail(oneLine(SwiftUnionFS.message(for: error)) + " (see \(helpCommand(words)))")
            exit(usageStatus)
        }
    }

    /// The commands main.swift dispatches on.
    static let ours: [ParsableCommand.Type] = [
        SwiftUnionFS.self, MountCLI.self, InspectCLI.self, RunCLI.self, ImageCLI.self, ImageImportCLI.self,
        ImageListCLI.self, ImageInspectCLI.self, ImageCommitCLI.self, DiffCLI.self, CommitCLI.self,
    ]

    static let subcommands = ["mount", "inspect", "run", "image", "diff", "commit", "help"]

    static func isSubcommand(_ word: String?) -> Bool { word.map(subcommands.contains) ?? false }

    /// `swiftunionfs [SUBCOMMAND [SUBSUBCOMMAND]] --help` for the line at hand.
    static func helpCommand(_ words: [String]) -> String {
        var path = ["swiftunionfs"]
        if let first = words.first, isSubcommand(first), first != "help" {
            path.append(first)
            if first == "image", words.count > 1, ["import", "ls", "list", "inspect", "commit"].contains(words[1]) {
                path.append(words[1])
            }
        }
        return (path + ["--help"]).joined(separator: " ")
    }

    /// ArgumentParser's message on one line: a lowercase start, as our own messages have.
    static func oneLine(_ message: String) -> String {
        func trimmed(_ s: Substring) -> String {
            var t = s.drop(while: \.isWhitespace)
            while t.last?.isWhitespace == true { t = t.dropLast() }
            return String(t)
        }
        var text = message.split(whereSeparator: \.isNewline).map(trimmed).filter { !$0.isEmpty }.joined(separator: "; ")
        if text.hasPrefix("Error: ") { text.removeFirst("Error: ".count) }
        if let c = text.first, c.isUppercase, text.dropFirst().first?.isLowercase == true {
            text = c.lowercased() + text.dropFirst()
        }
        return text
    }
}
