/// A batch-normalization layer: its parameters, running statistics and mode,
/// as a value. Copies do not share state.
///
/// Conventions (PyTorch's): ε = 1e-5, momentum = 0.1, γ = 1, β = 0,
/// running mean 0, running variance 1. In training mode `forward` normalizes
/// with the batch statistics and, when running statistics are tracked,
/// updates them with the unbiased variance and increments `batchesTracked`.
/// In inference mode it normalizes with the running statistics, or with the
/// batch statistics when none are tracked.
public struct BatchNorm<Scalar: BatchNormElement>: Sendable {
    /// C, the number of channels.
    public let featureCount: Int
    /// ε, added to the variance before the square root. Finite and ≥ 0.
    public var epsilon: Double
    /// The weight of each new batch in the running statistics, in [0, 1];
    /// nil for a cumulative average (factor 1/k at the k-th training call).
    public var momentum: Double?
    /// γ, one per channel; nil when the layer is not affine (γ = 1).
    public var weight: [Scalar.Parameter]?
    /// β, one per channel; nil when the layer is not affine (β = 0).
    public var bias: [Scalar.Parameter]?
    /// Running mean, one per channel; nil when running statistics are not tracked.
    public var runningMean: [Scalar.Parameter]?
    /// Running unbiased variance, one per channel; nil when not tracked.
    public var runningVariance: [Scalar.Parameter]?
    /// The number of training calls that updated the running statistics: at
    /// least 0 (the calls check it), and it stays at `Int.max` once there.
    public var batchesTracked: Int
    /// Training (batch statistics) or inference (running statistics).
    public var mode: BatchNormMode
    /// Who runs the kernels.
    public var executor: BatchNormExecutor
    /// Applied in the same pass after BN (and a residual, when `forward` is
    /// given one): y = activation(BN(x) + z). `.relu` makes the layer a fused
    /// BN + ReLU; its `backward` then needs the output `forward` returned.
    public var activation: BatchNormActivation

