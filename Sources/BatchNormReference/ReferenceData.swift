/// A small deterministic generator (SplitMix64): the same stream for the
/// same seed on every machine, so that tests and benchmarks see the same data.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's whole state; each `next()` advances it by a constant.
    public var state: UInt64

    /// A generator whose stream is a function of `seed` alone.
    ///
    /// - Parameter seed: The initial state.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension ReferenceBatchNorm {
    /// `count` values `center + spread * u`, u uniform in [-1, 1]
    /// (`Double.random(in: -1...1, using:)`, in order) from a `SplitMix64`
    /// seeded with `seed`.
    ///
    /// - Parameters:
    ///   - count: How many values.
    ///   - center: The middle of the range.
    ///   - spread: Half the range's width.
    ///   - seed: The generator's seed.
    public static func uniformValues(_ count: Int, center: Double = 0, spread: Double = 1, seed: UInt64) -> [Double] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in center + spread * Double.random(in: -1...1, using: &rng) }
    }

    /// `uniformValues` rounded to float.
    ///
    /// - Parameters:
    ///   - count: How many values.
    ///   - center: The middle of the range.
    ///   - spread: Half the range's width.
    ///   - seed: The generator's seed.
    public static func uniformFloats(_ count: Int, center: Double = 0, spread: Double = 1, seed: UInt64) -> [Float] {
        uniformValues(count, center: center, spread: spread, seed: seed).map(Float.init)
    }
}
