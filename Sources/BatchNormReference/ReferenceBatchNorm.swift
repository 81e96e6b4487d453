/// Batch normalization written straight from the formulas, in `Double`, with
/// no cleverness: the yardstick that tests and benchmarks measure the
/// kernels against. Slow on purpose; use it on small tensors.
///
/// Shapes are `[N, C, …]` channels first, where x[n][c][s] is at
/// `(n·C + c)·S + s`, or, with `channelsLast`, `[N, …, C]`, where x[n][s][c]
/// is at `(n·S + s)·C + c`; S is the product of the dimensions other than N
/// and C, and m = N·S values per channel.
public enum ReferenceBatchNorm {
    /// The result of `forward`.
    public struct Forward: Sendable {
        /// y = γ · (x − μ) · r + β.
        public var output: [Double]
        /// μ per channel (batch mean in training, running mean in inference).
        public var mean: [Double]
        /// r = 1 / sqrt(σ² + ε) per channel.
        public var invStd: [Double]
        /// The running mean after the call (updated in training only).
        public var runningMean: [Double]?
        /// The running variance after the call (updated in training only, with the unbiased variance).
        public var runningVariance: [Double]?
    }

    /// The result of `backward`.
    public struct Backward: Sendable {
        /// dx.
        public var inputGradient: [Double]
        /// dγ = Σ g · x̂ per channel.
        public var weightGradient: [Double]
        /// dβ = Σ g per channel.
        public var biasGradient: [Double]
        /// dL/dz for an epilogue with a residual z: the (masked) gradient g.
        public var residualGradient: [Double]
    }

    /// relu(v): v where v > 0 or v is NaN, 0 elsewhere.
    ///
    /// - Parameter v: A value.
    public static func relu(_ v: Double) -> Double { v > 0 || v.isNaN ? v : 0 }

    /// C: `shape[1]`, or the last dimension with `channelsLast`.
    ///
    /// - Parameters:
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`.
    ///   - channelsLast: Whether C is the last dimension.
    public static func channels(shape: [Int], channelsLast: Bool = false) -> Int {
        channelsLast ? shape[shape.count - 1] : shape[1]
    }

    /// m = N·S, the values per channel.
    static func valuesPerChannel(shape: [Int], channelsLast: Bool) -> Double {
        Double(shape.reduce(1, *) / channels(shape: shape, channelsLast: channelsLast))
    }

    /// Calls `body(channel, index)` for every index of the tensor, channel by channel.
    static func forEachIndex(shape: [Int], channelsLast: Bool, _ body: (Int, Int) -> Void) {
        let n = shape[0], channels = channels(shape: shape, channelsLast: channelsLast)
        let spatial = shape.reduce(1, *) / (n * channels)
        for c in 0..<channels {
            for i in 0..<n {
                for s in 0..<spatial {
                    body(c, channelsLast ? (i * spatial + s) * channels + c : (i * channels + c) * spatial + s)
                }
            }
        }
    }

    /// Per-channel mean and biased variance, two passes in `Double`.
    ///
    /// - Parameters:
    ///   - x: The input, in float64, laid out as `shape` and `channelsLast` say.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`.
    ///   - channelsLast: Whether C is the last dimension.
    public static func statistics(_ x: [Double], shape: [Int], channelsLast: Bool = false)
        -> (mean: [Double], variance: [Double])
    {
        let channels = channels(shape: shape, channelsLast: channelsLast)
        let m = valuesPerChannel(shape: shape, channelsLast: channelsLast)
        var sum = [Double](repeating: 0, count: channels)
        forEachIndex(shape: shape, channelsLast: channelsLast) { c, i in sum[c] += x[i] }
        let mean = sum.map { $0 / m }
        var squares = [Double](repeating: 0, count: channels)
        forEachIndex(shape: shape, channelsLast: channelsLast) { c, i in
            squares[c] += (x[i] - mean[c]) * (x[i] - mean[c])
        }
        return (mean, squares.map { $0 / m })
    }

