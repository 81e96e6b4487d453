/// Array conveniences: the same kernels and checks as the buffer functions,
/// returning new arrays. For running statistics use the `BatchNorm` layer.
extension BatchNormalization {
    /// Training-mode forward over an array: y = activation(BN(x) + residual) with the
    /// batch's own μ and biased σ² (the whole batch's over the ranks of `reducer`).
    public static func forwardTraining<Scalar: BatchNormScalar>(
        _ input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        weight: [Scalar]? = nil, bias: [Scalar]? = nil,
        residual: [Scalar]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormForwardResult<Scalar> {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        var mean = [Double](repeating: 0, count: shape.channels)
        var invStd = [Double](repeating: 0, count: shape.channels)
        let output = try makeArray(count: shape.count) { (output) throws(BatchNormError) in
            try input.withUnsafeBufferPointer { input throws(BatchNormError) in
                try withOptional(weight) { weight throws(BatchNormError) in
                    try withOptionalBuffers(bias, residual) { (bias, residual) throws(BatchNormError) in
                        try mean.withUnsafeMutableBufferPointer { mean throws(BatchNormError) in
                            try invStd.withUnsafeMutableBufferPointer { invStd throws(BatchNormError) in
                                try forwardTraining(
                                    input: input, output: output, shape: shape, weight: weight, bias: bias,
                                    residual: residual, activation: activation, epsilon: epsilon,
                                    savedMean: mean, savedInvStd: invStd, executor: executor, reducer: reducer)
                            }
                        }
                    }
                }
            }
        }
        return BatchNormForwardResult(output: output,
                                      statistics: BatchNormStatistics(mode: .training, mean: mean, invStd: invStd))
    }

    /// Inference-mode forward over an array: y = activation(BN(x) + residual) with the
    /// running statistics (local, and collective with a `reducer`, as the buffer
    /// `forwardInference` says).
    public static func forwardInference<Scalar: BatchNormScalar>(
        _ input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        runningMean: [Scalar], runningVariance: [Scalar],
        weight: [Scalar]? = nil, bias: [Scalar]? = nil,
        residual: [Scalar]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> [Scalar] {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        return try makeArray(count: shape.count) { (output) throws(BatchNormError) in
            try input.withUnsafeBufferPointer { input throws(BatchNormError) in
                try runningMean.withUnsafeBufferPointer { runningMean throws(BatchNormError) in
                    try runningVariance.withUnsafeBufferPointer { runningVariance throws(BatchNormError) in
                        try withOptionalBuffers(weight, bias) { (weight, bias) throws(BatchNormError) in
                            try withOptional(residual) { residual throws(BatchNormError) in
                                try forwardInference(
                                    input: input, output: output, shape: shape, runningMean: runningMean,
                                    runningVariance: runningVariance, weight: weight, bias: bias,
                                    residual: residual, activation: activation, epsilon: epsilon,
                                    executor: executor, reducer: reducer)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Backward over arrays, in the mode of `statistics`: returns dx, dγ and dβ, and
    /// dz when `wantsResidualGradient`. After a forward pass with `.relu`, pass it as
    /// `activation` with the output it returned as `forwardOutput` (the mask). With a
    /// `reducer`, dγ and dβ are the whole batch's, as in the buffer `backward`.
    public static func backward<Scalar: BatchNormScalar>(
        outputGradient: [Scalar], input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        statistics: BatchNormStatistics, weight: [Scalar]? = nil,
        activation: BatchNormActivation = .identity, forwardOutput: [Scalar]? = nil,
        wantsResidualGradient: Bool = false,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormGradients<Scalar> {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        var dWeight = [Scalar](repeating: 0, count: shape.channels)
        var dBias = [Scalar](repeating: 0, count: shape.channels)
        var dResidual = [Scalar](repeating: 0, count: wantsResidualGradient ? shape.count : 0)
        let dx = try makeArray(count: shape.count) { (dx) throws(BatchNormError) in
            try input.withUnsafeBufferPointer { input throws(BatchNormError) in
                try outputGradient.withUnsafeBufferPointer { dy throws(BatchNormError) in
                    try statistics.mean.withUnsafeBufferPointer { mean throws(BatchNormError) in
                        try statistics.invStd.withUnsafeBufferPointer { invStd throws(BatchNormError) in
                            try withOptional(weight) { weight throws(BatchNormError) in
                                try dWeight.withUnsafeMutableBufferPointer { dWeight throws(BatchNormError) in
                                    try dBias.withUnsafeMutableBufferPointer { dBias throws(BatchNormError) in
                                        try withOptional(forwardOutput) { y throws(BatchNormError) in
                                            try dResidual.withUnsafeMutableBufferPointer { dz throws(BatchNormError) in
                                                try backward(
                                                    mode: statistics.mode, input: input, outputGradient: dy,
                                                    shape: shape, mean: mean, invStd: invStd, weight: weight,
                                                    inputGradient: dx, weightGradient: dWeight,
                                                    biasGradient: dBias, activation: activation,
                                                    forwardOutput: y,
                                                    residualGradient: wantsResidualGradient ? dz : nil,
                                                    executor: executor, reducer: reducer)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return BatchNormGradients(input: dx, weight: dWeight, bias: dBias,
                                  residual: wantsResidualGradient ? dResidual : nil)
    }
}

/// A new array of `count` elements that `fill` initializes completely, or the
/// error `fill` threw (and no array).
func makeArray<Scalar>(
    count: Int, _ fill: (UnsafeMutableBufferPointer<Scalar>) throws(BatchNormError) -> Void
) throws(BatchNormError) -> [Scalar] {
    var failure: BatchNormError?
    let array = [Scalar](unsafeUninitializedCapacity: count) { buffer, initialized in
        do throws(BatchNormError) {
            try fill(buffer)
            initialized = count
        } catch {
            failure = error
        }
    }
    if let failure { throw failure }
    return array
}

/// Calls `body` with a buffer over `array`, or with nil.
func withOptional<Scalar, R>(
    _ array: [Scalar]?, _ body: (UnsafeBufferPointer<Scalar>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    guard let array else { return try body(nil) }
    return try array.withUnsafeBufferPointer { buffer throws(BatchNormError) in try body(buffer) }
}

/// Calls `body` with buffers over the arrays that are present.
func withOptionalBuffers<Scalar, R>(
    _ a: [Scalar]?, _ b: [Scalar]?,
    _ body: (UnsafeBufferPointer<Scalar>?, UnsafeBufferPointer<Scalar>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try withOptional(a) { a throws(BatchNormError) in
        try withOptional(b) { b throws(BatchNormError) in try body(a, b) }
    }
}
