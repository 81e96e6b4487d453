import BatchNormKernels
import BatchNormReference
import Testing

/// Forward and backward against the float64 reference over many shapes, both
/// layouts, both dtypes, every executor and thread counts 1 to 4.
@Suite struct ReferenceAgreementTests {
    static let shapes = edgeShapes + randomShapes(count: 12, seed: 7)

    /// `nchw` is `[N, C, S…]`; in `layout` the tensor has `dimensions(nchw, in: layout)`.
    /// With an epilogue, y = activation(BN(x) + z) (z when `residual`), and backward also
    /// returns dz; the reference masks with the kernel's own y, since backward is given y
    /// (values within rounding of 0 must not make two masks differ).
    static func check<S: BatchNormScalar>(
        _: S.Type, nchw: [Int], layout: BatchNormLayout, executors: [BatchNormExecutor], seed: UInt64,
        activation: BatchNormActivation = .identity, residual hasResidual: Bool = false
    ) throws {
        let shape = dimensions(nchw, in: layout), channelsLast = layout == .channelsLast
        let shapeValue = try BatchNormShape(shape, layout: layout)
        let channels = nchw[1], relu = activation == .relu
        let x: [S] = randomValues(shapeValue.count, center: 0.5, spread: 2, seed: seed)
        let dy: [S] = randomValues(shapeValue.count, seed: seed + 1)
        let weight: [S] = randomValues(channels, center: 1, spread: 0.5, seed: seed + 2)
        let bias: [S] = randomValues(channels, seed: seed + 3)
        let runningMean: [S] = randomValues(channels, seed: seed + 4)
        let runningVariance: [S] = randomValues(channels, center: 1.5, spread: 1, seed: seed + 5)
        let z: [S]? = hasResidual ? randomValues(shapeValue.count, seed: seed + 6) : nil

        // The float64 reference; the statistics it needs for backward are its own, so
        // kernel and reference errors do not mix.
        let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast, training: true,
                                              weight: doubles(weight), bias: doubles(bias),
                                              residual: z.map(doubles), relu: relu)
        let wantInference = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast,
                                                       training: false, weight: doubles(weight), bias: doubles(bias),
                                                       runningMean: doubles(runningMean),
                                                       runningVariance: doubles(runningVariance),
                                                       residual: z.map(doubles), relu: relu)
        func wantBackward(training: Bool, mean: [Double], invStd: [Double], y: [S]) -> ReferenceBatchNorm.Backward {
            ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                        channelsLast: channelsLast, training: training, mean: mean, invStd: invStd,
                                        weight: doubles(weight), forwardOutput: relu ? doubles(y) : nil)
        }
        // dx = γr/m·(m·dy − dβ − x̂·dγ) is a difference of terms of size γ·r·|dy|. When they
        // cancel (m = 2 makes dx vanish but for ε) the rounding of those terms is what remains,
        // so the error is measured against the larger of max|dx| and the terms' size.
        let termScale = (0..<channels).map { abs(Double(weight[$0])) * want.invStd[$0] }.max()!
            * doubles(dy).map(abs).max()!
        let forwardBound = Bound.forward(S.self), backwardBound = Bound.backward(S.self)
        // Outputs are bitwise the same for every executor (DeterminismTests), so the
        // reference backward, which depends on y through the mask, is computed once.
        var wantBack: ReferenceBatchNorm.Backward?, wantInferenceBack: ReferenceBatchNorm.Backward?

        for executor in executors {
            let context: Comment = "\(S.self) \(shapeValue) \(activation) residual \(hasResidual) \(executor)"
            let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                                 bias: bias, residual: z, activation: activation,
                                                                 executor: executor)
            #expect(normwiseError(forward.output, want.output) <= forwardBound, context)
            // The reference sums m values naively in double (error up to m·2⁻⁵³ relative);
            // the kernels' blocked sums are more accurate, so the bound is the reference's.
            // The statistics are BN(x)'s, whatever the epilogue.
            #expect(normwiseError(forward.statistics.mean, want.mean) <= 1e-12, context)
            #expect(normwiseError(forward.statistics.invStd, want.invStd) <= 1e-12, context)

            let back = wantBack ?? wantBackward(training: true, mean: want.mean, invStd: want.invStd,
                                                y: forward.output)
            wantBack = back
            let gradients = try BatchNormalization.backward(
                outputGradient: dy, input: x, shape: shape, layout: layout, statistics: forward.statistics,
                weight: weight, activation: activation, forwardOutput: relu ? forward.output : nil,
                wantsResidualGradient: hasResidual, executor: executor)
            #expect(normwiseError(gradients.input!, back.inputGradient, scale: termScale) <= backwardBound, context)
            #expect(normwiseError(gradients.weight!, back.weightGradient) <= backwardBound, context)
            #expect(normwiseError(gradients.bias!, back.biasGradient) <= backwardBound, context)
            // dz is dy itself, masked: exact.
            if hasResidual {
                #expect(gradients.residual!.map(bitPattern) == back.residualGradient.map { bitPattern(S($0)) },
                        context)
            }

            let y = try BatchNormalization.forwardInference(x, shape: shape, layout: layout,
                                                            runningMean: runningMean,
                                                            runningVariance: runningVariance, weight: weight,
                                                            bias: bias, residual: z, activation: activation,
                                                            executor: executor)
            #expect(normwiseError(y, wantInference.output) <= forwardBound, context)
            let statistics = try BatchNormalization.inferenceStatistics(runningMean: runningMean,
                                                                        runningVariance: runningVariance)
            let inferenceBack = wantInferenceBack ?? wantBackward(training: false, mean: wantInference.mean,
                                                                  invStd: wantInference.invStd, y: y)
            wantInferenceBack = inferenceBack
            let inferenceGradients = try BatchNormalization.backward(
                outputGradient: dy, input: x, shape: shape, layout: layout, statistics: statistics, weight: weight,
                activation: activation, forwardOutput: relu ? y : nil, wantsResidualGradient: hasResidual,
                executor: executor)
            #expect(normwiseError(inferenceGradients.input!, inferenceBack.inputGradient) <= backwardBound,
                    context)
            #expect(normwiseError(inferenceGradients.weight!, inferenceBack.weightGradient) <= backwardBound,
                    context)
            #expect(normwiseError(inferenceGradients.bias!, inferenceBack.biasGradient) <= backwardBound,
                    context)
            if hasResidual {
                #expect(inferenceGradients.residual!.map(bitPattern)
                            == inferenceBack.residualGradient.map { bitPattern(S($0)) }, context)
            }
        }
    }

    @Test("float matches the float64 reference", arguments: shapes, BatchNormLayout.allCases)
    func float32(nchw: [Int], layout: BatchNormLayout) throws {
        try Self.check(Float.self, nchw: nchw, layout: layout, executors: someExecutors, seed: 11)
    }

    @Test("double matches the float64 reference", arguments: shapes, BatchNormLayout.allCases)
    func float64(nchw: [Int], layout: BatchNormLayout) throws {
        try Self.check(Double.self, nchw: nchw, layout: layout, executors: someExecutors, seed: 23)
    }

    @Test("every executor at 1 to 4 threads matches the reference",
          arguments: [[3, 5, 1, 1], [2, 3, 150, 150], [10_000, 20], [4, 100, 3, 3], [2, 70, 14, 14]],
          BatchNormLayout.allCases)
    func everyExecutor(nchw: [Int], layout: BatchNormLayout) throws {
        try Self.check(Float.self, nchw: nchw, layout: layout, executors: allExecutors, seed: 31)
        try Self.check(Double.self, nchw: nchw, layout: layout, executors: allExecutors, seed: 37)
    }
}