    /// A layer with γ = 1, β = 0 (if `affine`) and running mean 0, variance 1
    /// (if `tracksRunningStatistics`).
    ///
    /// - Parameters:
    ///   - featureCount: C, the number of channels; at least 1.
    ///   - epsilon: ε, added to the variance; finite and ≥ 0. PyTorch's default, 1e-5.
    ///   - momentum: The weight of each new batch in the running statistics, in [0, 1]; nil for a cumulative average.
    ///   - affine: Whether the layer has γ and β (starting at 1 and 0).
    ///   - tracksRunningStatistics: Whether the layer keeps a running mean and variance (starting at 0 and 1).
    ///   - mode: Training (batch statistics) or inference (running statistics).
    ///   - activation: Applied after BN, in the same pass: `.identity` or `.relu`.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    public init(
        featureCount: Int,
        epsilon: Double = 1e-5,
        momentum: Double? = 0.1,
        affine: Bool = true,
        tracksRunningStatistics: Bool = true,
        mode: BatchNormMode = .training,
        activation: BatchNormActivation = .identity,
        executor: BatchNormExecutor = .automatic
    ) throws(BatchNormError) {
        guard featureCount >= 1 else {
            throw BatchNormError(.invalidDimension, argument: "featureCount", expected: "at least 1",
                                 actual: "\(featureCount)")
        }
        try Check.epsilon(epsilon)
        if let momentum { try Check.momentum(momentum) }
        try executor.validate()
        self.featureCount = featureCount
        self.epsilon = epsilon
        self.momentum = momentum
        self.weight = affine ? Array(repeating: 1, count: featureCount) : nil
        self.bias = affine ? Array(repeating: 0, count: featureCount) : nil
        self.runningMean = tracksRunningStatistics ? Array(repeating: 0, count: featureCount) : nil
        self.runningVariance = tracksRunningStatistics ? Array(repeating: 1, count: featureCount) : nil
        self.batchesTracked = 0
        self.mode = mode
        self.activation = activation
        self.executor = executor
    }

    /// Whether γ and β are applied.
    public var isAffine: Bool { weight != nil }
    /// Whether running statistics are kept.
    public var tracksRunningStatistics: Bool { runningMean != nil }

    /// Normalizes `input` of shape `[N, featureCount, …]` (or, channels last,
    /// `[N, …, featureCount]`) in the layer's mode, updating the running
    /// statistics in training mode: y = activation(BN(x) + residual), the
    /// residual (shaped like the input) when given. Returns y and the
    /// statistics `backward` needs. On error nothing about the layer changes.
    ///
    /// With a `reducer`, the layer is synchronized batch norm: every rank calls
    /// `forward` collectively with its slice of the batch, and batch statistics
    /// (and the running statistics' update, with the whole batch's m) are the
    /// whole batch's, bitwise the same on every rank. Inference with running
    /// statistics stays local. Every rank throws if any rank's call fails its
    /// checks or the ranks disagree (mode, channels, layout, ε, …).
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, featureCount, …]` or, channels last, `[N, …, featureCount]`.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public mutating func forward(
        _ input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst, residual: [Scalar]? = nil,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormForwardResult<Scalar> {
        var output = [Scalar]()
        let statistics = try forward(input, into: &output, shape: shape, layout: layout, residual: residual,
                                     reducer: reducer)
        return BatchNormForwardResult(output: output, statistics: statistics)
    }

    /// `forward` writing y into `output`, made the input's count long, reusing
    /// its storage when its capacity suffices: the speed of the buffer
    /// `forward`, with no new tensor-sized memory per call. An `output` that
    /// shares its storage is copied first (copy-on-write); on error neither
    /// it nor the layer changes. Returns the statistics `backward` needs.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - output: Receives y: made `shape`'s count long, its storage reused when its capacity suffices.
    ///   - shape: The dimensions, `[N, featureCount, …]` or, channels last, `[N, …, featureCount]`.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    @discardableResult
    public mutating func forward(
        _ input: [Scalar], into output: inout [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        residual: [Scalar]? = nil, reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormStatistics {
        let shape = try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            let shape = try BatchNormShape(shape, layout: layout)
            try Check.count(input.count, equals: shape.count, argument: "input")
            return shape
        }
        var statistics: BatchNormStatistics?
        try output.overwrite(count: shape.count) { (output) throws(BatchNormError) in
            try withBuffers(input, residual) { (input, residual) throws(BatchNormError) in
                statistics = try forward(input: input!, output: output, shape: shape, residual: residual,
                                         reducer: reducer)
            }
        }
        return statistics!
    }

    /// `forward` over caller-owned memory; `output` may be `input` or `residual` itself.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values.
    ///   - output: Receives y, `shape`'s count of values; may be `input` or `residual` itself.
    ///   - shape: The dimensions and layout, with `featureCount` channels.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public mutating func forward(
        input: UnsafeBufferPointer<Scalar>, output: UnsafeMutableBufferPointer<Scalar>, shape: BatchNormShape,
        residual: UnsafeBufferPointer<Scalar>? = nil, reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormStatistics {
        guard mode == .training else {
            return try inference(input: input, output: output, shape: shape, residual: residual, reducer: reducer)
        }
        try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try checkState(shape: shape)
            // The whole batch's m ≥ 2 is checked by the synchronized call.
            if reducer == nil { try Check.trainable(shape) }
        }
        guard let runningMean, let runningVariance else {
            return try normalizeWithBatchStatistics(input: input, output: output, shape: shape, residual: residual,
                                                    reducer: reducer).statistics
        }
        // The running statistics are updated in copies, which replace them on success.
        let result = try normalizeWithBatchStatistics(
            input: input, output: output, shape: shape, residual: residual, reducer: reducer,
            updating: (runningMean, runningVariance, momentum ?? 1 / (Double(batchesTracked) + 1)))
        (self.runningMean, self.runningVariance) = (result.runningMean, result.runningVariance)
        batchesTracked = batchesTracked == .max ? .max : batchesTracked + 1
        return result.statistics
    }

    /// Normalizes `input` as `forward` does in inference mode, whatever the
    /// layer's `mode`, without changing the layer (so a `let` layer can run
    /// it): with the running statistics, or with the batch's statistics when
    /// the layer tracks none (then every rank of a `reducer` calls it, as it
    /// calls `forward`). Returns y and the statistics `backward` needs.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, featureCount, …]` or, channels last, `[N, …, featureCount]`.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public func inference(
        _ input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst, residual: [Scalar]? = nil,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormForwardResult<Scalar> {
        var output = [Scalar]()
        let statistics = try inference(input, into: &output, shape: shape, layout: layout, residual: residual,
                                       reducer: reducer)
        return BatchNormForwardResult(output: output, statistics: statistics)
    }

    /// `inference` writing y into `output`, reusing its storage as
    /// `forward(_:into:…)` does. Returns the statistics `backward` needs.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - output: Receives y: made `shape`'s count long, its storage reused when its capacity suffices.
    ///   - shape: The dimensions, `[N, featureCount, …]` or, channels last, `[N, …, featureCount]`.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    @discardableResult
    public func inference(
        _ input: [Scalar], into output: inout [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        residual: [Scalar]? = nil, reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormStatistics {
        var layer = self
        layer.mode = .inference
        return try layer.forward(input, into: &output, shape: shape, layout: layout, residual: residual,
                                 reducer: reducer)
    }

    /// `inference` over caller-owned memory; `output` may be `input` or `residual` itself.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values.
    ///   - output: Receives y, `shape`'s count of values; may be `input` or `residual` itself.
    ///   - shape: The dimensions and layout, with `featureCount` channels.
    ///   - residual: z, shaped like the input, added before the activation; nil for none.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    public func inference(
        input: UnsafeBufferPointer<Scalar>, output: UnsafeMutableBufferPointer<Scalar>, shape: BatchNormShape,
        residual: UnsafeBufferPointer<Scalar>? = nil, reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) -> BatchNormStatistics {
        try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            try checkState(shape: shape)
            if !tracksRunningStatistics && reducer == nil { try Check.trainable(shape) }
        }
        guard let runningMean, let runningVariance else {
            return try normalizeWithBatchStatistics(input: input, output: output, shape: shape, residual: residual,
                                                    reducer: reducer).statistics
        }
        try withBuffers(weight, bias, runningMean, runningVariance) {
            (weight, bias, mean, variance) throws(BatchNormError) in
            try BatchNormalization.forwardInference(
                input: input, output: output, shape: shape, runningMean: mean!, runningVariance: variance!,
                weight: weight, bias: bias, residual: residual, activation: activation, epsilon: epsilon,
                executor: executor, reducer: reducer)
        }
        return try BatchNormalization.inferenceStatistics(
            runningMean: runningMean, runningVariance: runningVariance, epsilon: epsilon)
    }

    /// y with the batch's statistics; with `updating`, also the running mean
    /// and variance that the update by `factor` gives (the layer's own are not touched).
    private func normalizeWithBatchStatistics(
        input: UnsafeBufferPointer<Scalar>, output: UnsafeMutableBufferPointer<Scalar>, shape: BatchNormShape,
        residual: UnsafeBufferPointer<Scalar>?, reducer: (any BatchNormReducer)?,
        updating running: (mean: [Scalar.Parameter], variance: [Scalar.Parameter], factor: Double)? = nil
    ) throws(BatchNormError) -> (statistics: BatchNormStatistics, runningMean: [Scalar.Parameter],
                                 runningVariance: [Scalar.Parameter]) {
        let channels = featureCount
        var mean = [Double](), invStd = [Double]()
        var newMean = running?.mean ?? [], newVariance = running?.variance ?? []
        try overwriting(&mean, count: channels, &invStd, count: channels, &newMean, count: newMean.count,
                        &newVariance, count: newVariance.count) {
            (mean, invStd, runMean, runVariance) throws(BatchNormError) in
            try withBuffers(weight, bias) { (weight, bias) throws(BatchNormError) in
                try BatchNormalization.forwardTraining(
                    input: input, output: output, shape: shape, weight: weight, bias: bias, residual: residual,
                    activation: activation, runningMean: running == nil ? nil : runMean,
                    runningVariance: running == nil ? nil : runVariance, momentum: running?.factor ?? 0,
                    epsilon: epsilon, savedMean: mean, savedInvStd: invStd, executor: executor, reducer: reducer)
            }
        }
        return (BatchNormStatistics(mode: .training, mean: mean, invStd: invStd), newMean, newVariance)
    }

    /// Back-propagates `outputGradient` through the forward call that returned
    /// `statistics` (whose mode decides whether dx flows through μ and σ).
    /// Returns dx, dγ and dβ when the layer is affine, and dz for the residual
    /// when `wantsResidualGradient`. With `activation == .relu`, the gradient is
    /// masked where the forward output y ≤ 0: y is `forwardOutput`, the output
    /// that forward returned, or, without it, recomputed from x with the
    /// layer's γ and β (the same bits, one tensor fewer to read). Pass
    /// `forwardOutput` when forward added a residual, or when γ or β changed since.
    /// With the `reducer` the forward call was synchronized by, dx is this
    /// rank's, and dγ and dβ are this rank's part of the whole batch's (which
    /// `parameterGradients: .wholeBatch` returns instead).
    ///
    /// - Parameters:
    ///   - outputGradient: dy, the gradient of the loss with respect to y, shaped like the input.
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, featureCount, …]` or, channels last, `[N, …, featureCount]`.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - statistics: The statistics the forward call returned; their mode decides whether dx flows through μ and σ.
    ///   - forwardOutput: The output y of the forward call, whose mask it gives with `.relu`: required after a forward call with a residual; without it, the mask is recomputed from x. nil otherwise.
    ///   - wantsResidualGradient: Whether to return dz, the gradient of the residual.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    ///   - parameterGradients: Synchronized backward: this rank's dγ and dβ (the default), or the whole batch's.
    public func backward(
        outputGradient: [Scalar], input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        statistics: BatchNormStatistics, forwardOutput: [Scalar]? = nil, wantsResidualGradient: Bool = false,
        reducer: (any BatchNormReducer)? = nil, parameterGradients: BatchNormParameterGradients = .perRank
    ) throws(BatchNormError) -> BatchNormGradients<Scalar> {
        var gradients = BatchNormGradients<Scalar>()
        try backward(outputGradient: outputGradient, input: input, shape: shape, layout: layout,
                     statistics: statistics, forwardOutput: forwardOutput, into: &gradients,
                     wantsResidualGradient: wantsResidualGradient, reducer: reducer,
                     parameterGradients: parameterGradients)
        return gradients
    }

    /// `backward` writing into `gradients`, reusing the storage of the arrays
    /// it holds as ``BatchNormalization/backward(outputGradient:input:shape:layout:statistics:weight:bias:activation:forwardOutput:into:wantsResidualGradient:executor:reducer:parameterGradients:)``
    /// does; afterwards it holds what `backward` returns. On error it does not change.
    ///
    /// - Parameters:
    ///   - outputGradient: dy, the gradient of the loss with respect to y, shaped like the input.
    ///   - input: x, `shape`'s count of values in `layout`.
    ///   - shape: The dimensions, `[N, featureCount, …]` or, channels last, `[N, …, featureCount]`.
    ///   - layout: Where C lies in `shape`: `.channelsFirst` (the default) or `.channelsLast`.
    ///   - statistics: The statistics the forward call returned; their mode decides whether dx flows through μ and σ.
    ///   - forwardOutput: The output y of the forward call, whose mask it gives with `.relu`: required after a forward call with a residual; without it, the mask is recomputed from x. nil otherwise.
    ///   - gradients: Holds the gradients afterwards; the storage of the arrays it holds is reused.
    ///   - wantsResidualGradient: Whether to return dz, the gradient of the residual.
    ///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
    ///   - parameterGradients: Synchronized backward: this rank's dγ and dβ (the default), or the whole batch's.
    public func backward(
        outputGradient: [Scalar], input: [Scalar], shape: [Int], layout: BatchNormLayout = .channelsFirst,
        statistics: BatchNormStatistics, forwardOutput: [Scalar]? = nil,
        into gradients: inout BatchNormGradients<Scalar>, wantsResidualGradient: Bool = false,
        reducer: (any BatchNormReducer)? = nil, parameterGradients: BatchNormParameterGradients = .perRank
    ) throws(BatchNormError) {
        try Synchronization.precheck(reducer) { () throws(BatchNormError) in
            let shapeValue = try BatchNormShape(shape, layout: layout)
            try checkState(shape: shapeValue)
            try Check.count(statistics.mean.count, equals: featureCount, argument: "statistics.mean")
            try Check.count(statistics.invStd.count, equals: featureCount, argument: "statistics.invStd")
        }
        try BatchNormalization.backward(
            outputGradient: outputGradient, input: input, shape: shape, layout: layout, statistics: statistics,
            weight: weight, bias: bias, activation: activation, forwardOutput: forwardOutput, into: &gradients,
            wantsResidualGradient: wantsResidualGradient, executor: executor, reducer: reducer,
            parameterGradients: parameterGradients)
        if !isAffine {
            gradients.weight = nil
            gradients.bias = nil
        }
    }

    /// The layer's own properties are public and mutable: check them at each call.
    private func checkState(shape: BatchNormShape) throws(BatchNormError) {
        try Check.channels(of: shape, equal: featureCount)
        try executor.validate()
        try checkParameters()
    }

    /// Every property but the executor: ε, momentum, and the per-channel arrays' counts and pairs.
    private func checkParameters() throws(BatchNormError) {
        try Check.epsilon(epsilon)
        if let momentum { try Check.momentum(momentum) }
        guard batchesTracked >= 0 else {
            throw BatchNormError(.invalidDimension, argument: "batchesTracked", expected: "at least 0",
                                 actual: "\(batchesTracked)")
        }
        if let weight { try Check.count(weight.count, equals: featureCount, argument: "weight") }
        if let bias { try Check.count(bias.count, equals: featureCount, argument: "bias") }
        try Check.together(("weight", weight != nil), ("bias", bias != nil))
        if let runningMean { try Check.count(runningMean.count, equals: featureCount, argument: "runningMean") }
        if let runningVariance {
            try Check.count(runningVariance.count, equals: featureCount, argument: "runningVariance")
        }
        try Check.together(("runningMean", runningMean != nil), ("runningVariance", runningVariance != nil))
    }
}

extension BatchNorm {
    /// Running mean 0, running variance 1 and `batchesTracked` 0, as in a new
    /// layer (PyTorch's `reset_running_stats`); nothing when none are tracked.
    public mutating func resetRunningStatistics() {
        if tracksRunningStatistics {
            runningMean = Array(repeating: 0, count: featureCount)
            runningVariance = Array(repeating: 1, count: featureCount)
        }
        batchesTracked = 0
    }

    /// γ = 1 and β = 0 when affine, and the running statistics reset: the
    /// state of a new layer (PyTorch's `reset_parameters`).
    public mutating func resetParameters() {
        if isAffine {
            weight = Array(repeating: 1, count: featureCount)
            bias = Array(repeating: 0, count: featureCount)
        }
        resetRunningStatistics()
    }
}

/// The layer's state as a model checkpoint holds it: `featureCount`, ε,
/// momentum, γ, β, the running statistics, `batchesTracked`, the mode and the
/// activation, each value bit for bit (with an encoder that writes floating
/// point exactly, as `JSONEncoder` and `PropertyListEncoder` do; non-finite
/// values need the encoder's non-conforming float strategy). The executor
/// belongs to the machine, not the model: it is not saved, and a decoded
/// layer runs on `.automatic`. Decoding checks the state as the layer's calls
/// do and throws `DecodingError.dataCorrupted` with the ``BatchNormError``
/// for a state they would reject.
extension BatchNorm: Codable {
    private enum CodingKeys: String, CodingKey {
        case featureCount, epsilon, momentum, weight, bias, runningMean, runningVariance, batchesTracked, mode
        case activation
    }

    /// Decodes a layer, checking it as the layer's calls do.
    ///
    /// - Parameter decoder: The decoder to read from.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        featureCount = try container.decode(Int.self, forKey: .featureCount)
        epsilon = try container.decode(Double.self, forKey: .epsilon)
        momentum = try container.decodeIfPresent(Double.self, forKey: .momentum)
        weight = try container.decodeIfPresent([Scalar.Parameter].self, forKey: .weight)
        bias = try container.decodeIfPresent([Scalar.Parameter].self, forKey: .bias)
        runningMean = try container.decodeIfPresent([Scalar.Parameter].self, forKey: .runningMean)
        runningVariance = try container.decodeIfPresent([Scalar.Parameter].self, forKey: .runningVariance)
        batchesTracked = try container.decode(Int.self, forKey: .batchesTracked)
        mode = try container.decode(BatchNormMode.self, forKey: .mode)
        activation = try container.decode(BatchNormActivation.self, forKey: .activation)
        executor = .automatic
        try DecodingError.checking(decoder) { () throws(BatchNormError) in
            guard featureCount >= 1 else {
                throw BatchNormError(.invalidDimension, argument: "featureCount", expected: "at least 1",
                                     actual: "\(featureCount)")
            }
            try checkParameters()
        }
    }

    /// Encodes the state listed above.
    ///
    /// - Parameter encoder: The encoder to write to.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(featureCount, forKey: .featureCount)
        try container.encode(epsilon, forKey: .epsilon)
        try container.encodeIfPresent(momentum, forKey: .momentum)
        try container.encodeIfPresent(weight, forKey: .weight)
        try container.encodeIfPresent(bias, forKey: .bias)
        try container.encodeIfPresent(runningMean, forKey: .runningMean)
        try container.encodeIfPresent(runningVariance, forKey: .runningVariance)
        try container.encode(batchesTracked, forKey: .batchesTracked)
        try container.encode(mode, forKey: .mode)
        try container.encode(activation, forKey: .activation)
    }
}
