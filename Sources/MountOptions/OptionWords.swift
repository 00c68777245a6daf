/// The `-o` syntax for code outside this module that rewrites or reads option lists
/// (the `image=` pre-pass, `image commit`): the same splitter and escapes the parser
/// uses, on bytes, so a path is never decoded on the way.
public enum OptionWords {
    /// The items of a list as written (escapes kept), empty ones dropped.
    public static func items(_ list: [UInt8]) throws(UsageError) -> [[UInt8]] {
        try OptionList.split(list).map { Array($0.text) }
    }

    /// An item's value with its backslash escapes undone.
    public static func unescape(_ value: some Collection<UInt8>) -> [UInt8] { OptionList.unescape(ArraySlice(value)) }

    /// A path written as one `lowerdir=` entry: `\`, `:`, `,` and `"` escaped.
    public static func escapeLayer(_ path: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(path.count)
        for b in path {
            if b == OptionList.backslash || b == OptionList.colon || b == OptionList.comma || b == OptionList.quote {
                out.append(OptionList.backslash)
            }
            out.append(b)
        }
        return out
    }

    /// The value of `key=` if `item` is that option, escapes kept.
    public static func value(of key: String, in item: [UInt8]) -> ArraySlice<UInt8>? {
        let k = Array(key.utf8) + [OptionList.equals]
        return item.starts(with: k) ? item[k.count...] : nil
    }
}
