import UnionCore

/// The kernel's rules for its feature options taken together (fs/overlayfs/params.c,
/// ovl_fs_params_verify), applied once the whole command line is read. The refusals are
/// the kernel's own, in one line each.
extension MountCommand {
    mutating func resolveFeatures() throws(UsageError) {
        var redirect = redirectDir ?? .off
        let metacopy = self.metacopy ?? false
        // Data-only layers need no metacopy=on (Linux 6.16+): they only serve lower metacopy
        // files that redirect into them, and nothing else is followed for them.
        // Without an upper nothing is renamed: following is all redirect_dir=on would do.
        if upperDir == nil && redirect == .follow { redirect = .on }
        if metacopy && redirect != .on {
            // A metacopy file that is renamed or hard-linked needs a redirect to find its data.
            if let given = redirectDir {
                throw UsageError(message: "conflicting options: metacopy=on,redirect_dir=\(given.rawValue) (metacopy needs redirect_dir=on)")
            }
            redirect = .on
        }
        redirectDir = redirect
        self.metacopy = metacopy
    }
}
