import BatchNormKernels
import BatchNormReference
import Testing

/// The yardsticks the accuracy tests are built on catch the faults they are
/// there to catch: a deliberate fault in one value of a correct result fails
/// the check that guards it.
@Suite struct CheckerTests {
    /// A correct float result of batch norm and its float64 truth.
    func correct() throws -> (got: [Float], truth: [Double]) {
        let x: [Float] = randomValues(240, center: 1, spread: 2, seed: 1)
        let got = try BatchNormalization.forwardTraining(x, shape: [4, 6, 10]).output
        return (got, ReferenceBatchNorm.forward(doubles(x), shape: [4, 6, 10], training: true).output)
    }

    @Test func aNaNOrAWrongValueInOneOutputFailsTheNormwiseBound() throws {
        let (got, truth) = try correct()
        #expect(normwiseError(got, truth) <= Bound.forward(Float.self))
        var nan = got
        nan[117] = .nan
        #expect(!(normwiseError(nan, truth) <= Bound.forward(Float.self)))
        var off = got
        off[3] += Float(1e-5 * truth.map(abs).max()!)   // one value off by 1e-5 of the largest
        #expect(!(normwiseError(off, truth) <= Bound.forward(Float.self)))
    }

    @Test func aWrongMeanFailsTheNormwiseBound() throws {
        let x: [Float] = randomValues(240, center: 1, spread: 2, seed: 1)
        let truth = ReferenceBatchNorm.forward(doubles(x), shape: [4, 6, 10], training: true)
        // y computed with a mean off by 1e-5 of the data's spread in one channel.
        var mean = truth.mean
        mean[2] += 2e-5
        let wrong = (0..<240).map { i -> Float in
            let c = (i / 10) % 6
            return Float((Double(x[i]) - mean[c]) * truth.invStd[c])
        }
        #expect(!(normwiseError(wrong, truth.output) <= Bound.forward(Float.self)))
    }

    @Test func oneFlippedLowBitInAHalfResultIsOneUlpAndBreaksBitwiseEquality() {
        let values = (0..<64).map { Float16(Float($0) * 0.37 - 11) }
        var flipped = values
        flipped[40] = Float16(bitPattern: flipped[40].bitPattern ^ 1)
        #expect(zip(values, flipped).map { ulps($0, $1) }.max() == 1)
        #expect(values.map(\.bitPattern) != flipped.map(\.bitPattern))
        #expect(HalfPrecisionTests.worstUlps(flipped, values.map { Double(Float($0)) }) == 1)
        // ±0 are 0 apart; a NaN and a number infinitely far; two NaNs 0 apart.
        #expect(ulps(Float16(0), Float16(-0.0)) == 0)
        #expect(ulps(Float16.nan, Float16(1)) == .max && ulps(Float16.nan, -Float16.nan) == 0)
        let one = BFloat16(Float(1))
        #expect(ulps(one, BFloat16(bitPattern: one.bitPattern + 1)) == 1)
    }
}
