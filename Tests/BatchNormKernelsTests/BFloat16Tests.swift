import BatchNormKernels
import BatchNormReference
import Testing

/// The bfloat16 storage type's conversions, against a reference that rounds
/// by comparing with the midpoint of the two neighbours, in exact arithmetic.
@Suite struct BFloat16Tests {
    /// The bfloat16 nearest to `value` (finite, within range), ties to the
    /// even one: the two candidates around it and their midpoint are exact in
    /// Double (8 significant bits), so the comparisons are too.
    static func nearest(_ value: Double) -> UInt16 {
        let magnitude = abs(value)
        let sign: UInt16 = value.sign == .minus ? 0x8000 : 0
        // Candidates by magnitude: the largest bfloat16 ≤ |value| and the next one up.
        var low: UInt16 = 0
        var step: UInt16 = 0x4000
        while step > 0 {   // binary search over the positive patterns, in value order
            let candidate = low | step
            if candidate < 0x7F80, Double(Float(BFloat16(bitPattern: candidate))) <= magnitude { low = candidate }
            step >>= 1
        }
        let high = low + 1   // 0x7F80 is +∞: past the largest finite value
        let lowValue = Double(Float(BFloat16(bitPattern: low)))
        let highValue = high == 0x7F80 ? lowValue + (lowValue - Double(Float(BFloat16(bitPattern: low - 1))))
                                       : Double(Float(BFloat16(bitPattern: high)))
        let middle = (lowValue + highValue) / 2
        let chosen = magnitude < middle ? low : magnitude > middle ? high : (low & 1 == 0 ? low : high)
        return sign | chosen
    }

    @Test func everyPatternSurvivesFloatAndBack() {
        for bits in 0...UInt16.max {
            let value = BFloat16(bitPattern: bits), float = Float(value)
            if float.isNaN {
                #expect(BFloat16(float).bitPattern & 0x7FC0 == 0x7FC0)   // a quiet NaN
                #expect(BFloat16(float).bitPattern & 0x8000 == bits & 0x8000)
            } else {
                #expect(BFloat16(float).bitPattern == bits, "\(bits)")
                #expect(BFloat16(Double(float)).bitPattern == bits, "\(bits)")
            }
        }
    }

    @Test func floatsRoundToNearestEven() {
        var random = SplitMix64(seed: 101)
        var values: [Float] = (0..<200_000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next())) }
        // Ties, just off ties, subnormals, the overflow edge.
        for base in [Float(1), 3, 0.1, Float.leastNormalMagnitude / 1000, 3e38] {
            let bits = base.bitPattern & 0xFFFF_0000
            values += [0x8000, 0x7FFF, 0x8001, 0x18000, 0x17FFF].map { Float(bitPattern: bits + $0) }
        }
        values += [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, 0, -0.0]
        for value in values where value.isFinite {
            let want = Self.nearest(Double(value))
            #expect(BFloat16(value).bitPattern == want, "\(value): \(BFloat16(value).bitPattern) want \(want)")
        }
        #expect(BFloat16(Float.infinity).bitPattern == 0x7F80)
        #expect(BFloat16(-Float.infinity).bitPattern == 0xFF80)
    }

    @Test func doublesRoundOnceNotTwice() {
        // 1 + 2⁻⁸ + 2⁻³⁰: to Float first it becomes the tie 1 + 2⁻⁸ and then 1 (even);
        // rounded once it is above the tie: 1 + 2⁻⁷.
        let value = 1 + 0x1p-8 + 0x1p-30
        #expect(BFloat16(Float(value)).bitPattern == 0x3F80)
        #expect(BFloat16(value).bitPattern == 0x3F81)
        var random = SplitMix64(seed: 102)
        for _ in 0..<200_000 {
            // Every binade bfloat16 reaches (subnormals included), with all 52 fraction bits random.
            let bits = random.next()
            let value = Double(sign: bits & 1 == 0 ? .plus : .minus, exponent: Int(bits >> 52 & 0x1FF) % 266 - 138,
                               significand: 1 + Double(bits >> 12 & ((1 << 52) - 1)) * 0x1p-52)
            guard abs(value) < 3.3e38 else { continue }
            #expect(BFloat16(value).bitPattern == Self.nearest(value), "\(value)")
        }
        #expect(BFloat16(1e300).bitPattern == 0x7F80)
        #expect(BFloat16(-1e300).bitPattern == 0xFF80)
        #expect(BFloat16(1e-300).bitPattern == 0x0000)
    }

    @Test func equalityAndHashingFollowTheValue() {
        let zero = BFloat16(Float(0)), negativeZero = BFloat16(-Float(0))
        #expect(zero == negativeZero && zero.bitPattern != negativeZero.bitPattern)
        #expect(Set([zero, negativeZero]).count == 1)
        #expect(BFloat16(Float.nan) != BFloat16(Float.nan))
        #expect(BFloat16(Float(1.5)).description == "1.5")
        #expect(Double(BFloat16(Float(-2.25))) == -2.25)
    }
}
