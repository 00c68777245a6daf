/// Numbers in option values, read from bytes: decimal digits only. No sign, no spaces, no
/// hexadecimal or exponent, no "inf"/"nan" -- what Swift's and C's number parsers would also
/// take is exactly what makes a typo mount with a surprising value.
enum Numbers {
    static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    /// A decimal integer from 0 to `max`; nil for anything else. Stops at the first byte that
    /// makes it too large, so a megabyte of digits costs nothing.
    static func decimal(_ text: some Collection<UInt8>, max: UInt64) -> UInt64? {
        guard !text.isEmpty else { return nil }
        var value: UInt64 = 0
        for b in text {
            guard isDigit(b) else { return nil }
            value = value * 10 + UInt64(b - UInt8(ascii: "0"))
            guard value <= max else { return nil }  // max < UInt64.max / 10: the next step cannot wrap
        }
        return value
    }

    static func id(_ text: some Collection<UInt8>, max: UInt32) -> UInt32? {
        decimal(text, max: UInt64(max)).map { UInt32($0) }
    }

    /// `0` or `1`, the form of every fuse-overlayfs switch.
    static func bit(_ text: some Collection<UInt8>) -> Bool? {
        guard text.count == 1, let b = text.first else { return nil }
        switch b {
        case UInt8(ascii: "0"): return false
        case UInt8(ascii: "1"): return true
        default: return nil
        }
    }

    /// The largest `timeout=`: about 31 years, far beyond any useful cache time, and still an
    /// exact double that libfuse turns into whole seconds without saturating.
    static let maxSeconds: UInt64 = 1_000_000_000
    /// Fraction digits `timeout=` takes: down to the nanosecond the kernel keeps.
    static let maxFractionDigits = 9

    /// Seconds: `DIGITS` or `DIGITS.DIGITS` (up to 9 after the point), from 0 to `maxSeconds`.
    static func seconds(_ text: ArraySlice<UInt8>) -> Double? {
        let point = text.firstIndex(of: UInt8(ascii: "."))
        let whole = text[..<(point ?? text.endIndex)]
        guard let w = decimal(whole, max: maxSeconds) else { return nil }
        guard let point else { return Double(w) }
        let fraction = text[(point + 1)...]
        guard !fraction.isEmpty, fraction.count <= maxFractionDigits,
              let f = decimal(fraction, max: 999_999_999) else { return nil }
        let nanos = f * power10(maxFractionDigits - fraction.count)
        guard w < maxSeconds || nanos == 0 else { return nil }
        return Double(w) + Double(nanos) / 1e9
    }

    private static func power10(_ n: Int) -> UInt64 { (0..<n).reduce(1) { r, _ in r * 10 } }
}
