/// The rule for an option given more than once.
///
/// A setting (one field of `MountCommand`, however it is written: `volatile` and `fsync=0` are
/// both the fsync setting, `userxattr` is `xattr_namespace=user`, `-s` is `threaded=0`,
/// `trace` is `trace=` to stderr) may be given again only with the same value; a different
/// value is a mistake, reported with both. Flags that set no value (`squash_to_root`,
/// `debug`, mount flags such as `nodev`) may repeat. The kernel and fuse-overlayfs let the last
/// one win instead; for a union that silently picks one of two upper directories, refusing
/// is the safer answer.
extension MountCommand {
    mutating func assign<T: Equatable>(_ field: WritableKeyPath<MountCommand, T>, _ value: T,
                                       setting: String, written: some Collection<UInt8>) throws(UsageError) {
        if let earlier = given[setting] {
            guard self[keyPath: field] == value else { throw conflict(written, earlier) }
            return
        }
        given[setting] = Array(written)
        self[keyPath: field] = value
    }

    /// For options kept as written: the same key again must carry the same bytes.
    /// Returns false when the value was already recorded (nothing more to do).
    mutating func recordRaw(key: String, value: ArraySlice<UInt8>, written: ArraySlice<UInt8>) throws(UsageError) -> Bool {
        if let earlier = rawValues[key] {
            guard earlier.elementsEqual(value) else { throw conflict(written, given[key] ?? []) }
            return false
        }
        rawValues[key] = Array(value)
        given[key] = Array(written)
        return true
    }

    private func conflict(_ now: some Collection<UInt8>, _ earlier: [UInt8]) -> UsageError {
        UsageError(message: "option \(Printable.text(now)) conflicts with \(Printable.text(earlier)) given before (give a setting once, or twice with the same value)")
    }
}
