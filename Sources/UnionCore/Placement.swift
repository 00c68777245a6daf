/// Where a merged entry is found in one of its layers.
public enum LayerPath: Equatable, Sendable {
    /// Under its own current name in the parent's copy in that layer: every upper copy,
    /// and every lower copy no redirect points elsewhere.
    case same
    /// Under another name in the parent's copy in that layer (a relative redirect).
    case named(Name)
    /// At this path from the layer root (an absolute redirect).
    case absolute([Name])
}

/// The lower file that holds a metacopy file's data, by its path from the layer root.
/// `layer` is nil until the data-only layers are searched for `path`: as the kernel's,
/// that search waits for the first access to the data (ovl_maybe_lookup_lowerdata).
public struct DataSource: Equatable, Sendable {
    public var layer: Int?
    public var path: [Name]
    /// The data file's st_blocks, which a metacopy's stat shows (lower layers do not change).
    public var blocks: Int64?
}

/// Everything a lookup found about a name that the node keeps: its layers, top first,
/// where it is in each, the top copy's own redirect and, for a metacopy file, its data.
public struct Placement: Sendable {
    public var layers: [Int]
    /// One per layer, in the order of `layers`; the first (the top copy) is always `.same`.
    public var paths: [LayerPath]
    /// The `overlay.redirect` of the upper copy, as the kernel keeps it (`upperredirect`):
    /// the component a later absolute redirect is built from.
    public var redirect: Redirect?
    public var data: DataSource?

    public init(layers: [Int], paths: [LayerPath]? = nil, redirect: Redirect? = nil, data: DataSource? = nil) {
        self.layers = layers
        self.paths = paths ?? layers.map { _ in .same }
        self.redirect = redirect
        self.data = data
    }

    /// Only in `layer`, under its own name (a new object, a full copy-up).
    public static func only(_ layer: Int) -> Placement { Placement(layers: [layer]) }

    public func path(in layer: Int) -> LayerPath {
        guard let i = layers.firstIndex(of: layer) else { return .same }
        return paths[i]
    }
}
