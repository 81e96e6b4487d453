import BatchNormKernels
import BatchNormReference
import Testing

/// Forward and backward against the float64 reference over many shapes, both
/// layouts, both dtypes, every executor and thread counts 1 to 4.
@Suite struct ReferenceAgreementTests {
    static let shapes = edgeShapes + randomShapes(count: 12, seed: 7)

    /// `nchw` is `[N, C, S…]`; in `layout` the tensor has `dimensions(nchw, in: layout)`.
    func check<S: BatchNormScalar>(
        _: S.Type, nchw: [Int], layout: BatchNormLayout, executors: [BatchNormExecutor], seed: UInt64
    ) throws {
        let shape = dimensions(nchw, in: layout), channelsLast = layout == .channelsLast
        let shapeValue = try BatchNormShape(shape, layout: layout)
        let channels = nchw[1]
        let x: [S] = randomValues(shapeValue.count, center: 0.5, spread: 2, seed: seed)
        let dy: [S] = randomValues(shapeValue.count, seed: seed + 1)
        let weight: [S] = randomValues(channels, center: 1, spread: 0.5, seed: seed + 2)
        let bias: [S] = randomValues(channels, seed: seed + 3)
        let runningMean: [S] = randomValues(channels, seed: seed + 4)
        let runningVariance: [S] = randomValues(channels, center: 1.5, spread: 1, seed: seed + 5)

        // The float64 reference, once per shape; the statistics it needs for backward
        // are its own, so kernel and reference errors do not mix.
        let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast, training: true,
                                              weight: doubles(weight), bias: doubles(bias))
        let wantBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                   channelsLast: channelsLast, training: true, mean: want.mean, invStd: want.invStd,
                                                   weight: doubles(weight))
        let wantInference = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast,
                                                       training: false,
                                                       weight: doubles(weight), bias: doubles(bias),
                                                       runningMean: doubles(runningMean),
                                                       runningVariance: doubles(runningVariance))
        let wantInferenceBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                            channelsLast: channelsLast, training: false, mean: wantInference.mean,
                                                            invStd: wantInference.invStd, weight: doubles(weight))
        // dx = γr/m·(m·dy − dβ − x̂·dγ) is a difference of terms of size γ·r·|dy|. When they
        // cancel (m = 2 makes dx vanish but for ε) the rounding of those terms is what remains,
        // so the error is measured against the larger of max|dx| and the terms' size.
        let termScale = (0..<channels).map { abs(Double(weight[$0])) * want.invStd[$0] }.max()!
            * doubles(dy).map(abs).max()!
        let forwardBound = Bound.forward(S.self), backwardBound = Bound.backward(S.self)

        for executor in executors {
            let context: Comment = "\(S.self) \(shapeValue) \(executor)"
            let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                                 bias: bias, executor: executor)
            #expect(normwiseError(forward.output, want.output) <= forwardBound, context)
            // The reference sums m values naively in double (error up to m·2⁻⁵³ relative);
            // the kernels' blocked sums are more accurate, so the bound is the reference's.
            #expect(normwiseError(forward.statistics.mean, want.mean) <= 1e-12, context)
            #expect(normwiseError(forward.statistics.invStd, want.invStd) <= 1e-12, context)

            let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                            layout: layout, statistics: forward.statistics,
                                                            weight: weight, executor: executor)
            #expect(normwiseError(gradients.input!, wantBack.inputGradient, scale: termScale) <= backwardBound,
                    context)
            #expect(normwiseError(gradients.weight!, wantBack.weightGradient) <= backwardBound, context)
            #expect(normwiseError(gradients.bias!, wantBack.biasGradient) <= backwardBound, context)

            let y = try BatchNormalization.forwardInference(x, shape: shape, layout: layout,
                                                            runningMean: runningMean,
                                                            runningVariance: runningVariance, weight: weight,
                                                            bias: bias, executor: executor)
            #expect(normwiseError(y, wantInference.output) <= forwardBound, context)
            let statistics = try BatchNormalization.inferenceStatistics(runningMean: runningMean,
                                                                        runningVariance: runningVariance)
            let inferenceGradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                                     layout: layout, statistics: statistics,
                                                                     weight: weight, executor: executor)
            #expect(normwiseError(inferenceGradients.input!, wantInferenceBack.inputGradient) <= backwardBound,
                    context)
            #expect(normwiseError(inferenceGradients.weight!, wantInferenceBack.weightGradient) <= backwardBound,
                    context)
            #expect(normwiseError(inferenceGradients.bias!, wantInferenceBack.biasGradient) <= backwardBound,
                    context)
        }
    }

    @Test("float matches the float64 reference", arguments: shapes, BatchNormLayout.allCases)
    func float32(nchw: [Int], layout: BatchNormLayout) throws {
        try check(Float.self, nchw: nchw, layout: layout, executors: someExecutors, seed: 11)
    }

    @Test("double matches the float64 reference", arguments: shapes, BatchNormLayout.allCases)
    func float64(nchw: [Int], layout: BatchNormLayout) throws {
        try check(Double.self, nchw: nchw, layout: layout, executors: someExecutors, seed: 23)
    }

    @Test("every executor at 1 to 4 threads matches the reference",
          arguments: [[3, 5, 1, 1], [2, 3, 150, 150], [10_000, 20], [4, 100, 3, 3], [2, 70, 14, 14]],
          BatchNormLayout.allCases)
    func everyExecutor(nchw: [Int], layout: BatchNormLayout) throws {
        try check(Float.self, nchw: nchw, layout: layout, executors: allExecutors, seed: 31)
        try check(Double.self, nchw: nchw, layout: layout, executors: allExecutors, seed: 37)
    }
}
