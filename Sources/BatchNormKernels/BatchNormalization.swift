internal import CBatchNorm

/// Whether statistics come from the batch (training) or from the running
/// statistics (inference).
public enum BatchNormMode: String, Hashable, Sendable, Codable {
    /// Normalize with the batch's own mean and biased variance; backward
    /// propagates through them.
    case training
    /// Normalize with the running mean and variance; backward treats them as constants.
    case inference
}

/// What follows batch normalization in the same pass: y = activation(BN(x) + z),
/// with z the optional residual. The statistics (saved and running) are
/// BN(x)'s whatever the activation.
public enum BatchNormActivation: String, Hashable, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// y = BN(x) (+ z).
    case identity
    /// y = max(0, BN(x) (+ z)): v where v > 0, +0 where v ≤ 0 (−0 included), NaN
    /// where v is NaN. Backward masks the gradient with the forward output as
    /// PyTorch's `threshold_backward` does: g = dy unless y ≤ 0 (so where y is
    /// NaN the gradient passes), +0 there.
    case relu

    /// The name as the benchmark and error messages print it.
    public var description: String {
        switch self {
        case .identity: "identity"
        case .relu: "relu"
        }
    }

    var core: cbn_activation { self == .relu ? CBN_ACTIVATION_RELU : CBN_ACTIVATION_IDENTITY }
}

/// Which dγ and dβ a synchronized backward pass returns on each rank.
public enum BatchNormParameterGradients: String, Hashable, Sendable, Codable {
    /// This rank's contribution: dγ = Σ dy · x̂ and dβ = Σ dy over its own
    /// slice, with the whole batch's μ and σ. Summed over the ranks they give
    /// the whole batch's; a data-parallel optimizer that sums or averages
    /// every parameter's gradient across the ranks (as PyTorch's DDP does)
    /// then treats γ and β as it treats every other parameter. The default,
    /// as PyTorch's `SyncBatchNorm`.
    case perRank
    /// The whole batch's dγ and dβ, bitwise the same on every rank (already
    /// summed: do not sum or average them across ranks again).
    case wholeBatch
}

/// The per-channel statistics a forward pass normalized with, as backward needs them.
public struct BatchNormStatistics: Hashable, Sendable {
    /// `.training`: batch statistics; `.inference`: taken from running statistics.
    public var mode: BatchNormMode
    /// μ_c, in double whatever the tensor's scalar type.
    public var mean: [Double]
    /// r_c = 1 / sqrt(σ²_c + ε), in double.
    public var invStd: [Double]

    /// Statistics with these values, e.g. to run `backward` from statistics saved elsewhere.
    ///
    /// - Parameters:
    ///   - mode: `.training` for batch statistics, `.inference` for running ones.
    ///   - mean: μ per channel.
    ///   - invStd: r = 1 / sqrt(σ² + ε) per channel.
    public init(mode: BatchNormMode, mean: [Double], invStd: [Double]) {
        self.mode = mode
        self.mean = mean
        self.invStd = invStd
    }
}

/// The output of a forward pass with the statistics it used.
public struct BatchNormForwardResult<Element: BatchNormElement>: Sendable {
    /// y, shaped like the input.
    public var output: [Element]
    /// μ and r per channel, for `backward`.
    public var statistics: BatchNormStatistics
}

/// The gradients a backward pass returns; nil where not asked for.
public struct BatchNormGradients<Element: BatchNormElement>: Sendable {
    /// dL/dx, shaped like the input.
    public var input: [Element]?
    /// dL/dγ = Σ dy · x̂ per channel.
    public var weight: [Element.Parameter]?
    /// dL/dβ = Σ dy per channel.
    public var bias: [Element.Parameter]?
    /// dL/dz for the residual of an epilogue y = activation(BN(x) + z): the (masked) dy.
    public var residual: [Element]?

