/// The value of `overlay.redirect`: where the lower copies of a renamed directory (or
/// of a renamed or hard-linked metacopy file) are looked up, as the kernel's overlayfs
/// writes and reads it (fs/overlayfs/namei.c, dir.c).
///
/// A redirect only ever applies to the layers *below* the one that carries it, so a
/// chain of redirects always ends (each step goes one layer down): no "loop" of
/// redirects can make a lookup run forever. Each name is then looked up one component
/// at a time beneath the layer root, never following a symlink: a redirect cannot lead
/// outside its layer.
public enum Redirect: Equatable, Sendable {
    /// Another name in the same parent directory of each lower layer.
    case relative(Name)
    /// A path from the root of each lower layer.
    case absolute([Name])

    /// The kernel's `redirect_max` default: a longer absolute redirect is not written
    /// (the rename falls back to EXDEV, as the kernel's does).
    public static let maxLength = 256

    /// Parses an xattr value with the kernel's rules (ovl_get_redirect_xattr): an empty
    /// value, a relative one holding '/', an absolute one with an empty component
    /// ("/", "//a", "/a/") is EINVAL. "." and ".." components parse; the lookup that
    /// meets one answers EACCES, as the kernel's lookup_one does. A NUL byte is EINVAL
    /// (the kernel would silently cut the value there).
    public init(parsing value: [UInt8]) throws(Errno) {
        let slash = UInt8(ascii: "/")
        guard !value.isEmpty, !value.contains(0) else { throw Errno.invalid }
        if value[0] == slash {
            let parts = value.dropFirst().split(separator: slash, omittingEmptySubsequences: false)
            guard !parts.contains(where: \.isEmpty) else { throw Errno.invalid }
            self = .absolute(parts.map { Name($0) })
        } else {
            guard !value.contains(slash) else { throw Errno.invalid }
            self = .relative(Name(value))
        }
    }

    /// The bytes stored in the xattr.
    public var bytes: [UInt8] {
        switch self {
        case .relative(let n): return n.bytes
        case .absolute(let parts): return parts.flatMap { [UInt8(ascii: "/")] + $0.bytes }
        }
    }

    public var isAbsolute: Bool { if case .absolute = self { return true } else { return false } }

    /// Whether a component is "." or "..": a lookup refuses it (EACCES).
    static func isDotName(_ n: Name) -> Bool { n == .dot || n == .dotDot }
}

/// The name a lookup is carrying down the layers, as the kernel's `ovl_lookup_data.name`:
/// the merged name until a redirect replaces it by another name in the same parent, or by
/// a path from the layer roots.
enum LookupName: Equatable {
    case relative(Name)
    case absolute([Name])

    /// After a redirect met on the component at `index` (always 0 for a relative name):
    /// a relative redirect renames that component, an absolute one replaces everything
    /// up to it.
    func redirected(_ r: Redirect, at index: Int) -> LookupName {
        switch (self, r) {
        case (.relative, .relative(let n)): return .relative(n)
        case (.relative, .absolute(let p)): return .absolute(p)
        case (.absolute(var parts), .relative(let n)):
            parts[index] = n
            return .absolute(parts)
        case (.absolute(let parts), .absolute(let p)):
            return .absolute(p + parts[(index + 1)...])
        }
    }
}
