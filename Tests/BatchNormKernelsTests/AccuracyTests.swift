import BatchNormKernels
import BatchNormReference
import Testing

/// Accuracy where float statistics fail: data far from zero, and gradients
/// against finite differences.
@Suite struct AccuracyTests {
    /// Values near 1e4 with a spread of 1, and near 5 with a spread of 1e-3:
    /// μ rounded to float loses the low bits of x − μ. PyTorch's float32 kernel
    /// is off by 9e-5 (y) and 4e-4 (dγ) here; the bound is 1e-6.
    @Test("shifted data: y, dx and dγ within 1e-6 of float64",
          arguments: [(1e4, 1.0), (5.0, 1e-3)], BatchNormLayout.allCases)
    func shiftedData(data: (center: Double, spread: Double), layout: BatchNormLayout) throws {
        let (center, spread) = data
        let shape = dimensions([8, 3, 33, 31], in: layout), channelsLast = layout == .channelsLast
        let count = shape.reduce(1, *)
        let x: [Float] = randomValues(count, center: center, spread: spread, seed: 99)
        let dy: [Float] = randomValues(count, seed: 100)
        let weight: [Float] = [0.5, 1.5, -2]
        let bias: [Float] = [0.1, 0, -0.3]
        let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast, training: true,
                                              weight: doubles(weight), bias: doubles(bias))
        let wantBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                   channelsLast: channelsLast, training: true, mean: want.mean,
                                                   invStd: want.invStd, weight: doubles(weight))
        for executor in someExecutors {
            let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                                 bias: bias, executor: executor)
            let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                            layout: layout, statistics: forward.statistics,
                                                            weight: weight, executor: executor)
            #expect(normwiseError(forward.output, want.output) <= 1e-6)
            #expect(normwiseError(gradients.input!, wantBack.inputGradient) <= 1e-6)
            #expect(normwiseError(gradients.weight!, wantBack.weightGradient) <= 1e-6)
            #expect(normwiseError(gradients.bias!, wantBack.biasGradient) <= 1e-6)
        }
    }

    /// The statistics sum d = x − p and d² about a pivot p, the first value of
    /// each block of a channel (a plane here, or 128 rows of a matrix), and
    /// take M2 = Σd² − (Σd)²/n; channels last has the same blocks. The worst pivot is an outlier:
    /// here every block starts with 1e3 among values of spread 1, so
    /// (p − μ)² ≈ n·σ² and the subtraction cancels about log10(n) ≈ 3 digits.
    /// The same data moved to 1e6 checks that the pivot removes the offset
    /// (sums about 0 give 5e-9 there).
    /// Bounds: float 1e-6 as everywhere; double 1e-12, from n·ε ≈ 2e-13, and
    /// 1e-11 at the offset 1e6, where rounding the mean alone costs about
    /// ε·1e6/σ ≈ 1e-12 (σ ≈ 90), in the reference as in the kernel.
    @Test("an outlier as each statistics block's first value keeps y accurate",
          arguments: [([4, 3, 40, 40], BatchNormLayout.channelsFirst), ([4, 3, 40, 40], .channelsLast),
                      ([3000, 5], .channelsFirst)],
          [0.0, 1e6])
    func outlierPivot(tensor: ([Int], BatchNormLayout), offset: Double) throws {
        let (nchw, layout) = tensor
        let shape = nchw, count = shape.reduce(1, *), channels = shape[1]
        let blockStride = shape.count == 4 ? shape[2] * shape[3] : 128 * channels
        var x: [Double] = randomValues(count, center: offset, seed: 7)
        if shape.count == 4 {
            for start in stride(from: 0, to: count, by: blockStride) { x[start] = offset + 1e3 }
        } else {
            for start in stride(from: 0, to: count, by: blockStride) {
                for c in 0..<channels { x[start + c] = offset + 1e3 }
            }
        }
        let want = ReferenceBatchNorm.forward(x, shape: shape, training: true)
        let xFloat = x.map { Float($0) }
        let wantFloat = ReferenceBatchNorm.forward(doubles(xFloat), shape: shape, training: true)
        let dimensions = dimensions(nchw, in: layout)
        func nchwOrder<S>(_ values: [S]) -> [S] { arranged(values, nchw: nchw, in: layout, inverse: true) }
        for executor in someExecutors {
            let forward = try BatchNormalization.forwardTraining(
                arranged(x, nchw: nchw, in: layout), shape: dimensions, layout: layout, executor: executor)
            let bound = offset == 0 ? 1e-12 : 1e-11
            #expect(normwiseError(nchwOrder(forward.output), want.output) <= bound)
            #expect(normwiseError(forward.statistics.invStd, want.invStd) <= bound)
            let forwardFloat = try BatchNormalization.forwardTraining(
                arranged(xFloat, nchw: nchw, in: layout), shape: dimensions, layout: layout, executor: executor)
            #expect(normwiseError(nchwOrder(forwardFloat.output), wantFloat.output) <= 1e-6)
        }
    }

    /// The loss L = Σ w·y for fixed random w; backward with dy = w must equal
    /// the central differences (L(p + h) − L(p − h)) / 2h of the forward pass.
    @Test("backward matches central finite differences in double",
          arguments: [[3, 2, 4], [5, 3], [2, 2, 3, 3], [1, 1, 2, 2, 3], [1, 3, 17]], BatchNormLayout.allCases)
    func finiteDifferences(nchw: [Int], layout: BatchNormLayout) throws {
        let shape = dimensions(nchw, in: layout), count = shape.reduce(1, *), channels = nchw[1]
        let x: [Double] = randomValues(count, center: 0.3, spread: 1.5, seed: 41)
        let w: [Double] = randomValues(count, seed: 42)
        let gamma: [Double] = randomValues(channels, center: 1, spread: 0.5, seed: 43)
        let beta: [Double] = randomValues(channels, seed: 44)
        let h = 1e-6

        func loss(_ x: [Double], _ gamma: [Double], _ beta: [Double], training: Bool) throws -> Double {
            let y: [Double]
            if training {
                y = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: gamma,
                                                           bias: beta).output
            } else {
                y = try BatchNormalization.forwardInference(
                    x, shape: shape, layout: layout, runningMean: [Double](repeating: 0.2, count: channels),
                    runningVariance: [Double](repeating: 1.3, count: channels), weight: gamma, bias: beta)
            }
            return zip(y, w).reduce(0) { $0 + $1.0 * $1.1 }
        }
        func difference(_ perturb: (Double) -> ([Double], [Double], [Double]), training: Bool) throws -> Double {
            let (xp, gp, bp) = perturb(h), (xm, gm, bm) = perturb(-h)
            return (try loss(xp, gp, bp, training: training) - loss(xm, gm, bm, training: training)) / (2 * h)
        }

        for training in [true, false] {
            let statistics: BatchNormStatistics
            if training {
                statistics = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: gamma,
                                                                    bias: beta).statistics
            } else {
                statistics = try BatchNormalization.inferenceStatistics(
                    runningMean: [Double](repeating: 0.2, count: channels),
                    runningVariance: [Double](repeating: 1.3, count: channels))
            }
            let gradients = try BatchNormalization.backward(outputGradient: w, input: x, shape: shape,
                                                            layout: layout, statistics: statistics, weight: gamma)
            var numericX = [Double](), numericGamma = [Double](), numericBeta = [Double]()
            for i in 0..<count {
                numericX.append(try difference({ d in var x = x; x[i] += d; return (x, gamma, beta) }, training: training))
            }
            for c in 0..<channels {
                numericGamma.append(try difference({ d in var g = gamma; g[c] += d; return (x, g, beta) }, training: training))
                numericBeta.append(try difference({ d in var b = beta; b[c] += d; return (x, gamma, b) }, training: training))
            }
            // Central differences have truncation error O(h²) and rounding error
            // O(eps/h) ≈ 1e-10 relative to the loss; 1e-7 leaves room for both.
            #expect(normwiseError(gradients.input!, numericX) <= 1e-7, "dx training=\(training)")
            #expect(normwiseError(gradients.weight!, numericGamma) <= 1e-7, "dγ training=\(training)")
            #expect(normwiseError(gradients.bias!, numericBeta) <= 1e-7, "dβ training=\(training)")
        }
    }
}

