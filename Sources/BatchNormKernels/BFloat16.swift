/// bfloat16: the upper 16 bits of an IEEE binary32 (1 sign, 8 exponent and 7
/// fraction bits), a storage format for tensors. Swift has no such type; this
/// one stores and converts, with no arithmetic of its own: widen to `Float`
/// to compute.
///
/// Conversions from `Float` and `Double` round to nearest, ties to even
/// (from `Double` in one rounding, never through `Float` first); values at or
/// past the largest finite bfloat16 plus half an ulp become ±∞; NaN stays NaN
/// (quiet, with its sign). Conversion to `Float` is exact. Equality and
/// hashing follow the value, as `Float`'s do: +0 == −0, and NaN equals
/// nothing.
@frozen
public struct BFloat16: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The 16 bits: sign, exponent, fraction.
    public var bitPattern: UInt16

    /// The value with these bits.
    ///
    /// - Parameter bitPattern: Sign, exponent and fraction, as a float's upper 16 bits.
    public init(bitPattern: UInt16) {
        self.bitPattern = bitPattern
    }

    /// `value` rounded to nearest, ties to even.
    ///
    /// - Parameter value: Any float: NaN stays NaN, values past the range become ±∞.
    public init(_ value: Float) {
        let bits = value.bitPattern
        if value.isNaN {
            bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x0040   // quiet, sign and top payload kept
            return
        }
        // Adding 0x7FFF plus the kept part's lowest bit rounds the dropped
        // 16 bits to nearest, ties to even; a carry into the exponent is the
        // right result, up to ∞.
        let lowest = (bits >> 16) & 1
        bitPattern = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ lowest) >> 16)
    }

    /// `value` rounded to nearest, ties to even, in one rounding: first to a
    /// `Float` rounded to odd (truncated, with its last bit set when anything
    /// was dropped), which keeps enough to round again correctly.
    ///
    /// - Parameter value: Any double: NaN stays NaN, values past the range become ±∞.
    public init(_ value: Double) {
        guard value.isFinite else {
            self.init(Float(value))
            return
        }
        var float = Float(value)   // to nearest; step back toward zero if it went past
        if abs(Double(float)) > abs(value) {
            float = value > 0 ? float.nextDown : float.nextUp
        }
        if Double(float) != value {
            float = Float(bitPattern: float.bitPattern | 1)
        }
        self.init(float)
    }

    /// +0.
    public static var zero: BFloat16 { BFloat16(bitPattern: 0) }

    /// Whether `a` and `b` are the same number, as floating-point equality
    /// says: −0 equals +0, and NaN equals nothing.
    ///
    /// - Parameters:
    ///   - a: A value.
    ///   - b: Another.
    public static func == (a: BFloat16, b: BFloat16) -> Bool { Float(a) == Float(b) }

    /// Hashes the value so that equal values hash alike (−0 as +0).
    ///
    /// - Parameter hasher: The hasher to feed.
    public func hash(into hasher: inout Hasher) {
        // Equal values hash alike: −0 as +0.
        hasher.combine(Float(self) == 0 ? 0 : bitPattern)
    }

    /// The value as `Float` prints it.
    public var description: String { Float(self).description }
    /// `BFloat16(…)` around the value as `Float` debug-prints it.
    public var debugDescription: String { "BFloat16(\(Float(self).debugDescription))" }
}

extension Float {
    /// The value of `value`, exactly.
    ///
    /// - Parameter value: A bfloat16 value; every one is a float.
    public init(_ value: BFloat16) {
        self.init(bitPattern: UInt32(value.bitPattern) << 16)
    }
}

extension Double {
    /// The value of `value`, exactly.
    ///
    /// - Parameter value: A bfloat16 value; every one is a double.
    public init(_ value: BFloat16) {
        self.init(Float(value))
    }
}