    /// Gradients with these arrays: none by default, or arrays whose storage
    /// a `backward(…, into:)` call reuses.
    ///
    /// - Parameters:
    ///   - input: An array for dx, whose storage a `backward(…, into:)` call reuses.
    ///   - weight: An array for dγ, reused the same way.
    ///   - bias: An array for dβ, reused the same way.
    ///   - residual: An array for dz, reused the same way.
    public init(input: [Element]? = nil, weight: [Element.Parameter]? = nil, bias: [Element.Parameter]? = nil,
                residual: [Element]? = nil) {
        (self.input, self.weight, self.bias, self.residual) = (input, weight, bias, residual)
    }
}

/// Batch-normalization kernels over caller-owned memory, channels first
/// (NCHW) or channels last (NHWC) as the shape's `layout` says.
///
/// With x̂ = (x − μ_c) · r_c and r_c = 1 / sqrt(σ²_c + ε), the forward pass
/// computes y = γ_c · x̂ + β_c (γ = 1, β = 0 when `weight`/`bias` are nil).
/// Every function checks all of its arguments before it writes anything and
/// throws `BatchNormError` on the first mistake, leaving every buffer as it was.
///
/// Aliasing: `output` may be `input` itself (in place); `inputGradient` may be
/// `outputGradient` or `input` itself. Any other overlap between an output and
/// another buffer throws `overlappingBuffers`.
public enum BatchNormalization {
    // MARK: Forward, training

