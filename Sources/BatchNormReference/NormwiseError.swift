extension ReferenceBatchNorm {
    /// max |got − want| / max(max |want|, scale): the normwise relative error
    /// every accuracy bound in this package is stated in. `scale` (default 0)
    /// raises the denominator where the result is a cancelling difference of
    /// larger terms. Returns max |got − want| when the denominator is 0.
    ///
    /// Values equal as numbers (the same infinity included) differ by 0, and
    /// so do two NaNs; a NaN against a number, or infinities against anything
    /// else, make the error +∞, so that no bound passes them.
    ///
    /// - Parameters:
    ///   - got: The values to judge.
    ///   - want: The truth, in float64, as many values.
    ///   - scale: A floor for the denominator: max(max |want|, scale).
    public static func normwiseError(_ got: [Double], _ want: [Double], scale: Double = 0) -> Double {
        precondition(got.count == want.count, "length mismatch: \(got.count) vs \(want.count)")
        var maxDifference = 0.0, maxWant = scale
        for i in got.indices {
            let (g, w) = (got[i], want[i])
            if g == w || (g.isNaN && w.isNaN) { continue }
            let difference = abs(g - w)
            guard difference.isFinite else { return .infinity }
            maxDifference = Swift.max(maxDifference, difference)
        }
        for w in want where w.isFinite { maxWant = Swift.max(maxWant, abs(w)) }
        return maxWant == 0 ? maxDifference : maxDifference / maxWant
    }

    /// `normwiseError` of float results against a double reference.
    ///
    /// - Parameters:
    ///   - got: The values to judge.
    ///   - want: The truth, in float64, as many values.
    ///   - scale: A floor for the denominator: max(max |want|, scale).
    public static func normwiseError(_ got: [Float], _ want: [Double], scale: Double = 0) -> Double {
        normwiseError(got.map(Double.init), want, scale: scale)
    }
}
