/// The `-o` list: splitting into items and undoing the backslash escapes, on bytes.
///
/// The kernel's overlayfs is the model (fs/overlayfs/params.c): `ovl_next_opt` splits on
/// commas not preceded by a backslash and leaves the escapes in the item; the paths of
/// `lowerdir=`, `upperdir=` and `workdir=` are then unescaped by `ovl_unescape`, a backslash
/// taking the next byte literally (`\,` `\:` `\\`), and `lowerdir=` is first split on colons
/// not preceded by one. The differences are deliberate: a list ending in a lone backslash is
/// refused (the kernel drops it silently); every value swiftunionfs interprets is unescaped the
/// same way, so a comma can be written in `trace=`/`stats=`/`log=` files too; and a value of
/// the SELinux options (`context="a,b"`) may be double-quoted with commas inside, as
/// containers/storage writes it. Every pass is linear in the length of the list.
enum OptionList {
    static let backslash = UInt8(ascii: "\\")
    static let comma = UInt8(ascii: ",")
    static let colon = UInt8(ascii: ":")
    static let equals = UInt8(ascii: "=")
    static let quote = UInt8(ascii: "\"")

    /// Options whose value may be double-quoted (the quotes stay in the item, unchanged).
    static let quotable: [[UInt8]] = ["context", "fscontext", "defcontext", "rootcontext"].map { Array($0.utf8) }

    /// One item of the list as written (escapes still in), split at its first `=`.
    struct Item {
        var text: ArraySlice<UInt8>
        var key: ArraySlice<UInt8>
        /// nil for a bare word (`volatile`), else the bytes after the first `=` (maybe empty).
        var rawValue: ArraySlice<UInt8>?

        init(_ text: ArraySlice<UInt8>) {
            self.text = text
            if let eq = text.firstIndex(of: OptionList.equals) {
                key = text[..<eq]
                rawValue = text[(eq + 1)...]
            } else {
                key = text
                rawValue = nil
            }
        }

        var shown: String { Printable.text(text) }
    }

    /// The items of a list; empty items are dropped (containers/storage writes `...,,volatile`).
    static func split(_ list: [UInt8]) throws(UsageError) -> [Item] {
        var items: [Item] = []
        var start = list.startIndex
        var i = start
        var quoted = false
        while i < list.endIndex {
            let b = list[i]
            if b == backslash {
                guard i + 1 < list.endIndex else {
                    throw UsageError(message: "the option list ends in a lone backslash (write \\\\ for a backslash): \(Printable.text(list[start...]))")
                }
                i += 2
                continue
            }
            if quoted {
                if b == quote { quoted = false }
            } else if b == quote && opensQuotedValue(list[start..<i]) {
                quoted = true
            } else if b == comma {
                if i > start { items.append(Item(list[start..<i])) }
                start = i + 1
            }
            i += 1
        }
        if quoted {
            throw UsageError(message: "option \(Printable.text(list[start...])) has an unterminated double quote")
        }
        if i > start { items.append(Item(list[start..<i])) }
        return items
    }

    /// Whether a quote right after `prefix` (the item so far) opens a quoted value: only
    /// directly after `context=` and its relatives, so a '"' in a path is an ordinary byte.
    private static func opensQuotedValue(_ prefix: ArraySlice<UInt8>) -> Bool {
        guard prefix.last == equals else { return false }
        let key = prefix.dropLast()
        return quotable.contains { key.elementsEqual($0) }
    }

    /// `\X` becomes `X`. The splitter has already refused a lone backslash at the very end,
    /// the only place one can be (a backslash before a comma escapes the comma).
    static func unescape(_ value: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(value.count)
        var escaped = false
        for b in value {
            if escaped { out.append(b); escaped = false }
            else if b == backslash { escaped = true }
            else { out.append(b) }
        }
        return out
    }

    /// `lowerdir=`'s value as the kernel splits it (params.c, ovl_parse_param_split_lowerdirs):
    /// layers separated by ':' not escaped, the data-only layers after '::'
    /// (`L1:L2::D1::D2`), each piece unescaped. Refused, as the kernel refuses them: a
    /// leading colon, a trailing one, three or more in a row, a regular layer after a data
    /// layer, and an empty layer.
    static func splitLowerDirs(_ value: ArraySlice<UInt8>) throws(UsageError) -> (dirs: [[UInt8]], dataCount: Int) {
        var dirs: [[UInt8]] = []
        var dataCount = 0
        var cur: [UInt8] = []
        var escaped = false
        var colons = 0
        var inData = false
        func endPiece() throws(UsageError) {
            if inData { dataCount += 1 } else if dataCount > 0 {
                throw UsageError(message: "option lowerdir=: regular lower layers cannot follow data lower layers (write L1:L2::DATA1::DATA2)")
            }
            dirs.append(cur)
            cur = []
        }
        for b in value {
            if escaped { cur.append(b); escaped = false; continue }
            if b == colon {
                colons += 1
                continue
            }
            if colons > 0 {
                guard !(dirs.isEmpty && cur.isEmpty) else {
                    throw UsageError(message: "option lowerdir=: a leading ':' (the kernel's 'cannot append lower layer'; write \\: for a colon in a path)")
                }
                guard colons <= 2 else {
                    throw UsageError(message: "option lowerdir=: only single ':' or double '::' sequences of unescaped colons are allowed (write \\: for a colon in a path)")
                }
                try endPiece()
                inData = colons == 2
                colons = 0
            }
            if b == backslash { escaped = true } else { cur.append(b) }
        }
        guard colons == 0 else {
            throw UsageError(message: "option lowerdir=: unescaped trailing colons (write \\: for a colon in a path)")
        }
        try endPiece()
        if dirs.contains(where: \.isEmpty) { throw UsageError(message: "option lowerdir=: an empty layer") }
        return (dirs, dataCount)
    }
}