    /// Normalizes `input` with its own per-channel statistics:
    /// μ_c = (1/m) Σ x, σ²_c = (1/m) Σ (x − μ_c)² (biased), over the m = N·spatial values of channel c.
    ///
    /// If `runningMean` and `runningVariance` are given (both or neither), they are updated as
    /// running ← (1 − momentum) · running + momentum · batch, with the unbiased variance
    /// σ²_c · m / (m − 1). `savedMean` and `savedInvStd` receive μ_c and r_c when given.
    /// Requires m ≥ 2. Where σ² + ε = 0, r = +∞ and x̂ is taken as 0 (y = β).
    ///
    /// Epilogue: y = activation(BN(x) + residual), the residual z (shaped like the
    /// input) when given. `output` may be `input` or `residual` itself.
    ///
    /// With a `reducer`, batch norm is synchronized across its ranks: every rank calls
    /// this collectively with its own slice of the batch, and μ, σ² and m above are the
    /// whole batch's (the ranks' slices concatenated along N), bitwise the same on every
    /// rank; m ≥ 2 is required of the whole batch only. If any rank's arguments fail
    /// their checks, or the ranks disagree on the shape's channels, spatial extent or
    /// layout, the scalar type or ε, every rank throws and none writes anything.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in its layout.
    ///   - output: Receives y, `shape`'s count of values; may be `input` or `residual` itself.
    ///   - shape: The tensor's dimensions and layout.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β, one per channel; nil for β = 0.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - runningMean: Updated in place when given: (1 − momentum) · old + momentum · μ; with `runningVariance`.
    ///   - runningVariance: Updated in place when given, with the unbiased variance σ² · m / (m − 1).
    ///   - momentum: The weight of this batch in the running statistics, in [0, 1].
    ///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
    ///   - savedMean: Receives μ per channel, for `backward`, when given.
    ///   - savedInvStd: Receives r = 1 / sqrt(σ² + ε) per channel, for `backward`, when given.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public static func forwardTraining<Element: BatchNormElement>(
        input: UnsafeBufferPointer<Element>,
        output: UnsafeMutableBufferPointer<Element>,
        shape: BatchNormShape,
        weight: UnsafeBufferPointer<Element.Parameter>? = nil,
        bias: UnsafeBufferPointer<Element.Parameter>? = nil,
        residual: UnsafeBufferPointer<Element>? = nil,
        activation: BatchNormActivation = .identity,
        runningMean: UnsafeMutableBufferPointer<Element.Parameter>? = nil,
        runningVariance: UnsafeMutableBufferPointer<Element.Parameter>? = nil,
        momentum: Double = 0.1,
        epsilon: Double = 1e-5,
        savedMean: UnsafeMutableBufferPointer<Double>? = nil,
        savedInvStd: UnsafeMutableBufferPointer<Double>? = nil,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) {
        let check = { () throws(BatchNormError) in
            try executor.validate()
            try Check.epsilon(epsilon)
            try Check.momentum(momentum)
            try Check.together(("runningMean", runningMean != nil), ("runningVariance", runningVariance != nil))
            try Check.buffers(
                [.init("input", input, .tensor), .init("output", output, .tensor),
                 .init("weight", weight, .perChannel), .init("bias", bias, .perChannel),
                 .init("runningMean", runningMean, .perChannel),
                 .init("runningVariance", runningVariance, .perChannel),
                 .init("savedMean", savedMean, .perChannel), .init("savedInvStd", savedInvStd, .perChannel),
                 .init("residual", residual, .tensor)],
                of: shape, exactAliases: [["output", "input"], ["output", "residual"]])
        }
        var run = ForwardCall(
            training: true, input: input, output: output, shape: shape, weight: weight, bias: bias,
            residual: residual, activation: activation,
            runningMean: runningMean?.rawBase, runningVariance: runningVariance?.rawBase,
            savedMean: savedMean?.baseAddress, savedInvStd: savedInvStd?.baseAddress,
            epsilon: epsilon, momentum: momentum, executor: executor)
        guard let reducer else {
            try check()
            try Check.trainable(shape)
            return try run.execute()
        }

        // Synchronized: agree, this slice's moments, the whole batch's, then y.
        try Synchronization.agree(
            reducer, header: .init(pass: .forward, mode: .training, scalar: Element.coreType, shape: shape,
                                   epsilon: epsilon, activation: activation, hasResidual: residual != nil,
                                   affine: (weight == nil ? 0 : 1) + (bias == nil ? 0 : 2),
                                   momentum: runningMean == nil ? -1 : momentum),
            check: check)
        // The job that normalizes with the whole batch's moments is made before
        // the exchange, so that its allocations fail (if they do) where every
        // rank learns of it; the job reads the moments when it runs.
        let whole = ChannelPartials(channels: shape.channels)
        var moments = [Double](repeating: 0, count: 3 * shape.channels)
        var normalize: CoreJob?
        var failure: BatchNormError?   // this rank's, which the combine tells the others
        do throws(BatchNormError) {
            run.moments = UnsafePointer(whole.values.baseAddress)
            normalize = try CoreJob(forward: run.desc)
            try moments.withUnsafeMutableBufferPointer { moments throws(BatchNormError) in
                var partial = run
                partial.moments = nil
                partial.momentsOut = moments.baseAddress
                try partial.execute()
            }
        } catch {
            failure = error
        }
        try whole.receive(Synchronization.combine(reducer, moments, failure: failure, merge: cbn_merge_moments),
                          least: 2, shape: shape)
        try normalize?.run(on: executor)
    }

    // MARK: Forward, inference

    /// Normalizes `input` with the running statistics:
    /// y = γ_c · (x − runningMean_c) / sqrt(runningVariance_c + ε) + β_c, then the
    /// epilogue y = activation(y + residual) as in `forwardTraining`.
    ///
    /// With a `reducer` the call stays local (running statistics need no exchange)
    /// but is collective: the ranks check that they agree, so that a rank in
    /// inference mode beside one in training mode throws instead of leaving the
    /// other waiting.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in its layout.
    ///   - output: Receives y, `shape`'s count of values; may be `input` or `residual` itself.
    ///   - shape: The tensor's dimensions and layout.
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
        input: UnsafeBufferPointer<Element>,
        output: UnsafeMutableBufferPointer<Element>,
        shape: BatchNormShape,
        runningMean: UnsafeBufferPointer<Element.Parameter>,
        runningVariance: UnsafeBufferPointer<Element.Parameter>,
        weight: UnsafeBufferPointer<Element.Parameter>? = nil,
        bias: UnsafeBufferPointer<Element.Parameter>? = nil,
        residual: UnsafeBufferPointer<Element>? = nil,
        activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) {
        let check = { () throws(BatchNormError) in
            try executor.validate()
            try Check.epsilon(epsilon)
            try Check.buffers(
                [.init("input", input, .tensor), .init("output", output, .tensor),
                 .init("weight", weight, .perChannel), .init("bias", bias, .perChannel),
                 .init("runningMean", runningMean, .perChannel),
                 .init("runningVariance", runningVariance, .perChannel), .init("residual", residual, .tensor)],
                of: shape, exactAliases: [["output", "input"], ["output", "residual"]])
        }
        let run = ForwardCall(
            training: false, input: input, output: output, shape: shape, weight: weight, bias: bias,
            residual: residual, activation: activation,
            runningMean: UnsafeMutableRawPointer(mutating: runningMean.rawBase),
            runningVariance: UnsafeMutableRawPointer(mutating: runningVariance.rawBase),
            savedMean: nil, savedInvStd: nil, epsilon: epsilon, momentum: 0, executor: executor)
        guard let reducer else {
            try check()
            return try run.execute()
        }
        // The job is made among this rank's checks, so that a failure to
        // allocate it reaches every rank in the agreement.
        var job: CoreJob?
        try Synchronization.agree(
            reducer, header: .init(pass: .forward, mode: .inference, scalar: Element.coreType, shape: shape,
                                   epsilon: epsilon, activation: activation, hasResidual: residual != nil,
                                   affine: (weight == nil ? 0 : 1) + (bias == nil ? 0 : 2)),
            check: { () throws(BatchNormError) in
                try check()
                job = try CoreJob(forward: run.desc)
            })
        try job?.run(on: executor)
    }

    // MARK: Backward

    /// Back-propagates `outputGradient` (dy). With x̂ = (x − mean_c) · invStd_c:
    /// dβ_c = Σ dy, dγ_c = Σ dy · x̂, and
    /// - `.training` (through μ and σ): dx = γ_c · invStd_c / m · (m · dy − dβ_c − x̂ · dγ_c);
    /// - `.inference` (statistics constant): dx = γ_c · invStd_c · dy, with no reduction pass
    ///   when neither `weightGradient` nor `biasGradient` is asked for.
    ///
    /// `mean` and `invStd` are what the forward pass used (`savedMean`/`savedInvStd` in
    /// training, `inferenceStatistics` in inference). Each gradient is computed only if its
    /// buffer is given.
    ///
    /// After a forward pass with an epilogue, pass its `activation`: with `.relu`,
    /// dy is first masked, g = dy unless y ≤ 0 (+0 there; where y is NaN, g = dy);
    /// g then takes dy's place above. y is `forwardOutput`, the output the forward
    /// pass wrote, or, without it, recomputed from x, `weight`, `bias`, `mean` and
    /// `invStd` as the forward pass computed it (bit for bit the same mask, and one
    /// tensor fewer to read). Recomputing needs a forward pass without residual
    /// whose γ and β these are: pass `forwardOutput` after a forward pass that
    /// added a residual. `residualGradient` receives dL/dz = g. It may be
    /// `outputGradient` itself, as `inputGradient` may (but not both).
    ///
    /// With a `reducer` (after a forward pass synchronized by it, whose statistics
    /// `mean` and `invStd` are), the sums Σg and Σg·x̂ and m in dx are the whole
    /// batch's: every rank gets its own dx. dγ and dβ are this rank's part (the
    /// sums over its slice; see ``BatchNormParameterGradients``) or, with
    /// `parameterGradients: .wholeBatch`, the whole batch's, bitwise the same on
    /// every rank. Errors are collective as in `forwardTraining`.
    ///
    /// - Parameters:
    ///   - mode: How the forward call normalized: `.training` (batch statistics: dx flows through μ and σ) or `.inference` (constants).
    ///   - input: x, `shape`'s count of values in its layout.
    ///   - outputGradient: dy, the gradient of the loss with respect to y, shaped like the input.
    ///   - shape: The tensor's dimensions and layout.
    ///   - mean: μ per channel, as the forward call saved it (or the running mean in inference).
    ///   - invStd: r = 1 / sqrt(σ² + ε) per channel, as the forward call saved it.
    ///   - weight: γ, one per channel; nil for γ = 1.
    ///   - bias: β of the forward pass, one per channel, for the relu mask recomputed from x; nil for β = 0.
    ///   - inputGradient: Receives dx when given; may be `outputGradient` or `input` itself.
    ///   - weightGradient: Receives dγ = Σ dy · x̂ per channel when given.
    ///   - biasGradient: Receives dβ = Σ dy per channel when given.
    ///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
    ///   - forwardOutput: The output y of the forward call, whose mask it gives with `.relu`: required after a forward pass with a residual; without it, the mask is recomputed from x. nil otherwise.
    ///   - residualGradient: Receives dz, the masked dy, when given (which needs `forwardOutput` with `.relu`); may be `outputGradient` itself.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    ///   - parameterGradients: Synchronized backward: this rank's dγ and dβ (the default), or the whole batch's.
    public static func backward<Element: BatchNormElement>(
        mode: BatchNormMode,
        input: UnsafeBufferPointer<Element>,
        outputGradient: UnsafeBufferPointer<Element>,
        shape: BatchNormShape,
        mean: UnsafeBufferPointer<Double>,
        invStd: UnsafeBufferPointer<Double>,
        weight: UnsafeBufferPointer<Element.Parameter>? = nil,
        bias: UnsafeBufferPointer<Element.Parameter>? = nil,
        inputGradient: UnsafeMutableBufferPointer<Element>? = nil,
        weightGradient: UnsafeMutableBufferPointer<Element.Parameter>? = nil,
        biasGradient: UnsafeMutableBufferPointer<Element.Parameter>? = nil,
        activation: BatchNormActivation = .identity,
        forwardOutput: UnsafeBufferPointer<Element>? = nil,
        residualGradient: UnsafeMutableBufferPointer<Element>? = nil,
        executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil,
        parameterGradients: BatchNormParameterGradients = .perRank
    ) throws(BatchNormError) {
        let check = { () throws(BatchNormError) in
            try executor.validate()
            if activation == .relu && forwardOutput == nil && residualGradient != nil {
                throw BatchNormError(.missingArgument, argument: "forwardOutput",
                                     expected: "the forward pass's output, for the relu mask of a forward pass with a residual",
                                     actual: "nil")
            }
            try Check.buffers(
                [.init("input", input, .tensor), .init("outputGradient", outputGradient, .tensor),
                 .init("mean", mean, .perChannel), .init("invStd", invStd, .perChannel),
                 .init("weight", weight, .perChannel), .init("bias", bias, .perChannel),
                 .init("inputGradient", inputGradient, .tensor),
                 .init("weightGradient", weightGradient, .perChannel),
                 .init("biasGradient", biasGradient, .perChannel),
                 .init("forwardOutput", forwardOutput, .tensor),
                 .init("residualGradient", residualGradient, .tensor)],
                of: shape,
                exactAliases: [["inputGradient", "outputGradient"], ["inputGradient", "input"],
                               ["residualGradient", "outputGradient"]])
        }

        var desc = cbn_backward_desc()
        desc.dtype = Element.coreType
        desc.shape = shape.core
        desc.training = mode == .training ? 1 : 0
        desc.x = input.rawBase
        desc.dy = outputGradient.rawBase
        desc.weight = weight?.rawBase
        desc.mean = mean.baseAddress
        desc.invstd = invStd.baseAddress
        desc.activation = activation.core
        desc.y = forwardOutput?.rawBase
        desc.bias = bias?.rawBase
        var partial = desc
        desc.dx = inputGradient?.rawBase
        desc.dweight = weightGradient?.rawBase
        desc.dbias = biasGradient?.rawBase
        desc.dresidual = residualGradient?.rawBase
        guard let reducer else {
            try check()
            return try runBackward(desc, executor: executor)
        }

        // Synchronized: agree, this slice's sums, the whole batch's, then the gradients.
        // In inference mode dx takes no sums; this rank's dγ and dβ are then the
        // local call's, whose job is made among the checks (a failure to allocate
        // it reaches every rank in the agreement).
        let local = mode == .inference && parameterGradients == .perRank
        var job: CoreJob?
        try Synchronization.agree(
            reducer, header: .init(pass: .backward, mode: mode, scalar: Element.coreType, shape: shape, epsilon: 0,
                                   parameterGradients: parameterGradients, activation: activation,
                                   hasResidual: residualGradient != nil, affine: weight == nil ? 0 : 1,
                                   statistics: Synchronization.Header.hash(mean, invStd)),
            check: { () throws(BatchNormError) in
                try check()
                if local { job = try CoreJob(backward: desc) }
            })
        if local {
            try job?.run(on: executor)
            return
        }

        // The jobs that use the sums are made before the exchange, as in
        // `forwardTraining`: the whole batch's gradients, and this rank's dγ
        // and dβ from its own sums (the same finalize).
        let whole = ChannelPartials(channels: shape.channels)
        let sums = ChannelPartials(channels: shape.channels)
        let perRank = parameterGradients == .perRank && (desc.dweight != nil || desc.dbias != nil)
        var parameters = desc
        (parameters.dx, parameters.dresidual, parameters.sums) = (nil, nil, UnsafePointer(sums.values.baseAddress))
        if perRank { (desc.dweight, desc.dbias) = (nil, nil) }
        desc.sums = UnsafePointer(whole.values.baseAddress)
        partial.sums_out = sums.values.baseAddress
        var gradients: CoreJob?, parameterJob: CoreJob?
        var failure: BatchNormError?   // this rank's, which the combine tells the others
        do throws(BatchNormError) {
            if desc.dx != nil || desc.dresidual != nil || desc.dweight != nil || desc.dbias != nil {
                gradients = try CoreJob(backward: desc)
            }
            if perRank { parameterJob = try CoreJob(backward: parameters) }
            try CoreJob(backward: partial).run(on: executor)
        } catch {
            failure = error
        }
        try whole.receive(Synchronization.combine(reducer, Array(sums.values), failure: failure,
                                                  merge: cbn_merge_sums),
                          least: 1, shape: shape)
        try gradients?.run(on: executor)
        try parameterJob?.run(on: executor)
    }

    private static func runBackward(_ desc: cbn_backward_desc, executor: BatchNormExecutor) throws(BatchNormError) {
        try CoreJob(backward: desc).run(on: executor)
    }

    /// The statistics inference mode normalizes with: mean_c = runningMean_c and
    /// invStd_c = 1 / sqrt(runningVariance_c + ε), computed exactly as the kernels do
    /// (running statistics are `Float` for `Float` and the half formats, `Double` for `Double`).
    ///
    /// - Parameters:
    ///   - runningMean: The running mean, one per channel.
    ///   - runningVariance: The running variance, as many values.
    ///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
    public static func inferenceStatistics<Scalar: BatchNormScalar>(
        runningMean: [Scalar], runningVariance: [Scalar], epsilon: Double = 1e-5
    ) throws(BatchNormError) -> BatchNormStatistics {
        try Check.epsilon(epsilon)
        try Check.count(runningVariance.count, equals: runningMean.count, argument: "runningVariance")
        let channels = runningMean.count
        var mean = [Double](repeating: 0, count: channels)
        var invStd = [Double](repeating: 0, count: channels)
        runningMean.withUnsafeBytes { meanBytes in
            runningVariance.withUnsafeBytes { varianceBytes in
                cbn_inference_statistics(Scalar.coreType, Int64(channels), meanBytes.baseAddress,
                                         varianceBytes.baseAddress, epsilon, &mean, &invStd)
            }
        }
        return BatchNormStatistics(mode: .inference, mean: mean, invStd: invStd)
    }

}

