/// Array conveniences: the same kernels and checks as the buffer functions,
/// returning new arrays. For running statistics use the `BatchNorm` layer.
extension BatchNormalization {
    /// Training-mode forward over an array: y = activation(BN(x) + residual) with the
    /// batch's own μ and biased σ² (the whole batch's over the ranks of `reducer`).
    public static func forwardTraining<Element: BatchNormElement>(
        _ input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        residual: [Element]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormForwardResult<Element> {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        var mean = [Double](repeating: 0, count: shape.channels)
        var invStd = [Double](repeating: 0, count: shape.channels)
        let output = try makeArray(count: shape.count) { (output) throws(BatchNormError) in
            try withOptionalBuffers(input, residual) { (input, residual) throws(BatchNormError) in
                try withOptionalBuffers(weight, bias) { (weight, bias) throws(BatchNormError) in
                        try mean.withUnsafeMutableBufferPointer { mean throws(BatchNormError) in
                            try invStd.withUnsafeMutableBufferPointer { invStd throws(BatchNormError) in
                                try forwardTraining(
                                    input: input!, output: output, shape: shape, weight: weight, bias: bias,
                                    residual: residual, activation: activation, epsilon: epsilon,
                                    savedMean: mean, savedInvStd: invStd, executor: executor, reducer: reducer)
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
    public static func forwardInference<Element: BatchNormElement>(
        _ input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        runningMean: [Element.Parameter], runningVariance: [Element.Parameter],
        weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        residual: [Element]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> [Element] {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        return try makeArray(count: shape.count) { (output) throws(BatchNormError) in
            try withOptionalBuffers(input, residual) { (input, residual) throws(BatchNormError) in
                try withOptionalBuffers(runningMean, runningVariance) { (mean, variance) throws(BatchNormError) in
                    try withOptionalBuffers(weight, bias) { (weight, bias) throws(BatchNormError) in
                        try forwardInference(
                            input: input!, output: output, shape: shape, runningMean: mean!,
                            runningVariance: variance!, weight: weight, bias: bias,
                            residual: residual, activation: activation, epsilon: epsilon,
                            executor: executor, reducer: reducer)
                    }
                }
            }
        }
    }

    /// Backward over arrays, in the mode of `statistics`: returns dx, dγ and dβ, and
    /// dz when `wantsResidualGradient`. After a forward pass with `.relu`, pass it as
    /// `activation` with the output it returned as `forwardOutput` (the mask). With a
    /// `reducer`, dγ and dβ are the whole batch's, as in the buffer `backward`.
    public static func backward<Element: BatchNormElement>(
        outputGradient: [Element], input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        statistics: BatchNormStatistics, weight: [Element.Parameter]? = nil,
        activation: BatchNormActivation = .identity, forwardOutput: [Element]? = nil,
        wantsResidualGradient: Bool = false,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormGradients<Element> {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        var dWeight = [Element.Parameter](repeating: 0, count: shape.channels)
        var dBias = [Element.Parameter](repeating: 0, count: shape.channels)
        var dResidual = [Element](repeating: Element.zero, count: wantsResidualGradient ? shape.count : 0)
        let dx = try makeArray(count: shape.count) { (dx) throws(BatchNormError) in
            try withOptionalBuffers(input, outputGradient) { (input, dy) throws(BatchNormError) in
                try withOptionalBuffers(statistics.mean, statistics.invStd) { (mean, invStd) throws(BatchNormError) in
                    try withOptionalBuffers(weight, forwardOutput) { (weight, y) throws(BatchNormError) in
                        try withMutableBuffers(&dWeight, &dBias) { (dWeight, dBias) throws(BatchNormError) in
                            try dResidual.withUnsafeMutableBufferPointer { dz throws(BatchNormError) in
                                try backward(
                                    mode: statistics.mode, input: input!, outputGradient: dy!, shape: shape,
                                    mean: mean!, invStd: invStd!, weight: weight, inputGradient: dx,
                                    weightGradient: dWeight, biasGradient: dBias, activation: activation,
                                    forwardOutput: y, residualGradient: wantsResidualGradient ? dz : nil,
                                    executor: executor, reducer: reducer)
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

/// Calls `body` with buffers over the arrays that are present (of any two
/// element types: a tensor and a parameter, say).
func withOptionalBuffers<A, B, R>(
    _ a: [A]?, _ b: [B]?,
    _ body: (UnsafeBufferPointer<A>?, UnsafeBufferPointer<B>?) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try withOptional(a) { a throws(BatchNormError) in
        try withOptional(b) { b throws(BatchNormError) in try body(a, b) }
    }
}

/// Calls `body` with mutable buffers over two arrays.
func withMutableBuffers<A, B, R>(
    _ a: inout [A], _ b: inout [B],
    _ body: (UnsafeMutableBufferPointer<A>, UnsafeMutableBufferPointer<B>) throws(BatchNormError) -> R
) throws(BatchNormError) -> R {
    try a.withUnsafeMutableBufferPointer { a throws(BatchNormError) in
        try b.withUnsafeMutableBufferPointer { b throws(BatchNormError) in try body(a, b) }
    }
}
