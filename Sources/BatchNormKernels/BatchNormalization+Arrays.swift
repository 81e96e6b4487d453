/// Array conveniences: the same kernels and checks as the buffer functions.
///
/// Each comes in two forms: one returns new arrays; the other, with an
/// `into:` argument, writes into arrays the caller owns and reuses their
/// storage when its capacity suffices (growing it otherwise). Reusing storage
/// is what makes a call as fast as the buffer functions: a new array of tens
/// of MB is new memory, and its page faults can cost more than the kernel.
/// Copy-on-write holds: an `into:` array that shares its storage with another
/// is copied before it is written, so the other never changes. On error no
/// array changes. For running statistics use the `BatchNorm` layer.
extension BatchNormalization {
    /// Training-mode forward over an array: y = activation(BN(x) + residual) with the
    /// batch's own μ and biased σ² (the whole batch's over the ranks of `reducer`).
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`, rank 2 to 5.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β, one per channel; nil for β = 0.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public static func forwardTraining<Element: BatchNormElement>(
        _ input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        residual: [Element]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormForwardResult<Element> {
        var output = [Element]()
        let statistics = try forwardTraining(
            input, into: &output, shape: shape, layout: layout, weight: weight, bias: bias, residual: residual,
            activation: activation, epsilon: epsilon, executor: executor, reducer: reducer)
        return BatchNormForwardResult(output: output, statistics: statistics)
    }

    /// `forwardTraining` writing y into `output`, made `shape`'s count long;
    /// returns the statistics it normalized with.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - output: Receives y: made `shape`'s count long, its storage reused when its capacity suffices.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`, rank 2 to 5.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β, one per channel; nil for β = 0.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    @discardableResult
    public static func forwardTraining<Element: BatchNormElement>(
        _ input: [Element], into output: inout [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        residual: [Element]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormStatistics {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        var mean = [Double](), invStd = [Double]()
        try overwriting(&output, count: shape.count, &mean, count: shape.channels, &invStd, count: shape.channels) {
            (output, mean, invStd) throws(BatchNormError) in
            try withBuffers(input, residual, weight, bias) { (input, residual, weight, bias) throws(BatchNormError) in
                try forwardTraining(
                    input: input!, output: output, shape: shape, weight: weight, bias: bias, residual: residual,
                    activation: activation, epsilon: epsilon, savedMean: mean, savedInvStd: invStd,
                    executor: executor, reducer: reducer)
            }
        }
        return BatchNormStatistics(mode: .training, mean: mean, invStd: invStd)
    }

    /// Inference-mode forward over an array: y = activation(BN(x) + residual) with the
    /// running statistics (local, and collective with a `reducer`, as the buffer
    /// `forwardInference` says).
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`, rank 2 to 5.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - runningMean: The running mean, one per channel.
    ///   - runningVariance: The running unbiased variance, one per channel.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β, one per channel; nil for β = 0.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public static func forwardInference<Element: BatchNormElement>(
        _ input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        runningMean: [Element.Parameter], runningVariance: [Element.Parameter],
        weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        residual: [Element]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> [Element] {
        var output = [Element]()
        try forwardInference(
            input, into: &output, shape: shape, layout: layout, runningMean: runningMean,
            runningVariance: runningVariance, weight: weight, bias: bias, residual: residual,
            activation: activation, epsilon: epsilon, executor: executor, reducer: reducer)
        return output
    }

    /// `forwardInference` writing y into `output`, made `shape`'s count long.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - output: Receives y: made `shape`'s count long, its storage reused when its capacity suffices.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`, rank 2 to 5.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - runningMean: The running mean, one per channel.
    ///   - runningVariance: The running unbiased variance, one per channel.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β, one per channel; nil for β = 0.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public static func forwardInference<Element: BatchNormElement>(
        _ input: [Element], into output: inout [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        runningMean: [Element.Parameter], runningVariance: [Element.Parameter],
        weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        residual: [Element]? = nil, activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        try output.overwrite(count: shape.count) { (output) throws(BatchNormError) in
            try withBuffers(input, residual, runningMean, runningVariance, weight, bias) {
                (input, residual, mean, variance, weight, bias) throws(BatchNormError) in
                try forwardInference(
                    input: input!, output: output, shape: shape, runningMean: mean!, runningVariance: variance!,
                    weight: weight, bias: bias, residual: residual, activation: activation, epsilon: epsilon,
                    executor: executor, reducer: reducer)
            }
        }
    }

    /// Backward over arrays, in the mode of `statistics`: returns dx, dγ and dβ, and
    /// dz when `wantsResidualGradient`. After a forward pass with `.relu`, pass it as
    /// `activation` with the output it returned as `forwardOutput` (the mask). With a
    /// `reducer`, dx is this rank's and dγ, dβ this rank's part (or the whole
    /// batch's, with `parameterGradients: .wholeBatch`), as in the buffer `backward`.
    ///
    /// - Parameters:
    ///   - outputGradient: dy, the gradient of the loss with respect to y, shaped like the input.
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`, rank 2 to 5.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - statistics: The statistics the forward call returned; their mode decides whether dx flows through μ and σ.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β of the forward call, one per channel, for the relu mask recomputed from x; nil for β = 0.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - forwardOutput: The output y of the forward call, whose mask it gives with `.relu`: required after a forward call with a residual; without it, the mask is recomputed from x, `weight` and `bias` (the same bits, one tensor fewer to read). nil otherwise.
    ///   - wantsResidualGradient: Whether to return dz, the gradient of the residual.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    ///   - parameterGradients: Synchronized backward: this rank's dγ and dβ (the default), or the whole batch's.
    public static func backward<Element: BatchNormElement>(
        outputGradient: [Element], input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        statistics: BatchNormStatistics, weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        activation: BatchNormActivation = .identity, forwardOutput: [Element]? = nil,
        wantsResidualGradient: Bool = false,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil,
        parameterGradients: BatchNormParameterGradients = .perRank
    ) throws(BatchNormError) -> BatchNormGradients<Element> {
        var gradients = BatchNormGradients<Element>()
        try backward(
            outputGradient: outputGradient, input: input, shape: shape, layout: layout, statistics: statistics,
            weight: weight, bias: bias, activation: activation, forwardOutput: forwardOutput, into: &gradients,
            wantsResidualGradient: wantsResidualGradient, executor: executor, reducer: reducer,
            parameterGradients: parameterGradients)
        return gradients
    }

    /// `backward` writing into `gradients`: dx, dγ and dβ into its `input`,
    /// `weight` and `bias`, and dz into its `residual` when
    /// `wantsResidualGradient` (else `residual` becomes nil). Each array
    /// present is reused as the `into:` rule says; a nil one is made.
    ///
    /// - Parameters:
    ///   - outputGradient: dy, the gradient of the loss with respect to y, shaped like the input.
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, C, …]` or, channels last, `[N, …, C]`, rank 2 to 5.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - statistics: The statistics the forward call returned; their mode decides whether dx flows through μ and σ.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β of the forward call, one per channel, for the relu mask recomputed from x; nil for β = 0.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - forwardOutput: The output y of the forward call, whose mask it gives with `.relu`: required after a forward call with a residual; without it, the mask is recomputed from x, `weight` and `bias` (the same bits, one tensor fewer to read). nil otherwise.
    ///   - gradients: Holds the gradients afterwards; the storage of the arrays it holds is reused.
    ///   - wantsResidualGradient: Whether to return dz, the gradient of the residual.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    ///   - parameterGradients: Synchronized backward: this rank's dγ and dβ (the default), or the whole batch's.
    public static func backward<Element: BatchNormElement>(
        outputGradient: [Element], input: [Element], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        statistics: BatchNormStatistics, weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
        activation: BatchNormActivation = .identity, forwardOutput: [Element]? = nil,
        into gradients: inout BatchNormGradients<Element>, wantsResidualGradient: Bool = false,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil,
        parameterGradients: BatchNormParameterGradients = .perRank
    ) throws(BatchNormError) {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try BatchNormShape(shape, layout: layout)
        }
        // The caller's arrays, moved out of `gradients` (no second reference,
        // so no copy), and put back as they were if the call fails.
        let had = (gradients.input != nil, gradients.weight != nil, gradients.bias != nil, gradients.residual != nil)
        var dx = gradients.input.take() ?? [], dWeight = gradients.weight.take() ?? []
        var dBias = gradients.bias.take() ?? []
        var dResidual = wantsResidualGradient ? gradients.residual.take() ?? [] : []
        do throws(BatchNormError) {
            try overwriting(&dx, count: shape.count, &dWeight, count: shape.channels, &dBias, count: shape.channels,
                            &dResidual, count: wantsResidualGradient ? shape.count : 0) {
                (dx, dWeight, dBias, dz) throws(BatchNormError) in
                try withBuffers(input, outputGradient, statistics.mean, statistics.invStd, weight, bias, forwardOutput) {
                    (input, dy, mean, invStd, weight, bias, y) throws(BatchNormError) in
                    try backward(
                        mode: statistics.mode, input: input!, outputGradient: dy!, shape: shape, mean: mean!,
                        invStd: invStd!, weight: weight, bias: bias, inputGradient: dx, weightGradient: dWeight,
                        biasGradient: dBias, activation: activation, forwardOutput: y,
                        residualGradient: wantsResidualGradient ? dz : nil, executor: executor, reducer: reducer,
                        parameterGradients: parameterGradients)
                }
            }
        } catch {
            (gradients.input, gradients.weight, gradients.bias) = (had.0 ? dx : nil, had.1 ? dWeight : nil,
                                                                   had.2 ? dBias : nil)
            if wantsResidualGradient { gradients.residual = had.3 ? dResidual : nil }
            throw error
        }
        gradients = BatchNormGradients(input: dx, weight: dWeight, bias: dBias,
                                       residual: wantsResidualGradient ? dResidual : nil)
    }
}

