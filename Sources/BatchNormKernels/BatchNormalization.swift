internal import CBatchNorm

/// Whether statistics come from the batch (training) or from the running
/// statistics (inference).
public enum BatchNormMode: Hashable, Sendable {
    /// Normalize with the batch's own mean and biased variance; backward
    /// propagates through them.
    case training
    /// Normalize with the running mean and variance; backward treats them as constants.
    case inference
}

/// What follows batch normalization in the same pass: y = activation(BN(x) + z),
/// with z the optional residual. The statistics (saved and running) are
/// BN(x)'s whatever the activation.
public enum BatchNormActivation: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// y = BN(x) (+ z).
    case identity
    /// y = max(0, BN(x) (+ z)): v where v > 0, +0 where v ≤ 0 (−0 included), NaN
    /// where v is NaN. Backward masks the gradient with the forward output as
    /// PyTorch's `threshold_backward` does: g = dy unless y ≤ 0 (so where y is
    /// NaN the gradient passes), +0 there.
    case relu

    public var description: String {
        switch self {
        case .identity: "identity"
        case .relu: "relu"
        }
    }

    var core: cbn_activation { self == .relu ? CBN_ACTIVATION_RELU : CBN_ACTIVATION_IDENTITY }
}

/// The per-channel statistics a forward pass normalized with, as backward needs them.
public struct BatchNormStatistics: Hashable, Sendable {
    /// `.training`: batch statistics; `.inference`: taken from running statistics.
    public var mode: BatchNormMode
    /// μ_c, in double whatever the tensor's scalar type.
    public var mean: [Double]
    /// r_c = 1 / sqrt(σ²_c + ε), in double.
    public var invStd: [Double]

    public init(mode: BatchNormMode, mean: [Double], invStd: [Double]) {
        self.mode = mode
        self.mean = mean
        self.invStd = invStd
    }
}

/// The output of a forward pass with the statistics it used.
public struct BatchNormForwardResult<Scalar: BatchNormScalar>: Sendable {
    /// y, shaped like the input.
    public var output: [Scalar]
    /// μ and r per channel, for `backward`.
    public var statistics: BatchNormStatistics
}

/// The gradients a backward pass returns; nil where not asked for.
public struct BatchNormGradients<Scalar: BatchNormScalar>: Sendable {
    /// dL/dx, shaped like the input.
    public var input: [Scalar]?
    /// dL/dγ = Σ dy · x̂ per channel.
    public var weight: [Scalar]?
    /// dL/dβ = Σ dy per channel.
    public var bias: [Scalar]?
    /// dL/dz for the residual of an epilogue y = activation(BN(x) + z): the (masked) dy.
    public var residual: [Scalar]? = nil
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
    public static func forwardTraining<Scalar: BatchNormScalar>(
        input: UnsafeBufferPointer<Scalar>,
        output: UnsafeMutableBufferPointer<Scalar>,
        shape: BatchNormShape,
        weight: UnsafeBufferPointer<Scalar>? = nil,
        bias: UnsafeBufferPointer<Scalar>? = nil,
        residual: UnsafeBufferPointer<Scalar>? = nil,
        activation: BatchNormActivation = .identity,
        runningMean: UnsafeMutableBufferPointer<Scalar>? = nil,
        runningVariance: UnsafeMutableBufferPointer<Scalar>? = nil,
        momentum: Double = 0.1,
        epsilon: Double = 1e-5,
        savedMean: UnsafeMutableBufferPointer<Double>? = nil,
        savedInvStd: UnsafeMutableBufferPointer<Double>? = nil,
        executor: BatchNormExecutor = .automatic
    ) throws(BatchNormError) {
        try executor.validate()
        try Check.epsilon(epsilon)
        try Check.momentum(momentum)
        let channels = shape.channels
        try Check.count(input.count, equals: shape.count, argument: "input")
        try Check.count(output.count, equals: shape.count, argument: "output")
        if let weight { try Check.count(weight.count, equals: channels, argument: "weight") }
        if let bias { try Check.count(bias.count, equals: channels, argument: "bias") }
        if (runningMean == nil) != (runningVariance == nil) {
            throw BatchNormError(.missingArgument, argument: runningMean == nil ? "runningMean" : "runningVariance",
                                 expected: "runningMean and runningVariance together, or neither",
                                 actual: "only one of them")
        }
        if let runningMean { try Check.count(runningMean.count, equals: channels, argument: "runningMean") }
        if let runningVariance {
            try Check.count(runningVariance.count, equals: channels, argument: "runningVariance")
        }
        if let savedMean { try Check.count(savedMean.count, equals: channels, argument: "savedMean") }
        if let savedInvStd { try Check.count(savedInvStd.count, equals: channels, argument: "savedInvStd") }
        if let residual { try Check.count(residual.count, equals: shape.count, argument: "residual") }
        try Check.trainable(shape)
        try Check.noOverlaps(
            [.init("input", input), .init("output", output), .init("weight", weight), .init("bias", bias),
             .init("runningMean", runningMean), .init("runningVariance", runningVariance),
             .init("savedMean", savedMean), .init("savedInvStd", savedInvStd), .init("residual", residual)],
            exactAliases: [["output", "input"], ["output", "residual"]])

        try runForward(
            training: true, input: input, output: output, shape: shape, weight: weight, bias: bias,
            residual: residual, activation: activation,
            runningMean: runningMean?.rawBase, runningVariance: runningVariance?.rawBase,
            savedMean: savedMean?.baseAddress, savedInvStd: savedInvStd?.baseAddress,
            epsilon: epsilon, momentum: momentum, executor: executor)
    }