/// A forward call of the core, from checked arguments: its descriptor and executor.
private struct ForwardCall {
    var desc = cbn_forward_desc()
    let executor: BatchNormExecutor

    init<Element: BatchNormElement>(
        training: Bool, input: UnsafeBufferPointer<Element>, output: UnsafeMutableBufferPointer<Element>,
        shape: BatchNormShape, weight: UnsafeBufferPointer<Element.Parameter>?,
        bias: UnsafeBufferPointer<Element.Parameter>?,
        residual: UnsafeBufferPointer<Element>?, activation: BatchNormActivation,
        runningMean: UnsafeMutableRawPointer?, runningVariance: UnsafeMutableRawPointer?,
        savedMean: UnsafeMutablePointer<Double>?, savedInvStd: UnsafeMutablePointer<Double>?,
        epsilon: Double, momentum: Double, executor: BatchNormExecutor
    ) {
        desc.dtype = Element.coreType
        desc.shape = shape.core
        desc.training = training ? 1 : 0
        desc.x = input.rawBase
        desc.y = output.rawBase
        desc.weight = weight?.rawBase
        desc.bias = bias?.rawBase
        desc.running_mean = runningMean
        desc.running_var = runningVariance
        desc.saved_mean = savedMean
        desc.saved_invstd = savedInvStd
        desc.eps = epsilon
        desc.momentum = momentum
        desc.residual = residual?.rawBase
        desc.activation = activation.core
        self.executor = executor
    }

