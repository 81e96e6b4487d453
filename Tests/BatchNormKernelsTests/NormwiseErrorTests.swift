import BatchNormReference
import Testing

/// The yardstick every accuracy bound is stated in: a NaN or an infinity
/// where the truth is something else fails every bound.
@Suite struct NormwiseErrorTests {
    func error(_ got: [Double], _ want: [Double], scale: Double = 0) -> Double {
        ReferenceBatchNorm.normwiseError(got, want, scale: scale)
    }

    @Test func aNaNWhereTheTruthIsFiniteIsAnInfiniteError() {
        #expect(error([.nan, 1], [1, 1]) == .infinity)
        #expect(error([1, 1], [1, .nan]) == .infinity)
        #expect(ReferenceBatchNorm.normwiseError([Float.nan, 1], [1.0, 1]) == .infinity)
    }

    @Test func anInfinityWhereTheTruthDiffersIsAnInfiniteError() {
        #expect(error([.infinity, 1], [1e300, 1]) == .infinity)
        #expect(error([.infinity], [-.infinity]) == .infinity)
        #expect(error([3], [.infinity]) == .infinity)
    }

    @Test func matchingNonFiniteValuesDifferByNothing() {
        #expect(error([.nan, .infinity, -.infinity, 2], [.nan, .infinity, -.infinity, 2]) == 0)
    }

    @Test func finiteValuesGiveTheLargestDifferenceOverTheLargestTruth() {
        // |2.5 − 2| = 0.5 over max |want| = 4.
        #expect(error([1, 2.5, -4], [1, 2, -4]) == 0.125)
        // The scale raises the denominator; a zero truth leaves the plain difference.
        #expect(error([1, 2.5], [1, 2], scale: 10) == 0.05)
        #expect(error([0.5, 0], [0, 0]) == 0.5)
        // An infinite truth elsewhere does not swallow a finite error.
        #expect(error([.infinity, 2.5], [.infinity, 2]) == 0.25)
    }
}