    // MARK: Forward, inference

    /// Normalizes `input` with the running statistics:
    /// y = γ_c · (x − runningMean_c) / sqrt(runningVariance_c + ε) + β_c, then the
    /// epilogue y = activation(y + residual) as in `forwardTraining`.
    public static func forwardInference<Scalar: BatchNormScalar>(
        input: UnsafeBufferPointer<Scalar>,
        output: UnsafeMutableBufferPointer<Scalar>,
        shape: BatchNormShape,
        runningMean: UnsafeBufferPointer<Scalar>,
        runningVariance: UnsafeBufferPointer<Scalar>,
        weight: UnsafeBufferPointer<Scalar>? = nil,
        bias: UnsafeBufferPointer<Scalar>? = nil,
        residual: UnsafeBufferPointer<Scalar>? = nil,
        activation: BatchNormActivation = .identity,
        epsilon: Double = 1e-5,
        executor: BatchNormExecutor = .automatic
    ) throws(BatchNormError) {
        try executor.validate()
        try Check.epsilon(epsilon)
        let channels = shape.channels
        try Check.count(input.count, equals: shape.count, argument: "input")
        try Check.count(output.count, equals: shape.count, argument: "output")
        try Check.count(runningMean.count, equals: channels, argument: "runningMean")
        try Check.count(runningVariance.count, equals: channels, argument: "runningVariance")
        if let weight { try Check.count(weight.count, equals: channels, argument: "weight") }
        if let bias { try Check.count(bias.count, equals: channels, argument: "bias") }
        if let residual { try Check.count(residual.count, equals: shape.count, argument: "residual") }
        try Check.noOverlaps(
            [.init("input", input), .init("output", output), .init("weight", weight), .init("bias", bias),
             .init("runningMean", runningMean), .init("runningVariance", runningVariance),
             .init("residual", residual)],
            exactAliases: [["output", "input"], ["output", "residual"]])

        try runForward(
            training: false, input: input, output: output, shape: shape, weight: weight, bias: bias,
            residual: residual, activation: activation,
            runningMean: UnsafeMutableRawPointer(mutating: runningMean.rawBase),
            runningVariance: UnsafeMutableRawPointer(mutating: runningVariance.rawBase),
            savedMean: nil, savedInvStd: nil, epsilon: epsilon, momentum: 0, executor: executor)
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
    /// `forwardOutput` (the y it wrote) is required and dy is first masked,
    /// g = dy unless y ≤ 0 (+0 there; where y is NaN, g = dy); g then takes dy's place
    /// above. `residualGradient` receives dL/dz = g. It may be `outputGradient`
    /// itself, as `inputGradient` may (but not both).
    public static func backward<Scalar: BatchNormScalar>(
        mode: BatchNormMode,
        input: UnsafeBufferPointer<Scalar>,
        outputGradient: UnsafeBufferPointer<Scalar>,
        shape: BatchNormShape,
        mean: UnsafeBufferPointer<Double>,
        invStd: UnsafeBufferPointer<Double>,
        weight: UnsafeBufferPointer<Scalar>? = nil,
        inputGradient: UnsafeMutableBufferPointer<Scalar>? = nil,
        weightGradient: UnsafeMutableBufferPointer<Scalar>? = nil,
        biasGradient: UnsafeMutableBufferPointer<Scalar>? = nil,
        activation: BatchNormActivation = .identity,
        forwardOutput: UnsafeBufferPointer<Scalar>? = nil,
        residualGradient: UnsafeMutableBufferPointer<Scalar>? = nil,
        executor: BatchNormExecutor = .automatic
    ) throws(BatchNormError) {
        try executor.validate()
        let channels = shape.channels
        if activation == .relu && forwardOutput == nil {
            throw BatchNormError(.missingArgument, argument: "forwardOutput",
                                 expected: "the forward pass's output, for the relu mask", actual: "nil")
        }
        if let forwardOutput {
            try Check.count(forwardOutput.count, equals: shape.count, argument: "forwardOutput")
        }
        if let residualGradient {
            try Check.count(residualGradient.count, equals: shape.count, argument: "residualGradient")
        }
        try Check.count(input.count, equals: shape.count, argument: "input")
        try Check.count(outputGradient.count, equals: shape.count, argument: "outputGradient")
        try Check.count(mean.count, equals: channels, argument: "mean")
        try Check.count(invStd.count, equals: channels, argument: "invStd")
        if let weight { try Check.count(weight.count, equals: channels, argument: "weight") }
        if let inputGradient { try Check.count(inputGradient.count, equals: shape.count, argument: "inputGradient") }
        if let weightGradient { try Check.count(weightGradient.count, equals: channels, argument: "weightGradient") }
        if let biasGradient { try Check.count(biasGradient.count, equals: channels, argument: "biasGradient") }
        try Check.noOverlaps(
            [.init("input", input), .init("outputGradient", outputGradient), .init("mean", mean),
             .init("invStd", invStd), .init("weight", weight), .init("inputGradient", inputGradient),
             .init("weightGradient", weightGradient), .init("biasGradient", biasGradient),
             .init("forwardOutput", forwardOutput), .init("residualGradient", residualGradient)],
            exactAliases: [["inputGradient", "outputGradient"], ["inputGradient", "input"],
                           ["residualGradient", "outputGradient"]])

        var desc = cbn_backward_desc()
        desc.dtype = Scalar.coreType
        desc.shape = shape.core
        desc.training = mode == .training ? 1 : 0
        desc.x = input.rawBase
        desc.dy = outputGradient.rawBase
        desc.weight = weight?.rawBase
        desc.mean = mean.baseAddress
        desc.invstd = invStd.baseAddress
        desc.dx = inputGradient?.rawBase
        desc.dweight = weightGradient?.rawBase
        desc.dbias = biasGradient?.rawBase
        desc.activation = activation.core
        desc.y = forwardOutput?.rawBase
        desc.dresidual = residualGradient?.rawBase
        var job: OpaquePointer?
        try Check.status(cbn_job_create_backward(&desc, &job))
        defer { cbn_job_destroy(job) }
        try executor.run(job!)
    }

    /// The statistics inference mode normalizes with: mean_c = runningMean_c and
    /// invStd_c = 1 / sqrt(runningVariance_c + ε), computed exactly as the kernels do.
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

    /// Builds the core's forward descriptor from checked arguments and runs it.
    private static func runForward<Scalar: BatchNormScalar>(
        training: Bool, input: UnsafeBufferPointer<Scalar>, output: UnsafeMutableBufferPointer<Scalar>,
        shape: BatchNormShape, weight: UnsafeBufferPointer<Scalar>?, bias: UnsafeBufferPointer<Scalar>?,
        residual: UnsafeBufferPointer<Scalar>?, activation: BatchNormActivation,
        runningMean: UnsafeMutableRawPointer?, runningVariance: UnsafeMutableRawPointer?,
        savedMean: UnsafeMutablePointer<Double>?, savedInvStd: UnsafeMutablePointer<Double>?,
        epsilon: Double, momentum: Double, executor: BatchNormExecutor
    ) throws(BatchNormError) {
        var desc = cbn_forward_desc()
        desc.dtype = Scalar.coreType
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
        var job: OpaquePointer?
        try Check.status(cbn_job_create_forward(&desc, &job))
        defer { cbn_job_destroy(job) }
        try executor.run(job!)
    }
}

extension BatchNormShape {
    var core: cbn_shape {
        cbn_shape(n: Int64(batchSize), channels: Int64(channels), spatial: Int64(spatialSize),
                  layout: layout == .channelsFirst ? CBN_CHANNELS_FIRST : CBN_CHANNELS_LAST)
    }
}