    /// Synchronized batch norm, first call: this slice's moments, and nothing else written.
    var momentsOut: UnsafeMutablePointer<Double>? {
        get { desc.moments_out }
        set { desc.moments_out = newValue }
    }

    /// Synchronized batch norm, second call: the whole batch's moments.
    var moments: UnsafePointer<Double>? {
        get { desc.moments }
        set { desc.moments = newValue }
    }

    func execute() throws(BatchNormError) {
        try CoreJob(forward: desc).run(on: executor)
    }
}

/// A job of the C core: created, with every allocation it needs, then run.
/// A job given the whole batch's moments or sums makes no allocation when it
/// runs, so a synchronized call creates it before its exchange and has nothing
/// left to fail after it.
struct CoreJob: ~Copyable {
    private let job: OpaquePointer

    init(forward desc: cbn_forward_desc) throws(BatchNormError) {
        var desc = desc
        var job: OpaquePointer?
        try Check.status(cbn_job_create_forward(&desc, &job))
        self.job = job!
    }

    init(backward desc: cbn_backward_desc) throws(BatchNormError) {
        var desc = desc
        var job: OpaquePointer?
        try Check.status(cbn_job_create_backward(&desc, &job))
        self.job = job!
    }

    func run(on executor: BatchNormExecutor) throws(BatchNormError) {
        try executor.run(job)
    }

    deinit { cbn_job_destroy(job) }
}

/// Three doubles per channel, at an address that stays put: this slice's
/// moments or sums, which a job writes, or the whole batch's, which a job
/// created before the exchange reads when it runs (copied in once they are
/// known and checked).
final class ChannelPartials {
    let values: UnsafeMutableBufferPointer<Double>

    init(channels: Int) {
        values = .allocate(capacity: 3 * channels)
        values.initialize(repeating: 0)
    }

    deinit { values.deallocate() }

    /// Checks `merged` (every channel counts at least `least` values) and copies it in.
    func receive(_ merged: [Double], least: Double, shape: BatchNormShape) throws(BatchNormError) {
        try Check.wholeBatch(merged, least: least, shape: shape)
        _ = values.update(fromContentsOf: merged)
    }
}

extension BatchNormShape {
    var core: cbn_shape {
        cbn_shape(n: Int64(batchSize), channels: Int64(channels), spatial: Int64(spatialSize),
                  layout: layout == .channelsFirst ? CBN_CHANNELS_FIRST : CBN_CHANNELS_LAST)
    }
}