/// Inference-mode backward that wants only dx computes dx = γ·r·dy with no
/// reduction pass: it never reads x, so an x full of NaN cannot reach dx.
@Test("inference backward for dx alone does not read the input")
func inferenceInputGradientSkipsReduction() throws {
    let shape = [4, 3, 5, 5]
    let count = shape.reduce(1, *)
    let x = [Float](repeating: .nan, count: count)
    let dy: [Float] = randomValues(count, seed: 12)
    let gamma: [Float] = [2, -1, 0.5]
    let statistics = try BatchNormalization.inferenceStatistics(runningMean: [Float](repeating: 0, count: 3),
                                                                runningVariance: [1, 4, 0.25] as [Float])
    var dx = [Float](repeating: 0, count: count)
    try x.withUnsafeBufferPointer { x throws(BatchNormError) in
        try dy.withUnsafeBufferPointer { dyBuffer throws(BatchNormError) in
            try statistics.mean.withUnsafeBufferPointer { mean throws(BatchNormError) in
                try statistics.invStd.withUnsafeBufferPointer { invStd throws(BatchNormError) in
                    try gamma.withUnsafeBufferPointer { gamma throws(BatchNormError) in
                        try dx.withUnsafeMutableBufferPointer { dx throws(BatchNormError) in
                            try BatchNormalization.backward(mode: .inference, input: x, outputGradient: dyBuffer,
                                                            shape: try BatchNormShape(shape), mean: mean,
                                                            invStd: invStd, weight: gamma, inputGradient: dx)
                        }
                    }
                }
            }
        }
    }
    let want = (0..<count).map { i -> Double in
        let c = (i / 25) % 3
        return Double(gamma[c]) * statistics.invStd[c] * Double(dy[i])
    }
    #expect(dx.allSatisfy { $0.isFinite })
    #expect(normwiseError(dx, want) <= 1e-6)
}