    /// Training: batch statistics, running ← (1 − momentum)·running + momentum·batch with the
    /// unbiased variance σ²·m/(m − 1). Inference: the running statistics. With an epilogue,
    /// y = relu(BN(x) + z) (`relu`, `residual` z); the statistics are BN(x)'s.
    ///
    /// - Parameters:
    ///   - x: The input, in float64, laid out as `shape` and `channelsLast` say.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`.
    ///   - channelsLast: Whether C is the last dimension.
    ///   - training: Batch statistics (and running statistics updated) when true; the running statistics when false.
    ///   - weight: γ, one per channel; nil for 1.
    ///   - bias: β, one per channel; nil for 0.
    ///   - runningMean: The running mean: updated in training, used in inference (0 when nil).
    ///   - runningVariance: The running variance: updated in training, used in inference (1 when nil).
    ///   - momentum: The weight of this batch in the running statistics.
    ///   - epsilon: ε.
    ///   - residual: z, added before the relu; nil for none.
    ///   - relu: Whether y = relu(BN(x) + z).
    public static func forward(
        _ x: [Double], shape: [Int], channelsLast: Bool = false, training: Bool,
        weight: [Double]? = nil, bias: [Double]? = nil,
        runningMean: [Double]? = nil, runningVariance: [Double]? = nil,
        momentum: Double = 0.1, epsilon: Double = 1e-5,
        residual: [Double]? = nil, relu: Bool = false
    ) -> Forward {
        let channels = channels(shape: shape, channelsLast: channelsLast)
        let m = valuesPerChannel(shape: shape, channelsLast: channelsLast)
        var mean: [Double], variance: [Double]
        var newRunningMean = runningMean, newRunningVariance = runningVariance
        if training {
            (mean, variance) = statistics(x, shape: shape, channelsLast: channelsLast)
            if let runningMean, let runningVariance {
                newRunningMean = (0..<channels).map { (1 - momentum) * runningMean[$0] + momentum * mean[$0] }
                newRunningVariance = (0..<channels).map {
                    (1 - momentum) * runningVariance[$0] + momentum * variance[$0] * m / (m - 1)
                }
            }
        } else {
            mean = runningMean!
            variance = runningVariance!
        }
        let invStd = variance.map { 1 / ($0 + epsilon).squareRoot() }
        var y = [Double](repeating: 0, count: x.count)
        forEachIndex(shape: shape, channelsLast: channelsLast) { c, i in
            let normalized = (weight?[c] ?? 1) * (x[i] - mean[c]) * invStd[c] + (bias?[c] ?? 0)
            let sum = normalized + (residual?[i] ?? 0)
            y[i] = relu ? Self.relu(sum) : sum
        }
        return Forward(output: y, mean: mean, invStd: invStd,
                       runningMean: newRunningMean, runningVariance: newRunningVariance)
    }

    /// With x̂ = (x − μ)·r: dβ = Σ dy, dγ = Σ dy·x̂, and
    /// dx = γ·r/m · (m·dy − dβ − x̂·dγ) in training, dx = γ·r·dy in inference.
    /// After a relu epilogue that wrote `forwardOutput` y, dy is first replaced by
    /// g = (y ≤ 0 ? 0 : dy), which is also the residual's gradient.
    ///
    /// - Parameters:
    ///   - x: The input, in float64, laid out as `shape` and `channelsLast` say.
    ///   - outputGradient: dy.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`.
    ///   - channelsLast: Whether C is the last dimension.
    ///   - training: Batch statistics (and running statistics updated) when true; the running statistics when false.
    ///   - mean: μ per channel, as forward returned it.
    ///   - invStd: r per channel, as forward returned it.
    ///   - weight: γ, one per channel; nil for 1.
    ///   - forwardOutput: y of the relu forward: the mask; nil without relu.
    public static func backward(
        _ x: [Double], outputGradient: [Double], shape: [Int], channelsLast: Bool = false, training: Bool,
        mean: [Double], invStd: [Double], weight: [Double]? = nil, forwardOutput: [Double]? = nil
    ) -> Backward {
        let dy = forwardOutput.map { y in zip(outputGradient, y).map { $1 <= 0 ? 0 : $0 } } ?? outputGradient
        let channels = channels(shape: shape, channelsLast: channelsLast)
        let m = valuesPerChannel(shape: shape, channelsLast: channelsLast)
        var dBias = [Double](repeating: 0, count: channels)
        var dWeight = [Double](repeating: 0, count: channels)
        forEachIndex(shape: shape, channelsLast: channelsLast) { c, i in
            dBias[c] += dy[i]
            dWeight[c] += dy[i] * (x[i] - mean[c]) * invStd[c]
        }
        var dx = [Double](repeating: 0, count: x.count)
        forEachIndex(shape: shape, channelsLast: channelsLast) { c, i in
            let gamma = weight?[c] ?? 1
            if training {
                let xHat = (x[i] - mean[c]) * invStd[c]
                dx[i] = gamma * invStd[c] / m * (m * dy[i] - dBias[c] - xHat * dWeight[c])
            } else {
                dx[i] = gamma * invStd[c] * dy[i]
            }
        }
        return Backward(inputGradient: dx, weightGradient: dWeight, biasGradient: dBias, residualGradient: dy)
    }
}
