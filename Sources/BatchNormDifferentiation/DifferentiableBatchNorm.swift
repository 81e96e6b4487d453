public import _Differentiation
public import BatchNormKernels

/// The scalars of the differentiable API: `Float` and `Double`, whose
/// tangents are themselves.
public protocol DifferentiableBatchNormScalar: BatchNormScalar, Differentiable where TangentVector == Self {}
extension Float: DifferentiableBatchNormScalar {}
extension Double: DifferentiableBatchNormScalar {}

/// Running statistics that a differentiable call updates: a reference, so
/// that a call inside `gradient(at:of:)` or `valueWithPullback` (which cannot
/// mutate its arguments) can update them, once per forward pass. Thread-safe:
/// local calls that share it update it one at a time; synchronized calls
/// never hold it across their exchange, and replicas that share it (copies of
/// one layer) store the step's update once.
///
/// It also keeps the storage of the output, input gradient and residual
/// gradient that the calls using it last returned (one tensor each), and
/// writes the next call's into it once you no longer hold those arrays, as a
/// training loop does not after its step: no new memory, and so no page
/// faults, per step. An array it returned and that you mutate in place before
/// the next call is copied first, as any array that shares its storage is.
public final class BatchNormRunningStatistics<Scalar: DifferentiableBatchNormScalar>: Sendable {
    /// A `BatchNorm` layer holds them, so that they follow its rules.
    private let layer: Locked<BatchNorm<Scalar>>
    /// The storage of the tensors the calls last returned.
    let recycler = StorageRecycler<Scalar>()
    /// C.
    public let featureCount: Int

    /// Running mean 0 and variance 1 for `featureCount` channels, updated with
    /// `momentum` (nil: a cumulative average), as `BatchNorm`'s.
    ///
    /// - Parameters:
    ///   - featureCount: C, the number of channels; at least 1.
    ///   - momentum: The weight of each new batch, in [0, 1]; nil for a cumulative average.
    public init(featureCount: Int, momentum: Double? = 0.1) throws(BatchNormError) {
        layer = Locked(try BatchNorm<Scalar>(featureCount: featureCount, momentum: momentum, affine: false))
        self.featureCount = featureCount
    }

    /// Running statistics that start from `mean`, `variance` and
    /// `batchesTracked` (a checkpoint's, say); throws as `BatchNorm`'s
    /// checks do for counts other than `featureCount` or a bad momentum.
    ///
    /// - Parameters:
    ///   - featureCount: C, the number of channels; at least 1.
    ///   - momentum: The weight of each new batch, in [0, 1]; nil for a cumulative average.
    ///   - mean: The running mean to start from, `featureCount` values.
    ///   - variance: The running variance to start from, `featureCount` values.
    ///   - batchesTracked: The number of training passes behind them, at least 0.
    public init(featureCount: Int, momentum: Double? = 0.1, mean: [Scalar], variance: [Scalar],
                batchesTracked: Int) throws(BatchNormError) {
        var layer = try BatchNorm<Scalar>(featureCount: featureCount, momentum: momentum, affine: false)
        try Self.check(mean, featureCount: featureCount, argument: "mean")
        try Self.check(variance, featureCount: featureCount, argument: "variance")
        guard batchesTracked >= 0 else {
            throw BatchNormError(.invalidDimension, argument: "batchesTracked", expected: "at least 0",
                                 actual: "\(batchesTracked)")
        }
        (layer.runningMean, layer.runningVariance, layer.batchesTracked) = (mean, variance, batchesTracked)
        self.layer = Locked(layer)
        self.featureCount = featureCount
    }

    private static func check(_ values: [Scalar], featureCount: Int, argument: String) throws(BatchNormError) {
        guard values.count == featureCount else {
            throw BatchNormError(.countMismatch, argument: argument, expected: "\(featureCount) values",
                                 actual: "\(values.count) values")
        }
    }

    /// The running mean, one per channel.
    public var mean: [Scalar] { layer.withLock { $0.runningMean! } }
    /// The running unbiased variance, one per channel.
    public var variance: [Scalar] { layer.withLock { $0.runningVariance! } }
    /// The number of training passes that updated them.
    public var batchesTracked: Int { layer.withLock { $0.batchesTracked } }
    /// The weight of each new batch, in [0, 1]; nil for a cumulative average.
    public var momentum: Double? { layer.withLock { $0.momentum } }

    /// Mean 0, variance 1 and `batchesTracked` 0, as when made (PyTorch's `reset_running_stats`).
    public func reset() {
        layer.withLock { $0.resetRunningStatistics() }
    }

    /// Runs `body` on the layer that holds the statistics, under the lock.
    func withLayer<R>(_ body: (inout BatchNorm<Scalar>) throws(BatchNormError) -> R) throws(BatchNormError) -> R {
        try layer.withLock { (layer) throws(BatchNormError) -> R in try body(&layer) }
    }

    /// Runs `body` on a copy of the layer taken under the lock, outside it,
    /// and stores the running statistics it leaves: for synchronized calls,
    /// which must not hold the lock across their exchange (replicas copied
    /// from one layer share these statistics, and one replica holding the
    /// lock while it waits for the other in the exchange would deadlock).
    /// Every replica takes its copy before the exchange and stores after it,
    /// so all store the same update, once.
    func withCopyOfLayer<R>(_ body: (inout BatchNorm<Scalar>) throws(BatchNormError) -> R) throws(BatchNormError) -> R {
        var copy = layer.withLock { $0 }
        let result = try body(&copy)
        layer.withLock { layer in
            (layer.runningMean, layer.runningVariance, layer.batchesTracked) =
                (copy.runningMean, copy.runningVariance, copy.batchesTracked)
        }
        return result
    }
}

/// The statistics as a checkpoint holds them: `featureCount`, momentum, mean,
/// variance and `batchesTracked`, bit for bit. Decoding checks them as
/// ``init(featureCount:momentum:mean:variance:batchesTracked:)`` does.
extension BatchNormRunningStatistics: Codable {
    private enum CodingKeys: String, CodingKey {
        case featureCount, momentum, mean, variance, batchesTracked
    }

    /// Decodes running statistics, checking them as the initializer does.
    ///
    /// - Parameter decoder: The decoder to read from.
    public convenience init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let featureCount = try container.decode(Int.self, forKey: .featureCount)
        let momentum = try container.decodeIfPresent(Double.self, forKey: .momentum)
        let mean = try container.decode([Scalar].self, forKey: .mean)
        let variance = try container.decode([Scalar].self, forKey: .variance)
        let batchesTracked = try container.decode(Int.self, forKey: .batchesTracked)
        // A delegating initializer cannot run in `DecodingError.checking`'s closure.
        do throws(BatchNormError) {
            try self.init(featureCount: featureCount, momentum: momentum, mean: mean, variance: variance,
                          batchesTracked: batchesTracked)
        } catch {
            throw DecodingError.invalidState(error, at: decoder)
        }
    }

    /// Encodes the statistics listed above.
    ///
    /// - Parameter encoder: The encoder to write to.
    public func encode(to encoder: any Encoder) throws {
        let layer = self.layer.withLock { $0 }
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(featureCount, forKey: .featureCount)
        try container.encodeIfPresent(layer.momentum, forKey: .momentum)
        try container.encode(layer.runningMean!, forKey: .mean)
        try container.encode(layer.runningVariance!, forKey: .variance)
        try container.encode(layer.batchesTracked, forKey: .batchesTracked)
    }
}

/// Batch normalization as a differentiable function of the input, γ and β:
/// y = activation(γ · (x − μ) / sqrt(σ² + ε) + β) over `input` of `shape`
/// (either layout).
///
/// - `.training`: μ and σ² are the batch's (biased); `running`, when given,
///   is updated once per call, with the unbiased variance.
/// - `.inference`: μ and σ² are `running`'s, which is required.
/// - With a `reducer`, the call is synchronized batch norm across its ranks
///   (see `BatchNormReducer`): the statistics are the whole batch's, and the
///   pullback's dγ and dβ this rank's part of the whole batch's (which a
///   data-parallel optimizer sums or averages across ranks), or the whole
///   batch's with `parameterGradients: .wholeBatch`. Every rank calls it, and
///   its pullback, in the same order.
///
/// Its derivative is registered to the package's fused backward kernels: the
/// pullback of `gradient(at:of:)` or `valueWithPullback` runs
/// `BatchNormalization.backward`, never a scalar differentiation of the
/// formula, and returns exactly what it returns. A differentiable function
/// cannot throw: the shape is checked when it is made, and an argument that
/// does not fit it (the input's count, γ's, β's or `running`'s channels)
/// stops the program with the `BatchNormError` that names it.
///
/// - Parameters:
///   - input: x, `shape`'s count of values.
///   - shape: The tensor's dimensions and layout.
///   - weight: γ, one per channel.
///   - bias: β, one per channel.
///   - mode: `.training` (batch statistics) or `.inference` (the running statistics, which it then needs).
///   - running: The running statistics: updated once per training-mode call, used in inference mode; nil for none.
///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
///   - executor: Who runs the kernels; `.automatic` by default.
///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
///   - parameterGradients: Synchronized: this rank\'s dγ and dβ (the default) or the whole batch\'s.
@differentiable(reverse, wrt: (input, weight, bias))
public func batchNorm<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode = .training, running: BatchNormRunningStatistics<Scalar>? = nil,
    epsilon: Double = 1e-5, activation: BatchNormActivation = .identity,
    executor: BatchNormExecutor = .automatic, reducer: (any BatchNormReducer)? = nil,
    parameterGradients: BatchNormParameterGradients = .perRank
) -> [Scalar] {
    Pass(input, residual: nil, shape: shape, weight: weight, bias: bias, mode: mode, running: running,
         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
         parameterGradients: parameterGradients).output
}

/// The residual block's batch norm as a differentiable function of the input,
/// the residual z, γ and β: y = activation(BN(x) + z), in the same pass, as
/// ``batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:parameterGradients:)``
/// otherwise.
///
/// - Parameters:
///   - input: x, `shape`'s count of values.
///   - residual: z, shaped like the input.
///   - shape: The tensor's dimensions and layout.
///   - weight: γ, one per channel.
///   - bias: β, one per channel.
///   - mode: `.training` (batch statistics) or `.inference` (the running statistics, which it then needs).
///   - running: The running statistics: updated once per training-mode call, used in inference mode; nil for none.
///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
///   - executor: Who runs the kernels; `.automatic` by default.
///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
///   - parameterGradients: Synchronized: this rank\'s dγ and dβ (the default) or the whole batch\'s.
@differentiable(reverse, wrt: (input, residual, weight, bias))
public func batchNorm<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode = .training, running: BatchNormRunningStatistics<Scalar>? = nil,
    epsilon: Double = 1e-5, activation: BatchNormActivation = .identity,
    executor: BatchNormExecutor = .automatic, reducer: (any BatchNormReducer)? = nil,
    parameterGradients: BatchNormParameterGradients = .perRank
) -> [Scalar] {
    Pass(input, residual: residual, shape: shape, weight: weight, bias: bias, mode: mode, running: running,
         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
         parameterGradients: parameterGradients).output
}

/// Batch normalization without γ and β (γ = 1, β = 0) as a differentiable
/// function of the input: y = activation((x − μ) / sqrt(σ² + ε)), otherwise as
/// ``batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:parameterGradients:)``.
///
/// - Parameters:
///   - input: x, `shape`'s count of values.
///   - shape: The tensor's dimensions and layout.
///   - mode: `.training` (batch statistics) or `.inference` (the running statistics, which it then needs).
///   - running: The running statistics: updated once per training-mode call, used in inference mode; nil for none.
///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
///   - executor: Who runs the kernels; `.automatic` by default.
///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
///   - parameterGradients: Synchronized: this rank\'s dγ and dβ (the default) or the whole batch\'s.
@differentiable(reverse, wrt: input)
public func batchNorm<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], shape: BatchNormShape, mode: BatchNormMode = .training,
    running: BatchNormRunningStatistics<Scalar>? = nil, epsilon: Double = 1e-5,
    activation: BatchNormActivation = .identity, executor: BatchNormExecutor = .automatic,
    reducer: (any BatchNormReducer)? = nil, parameterGradients: BatchNormParameterGradients = .perRank
) -> [Scalar] {
    Pass(input, residual: nil, shape: shape, weight: nil, bias: nil, mode: mode, running: running,
         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
         parameterGradients: parameterGradients).output
}

/// The residual block's batch norm without γ and β: y = activation(x̂ + z), as
/// a differentiable function of the input and the residual z.
///
/// - Parameters:
///   - input: x, `shape`'s count of values.
///   - residual: z, shaped like the input.
///   - shape: The tensor's dimensions and layout.
///   - mode: `.training` (batch statistics) or `.inference` (the running statistics, which it then needs).
///   - running: The running statistics: updated once per training-mode call, used in inference mode; nil for none.
///   - epsilon: ε, added to the variance before the square root; finite and ≥ 0.
///   - activation: Applied last, in the same pass: `.identity` or `.relu`.
///   - executor: Who runs the kernels; `.automatic` by default.
///   - reducer: With it, synchronized batch norm across its ranks: every rank makes the call with its slice of the batch. nil for a local call.
///   - parameterGradients: Synchronized: this rank\'s dγ and dβ (the default) or the whole batch\'s.
@differentiable(reverse, wrt: (input, residual))
public func batchNorm<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape, mode: BatchNormMode = .training,
    running: BatchNormRunningStatistics<Scalar>? = nil, epsilon: Double = 1e-5,
    activation: BatchNormActivation = .identity, executor: BatchNormExecutor = .automatic,
    reducer: (any BatchNormReducer)? = nil, parameterGradients: BatchNormParameterGradients = .perRank
) -> [Scalar] {
    Pass(input, residual: residual, shape: shape, weight: nil, bias: nil, mode: mode, running: running,
         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
         parameterGradients: parameterGradients).output
}

@derivative(of: batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:parameterGradients:),
            wrt: (input, weight, bias))
@usableFromInline
func batchNormVJP<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?,
    epsilon: Double, activation: BatchNormActivation, executor: BatchNormExecutor,
    reducer: (any BatchNormReducer)?, parameterGradients: BatchNormParameterGradients
) -> (value: [Scalar],
      pullback: ([Scalar].TangentVector)
          -> ([Scalar].TangentVector, [Scalar].TangentVector, [Scalar].TangentVector))
{
    let pass = Pass(input, residual: nil, shape: shape, weight: weight, bias: bias, mode: mode, running: running,
                    epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
                    parameterGradients: parameterGradients)
    return (pass.output, { v in
        let g = pass.gradients(v)
        return (g.input, g.weight, g.bias)
    })
}

@derivative(of: batchNorm(_:adding:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:parameterGradients:),
            wrt: (input, residual, weight, bias))
@usableFromInline
func batchNormResidualVJP<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?,
    epsilon: Double, activation: BatchNormActivation, executor: BatchNormExecutor,
    reducer: (any BatchNormReducer)?, parameterGradients: BatchNormParameterGradients
) -> (value: [Scalar],
      pullback: ([Scalar].TangentVector)
          -> ([Scalar].TangentVector, [Scalar].TangentVector, [Scalar].TangentVector, [Scalar].TangentVector))
{
    let pass = Pass(input, residual: residual, shape: shape, weight: weight, bias: bias, mode: mode,
                    running: running, epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
                    parameterGradients: parameterGradients)
    return (pass.output, { v in
        let g = pass.gradients(v)
        return (g.input, g.residual, g.weight, g.bias)
    })
}

@derivative(of: batchNorm(_:shape:mode:running:epsilon:activation:executor:reducer:parameterGradients:), wrt: input)
@usableFromInline
func batchNormNonAffineVJP<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], shape: BatchNormShape, mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?,
    epsilon: Double, activation: BatchNormActivation, executor: BatchNormExecutor,
    reducer: (any BatchNormReducer)?, parameterGradients: BatchNormParameterGradients
) -> (value: [Scalar], pullback: ([Scalar].TangentVector) -> [Scalar].TangentVector) {
    let pass = Pass(input, residual: nil, shape: shape, weight: nil, bias: nil, mode: mode, running: running,
                    epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
                    parameterGradients: parameterGradients)
    return (pass.output, { v in pass.gradients(v).input })
}

@derivative(of: batchNorm(_:adding:shape:mode:running:epsilon:activation:executor:reducer:parameterGradients:),
            wrt: (input, residual))
@usableFromInline
func batchNormNonAffineResidualVJP<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape, mode: BatchNormMode,
    running: BatchNormRunningStatistics<Scalar>?, epsilon: Double, activation: BatchNormActivation,
    executor: BatchNormExecutor, reducer: (any BatchNormReducer)?, parameterGradients: BatchNormParameterGradients
) -> (value: [Scalar], pullback: ([Scalar].TangentVector) -> ([Scalar].TangentVector, [Scalar].TangentVector)) {
    let pass = Pass(input, residual: residual, shape: shape, weight: nil, bias: nil, mode: mode, running: running,
                    epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
                    parameterGradients: parameterGradients)
    return (pass.output, { v in
        let g = pass.gradients(v)
        return (g.input, g.residual)
    })
}

/// One forward pass of `batchNorm`, through the `BatchNorm` layer's own
/// forward (so the running statistics follow its rules exactly), and what
/// its pullback needs. With running statistics, the output and the gradients
/// are written into the storage their recycler hands back.
struct Pass<Scalar: DifferentiableBatchNormScalar> {
    typealias Tangent = [Scalar].TangentVector
    let input: [Scalar], shape: BatchNormShape, weight: [Scalar]?, bias: [Scalar]?, hasResidual: Bool
    let activation: BatchNormActivation, executor: BatchNormExecutor, reducer: (any BatchNormReducer)?
    let parameterGradients: BatchNormParameterGradients
    let output: [Scalar], statistics: BatchNormStatistics
    /// Where the output and gradients get their storage, with running statistics.
    let recycler: StorageRecycler<Scalar>?

    /// Without `weight` and `bias`, batch norm is not affine and their gradients are empty.
    init(
        _ input: [Scalar], residual: [Scalar]?, shape: BatchNormShape, weight: [Scalar]?, bias: [Scalar]?,
        mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?, epsilon: Double,
        activation: BatchNormActivation, executor: BatchNormExecutor, reducer: (any BatchNormReducer)?,
        parameterGradients: BatchNormParameterGradients
    ) {
        (self.input, self.shape, self.weight, self.bias) = (input, shape, weight, bias)
        hasResidual = residual != nil
        (self.activation, self.executor, self.reducer) = (activation, executor, reducer)
        self.parameterGradients = parameterGradients
        let recycler = running?.recycler
        self.recycler = recycler
        var output = recycler?.take(.output, count: shape.count) ?? []
        statistics = stopOnError("batchNorm") { () throws(BatchNormError) in
            if mode == .inference && running == nil {
                throw BatchNormError(.missingArgument, argument: "running",
                                     expected: "running statistics in inference mode", actual: "nil")
            }
            func run(_ layer: inout BatchNorm<Scalar>) throws(BatchNormError) -> BatchNormStatistics {
                // The layer's own checks name a γ or β of the wrong count and leave its statistics as they were.
                defer { (layer.weight, layer.bias) = (nil, nil) }
                (layer.weight, layer.bias, layer.epsilon, layer.mode) = (weight, bias, epsilon, mode)
                (layer.activation, layer.executor) = (activation, executor)
                return try layer.forward(input, into: &output, shape: shape.dimensions, layout: shape.layout,
                                         residual: residual, reducer: reducer)
            }
            guard let running else {
                var layer = try BatchNorm<Scalar>(featureCount: shape.channels, tracksRunningStatistics: false)
                return try run(&layer)
            }
            // Local calls update the statistics one at a time; synchronized ones never hold the lock
            // across their exchange.
            if reducer == nil { return try running.withLayer { (layer) throws(BatchNormError) in try run(&layer) } }
            return try running.withCopyOfLayer { (layer) throws(BatchNormError) in try run(&layer) }
        }
        recycler?.keep(.output, output)
        self.output = output
    }

    /// dx, dz, dγ and dβ for the output's tangent `v`, from the fused backward kernels.
    func gradients(_ v: Tangent) -> (input: Tangent, residual: Tangent, weight: Tangent, bias: Tangent) {
        // An empty tangent is the zero of its array: nothing flows back. Synchronized, this
        // rank still joins the collective backward (with dy = 0), or the other ranks would wait.
        guard !v.base.isEmpty || reducer != nil else { return (.zero, .zero, .zero, .zero) }
        let dy = v.base.isEmpty ? [Scalar](repeating: 0, count: shape.count) : v.base
        var g = BatchNormGradients<Scalar>(
            input: recycler?.take(.inputGradient, count: shape.count),
            residual: hasResidual ? recycler?.take(.residualGradient, count: shape.count) : nil)
        stopOnError("batchNorm's pullback") { () throws(BatchNormError) in
            try BatchNormalization.backward(
                outputGradient: dy, input: input, shape: shape.dimensions, layout: shape.layout,
                statistics: statistics, weight: weight, bias: bias, activation: activation,
                // relu's mask: recomputed from x without a residual (one tensor fewer to read), else y's
                forwardOutput: hasResidual ? output : nil, into: &g, wantsResidualGradient: hasResidual, executor: executor, reducer: reducer,
                parameterGradients: parameterGradients)
        }
        recycler?.keep(.inputGradient, g.input!)
        if hasResidual { recycler?.keep(.residualGradient, g.residual!) }
        return (.init(g.input!), hasResidual ? .init(g.residual!) : .zero, .init(g.weight ?? []), .init(g.bias ?? []))
    }
}

/// Runs `body`; an error stops the program with its description, which names
/// the argument (a differentiable function cannot throw).
func stopOnError<R>(_ function: String, _ body: () throws(BatchNormError) -> R) -> R {
    do throws(BatchNormError) {
        return try body()
    } catch {
        fatalError("\(function): \(error)")
    }
}

/// A batch-normalization layer for Swift's automatic differentiation: γ
/// (`weight`) and β (`bias`) are its differentiable parameters; its running
/// statistics, ε, mode, activation and executor are not.
///
/// ```swift
/// var bn = try DifferentiableBatchNorm<Float>(featureCount: 16, activation: .relu)   // BN + ReLU, one pass
/// for x in batches {                                         // any batch size, the last partial one too
///     let shape = try BatchNormShape([x.count / (16 * 8 * 8), 16, 8, 8])
///     let g = gradient(at: bn) { bn in
///         bn(x, shape: shape).differentiableReduce(0) { $0 + $1 * $1 }   // your loss
///     }
///     for c in 0..<16 {                                      // SGD on γ and β
///         bn.weight[c] -= 0.01 * g.weight.base[c]
///         bn.bias[c] -= 0.01 * g.bias.base[c]
///     }
/// }
/// bn.mode = .inference                                       // now the running statistics normalize
/// ```
///
/// Calling it runs ``batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:parameterGradients:)``
/// with its parameters: in training mode it normalizes with the batch's
/// statistics and updates ``runningStatistics`` once per forward pass
/// (inside a differentiated function too); in inference mode it normalizes
/// with them. A layer without running statistics uses the batch's in both
/// modes, and a layer that is not affine has γ = 1, β = 0 and empty `weight`
/// and `bias` (whose gradients are empty), as `BatchNorm`. Because a
/// differentiable call cannot mutate the layer, the running statistics are a
/// reference: copies of a layer share them.
///
/// `Codable` saves γ, β, the running statistics, ε, the mode and the
/// activation bit for bit; not the executor or the reducer, which belong to
/// the machine and the job (a decoded layer runs on `.automatic`, alone).
public struct DifferentiableBatchNorm<Scalar: DifferentiableBatchNormScalar>: Differentiable {
    /// γ, one per channel; empty when the layer is not affine.
    public var weight: [Scalar]
    /// β, one per channel; empty when the layer is not affine.
    public var bias: [Scalar]
    /// C, the number of channels.
    @noDerivative public let featureCount: Int
    /// Whether γ and β are applied.
    @noDerivative public let isAffine: Bool
    /// Updated by training-mode calls, used by inference-mode calls; shared by
    /// copies. nil when the layer does not track running statistics.
    @noDerivative public let runningStatistics: BatchNormRunningStatistics<Scalar>?
    /// Training (batch statistics) or inference (running statistics).
    @noDerivative public var mode: BatchNormMode
    /// ε, added to the variance.
    @noDerivative public var epsilon: Double
    /// Applied in the same pass: y = activation(BN(x)).
    @noDerivative public var activation: BatchNormActivation
    /// Who runs the kernels.
    @noDerivative public var executor: BatchNormExecutor
    /// When set, synchronized batch norm across its ranks (see `BatchNormReducer`).
    @noDerivative public var reducer: (any BatchNormReducer)?
    /// Synchronized: this rank's dγ and dβ (the default, which a data-parallel
    /// optimizer sums or averages across ranks like every other gradient) or
    /// the whole batch's.
    @noDerivative public var parameterGradients: BatchNormParameterGradients = .perRank

    /// γ = 1, β = 0 (if `affine`), running mean 0 and variance 1 (if
    /// `tracksRunningStatistics`) for `featureCount` channels, with PyTorch's
    /// defaults (ε = 1e-5, momentum 0.1; nil: a cumulative average).
    ///
    /// - Parameters:
    ///   - featureCount: C, the number of channels; at least 1.
    ///   - epsilon: ε, added to the variance; finite and ≥ 0.
    ///   - momentum: The weight of each new batch, in [0, 1]; nil for a cumulative average.
    ///   - affine: Whether the layer has γ and β (starting at 1 and 0).
    ///   - tracksRunningStatistics: Whether the layer keeps a running mean and variance (starting at 0 and 1).
    ///   - mode: Training (batch statistics) or inference (running statistics).
    ///   - activation: Applied in the same pass: `.identity` or `.relu`.
    ///   - executor: Who runs the kernels; `.automatic` by default.
    ///   - reducer: When given, synchronized batch norm across its ranks.
    public init(
        featureCount: Int, epsilon: Double = 1e-5, momentum: Double? = 0.1, affine: Bool = true,
        tracksRunningStatistics: Bool = true, mode: BatchNormMode = .training,
        activation: BatchNormActivation = .identity, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) {
        // The layer that checks them.
        _ = try BatchNorm<Scalar>(featureCount: featureCount, epsilon: epsilon, momentum: momentum,
                                  executor: executor)
        runningStatistics = tracksRunningStatistics
            ? try BatchNormRunningStatistics(featureCount: featureCount, momentum: momentum) : nil
        self.featureCount = featureCount
        isAffine = affine
        weight = affine ? Array(repeating: 1, count: featureCount) : []
        bias = affine ? Array(repeating: 0, count: featureCount) : []
        self.mode = mode
        self.epsilon = epsilon
        self.activation = activation
        self.executor = executor
        self.reducer = reducer
    }

    /// Whether running statistics are kept.
    @noDerivative public var tracksRunningStatistics: Bool { runningStatistics != nil }

    /// The mode the call runs in: without running statistics, batch statistics in either mode.
    @noDerivative private var callMode: BatchNormMode { runningStatistics == nil ? .training : mode }

    /// y = activation(γ · x̂ + β) over `input` of `shape`, in the layer's mode.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values.
    ///   - shape: The tensor's dimensions and layout.
    @differentiable(reverse)
    public func callAsFunction(_ input: [Scalar], shape: BatchNormShape) -> [Scalar] {
        if isAffine {
            return batchNorm(input, shape: shape, weight: weight, bias: bias, mode: callMode,
                             running: runningStatistics, epsilon: epsilon, activation: activation,
                             executor: executor, reducer: reducer, parameterGradients: parameterGradients)
        }
        return batchNorm(input, shape: shape, mode: callMode, running: runningStatistics, epsilon: epsilon,
                         activation: activation, executor: executor, reducer: reducer,
                         parameterGradients: parameterGradients)
    }

    /// y = activation(γ · x̂ + β + z), the residual z shaped like the input, in one pass.
    ///
    /// - Parameters:
    ///   - input: x, `shape`'s count of values.
    ///   - residual: z, shaped like the input.
    ///   - shape: The tensor's dimensions and layout.
    @differentiable(reverse)
    public func callAsFunction(_ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape) -> [Scalar] {
        if isAffine {
            return batchNorm(input, adding: residual, shape: shape, weight: weight, bias: bias, mode: callMode,
                             running: runningStatistics, epsilon: epsilon, activation: activation,
                             executor: executor, reducer: reducer, parameterGradients: parameterGradients)
        }
        return batchNorm(input, adding: residual, shape: shape, mode: callMode, running: runningStatistics,
                         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer,
                         parameterGradients: parameterGradients)
    }

    /// Running mean 0, variance 1 and `batchesTracked` 0 (PyTorch's
    /// `reset_running_stats`); the copies that share them see it too.
    public func resetRunningStatistics() {
        runningStatistics?.reset()
    }

    /// γ = 1 and β = 0 when affine, and the running statistics reset (PyTorch's `reset_parameters`).
    public mutating func resetParameters() {
        if isAffine {
            weight = Array(repeating: 1, count: featureCount)
            bias = Array(repeating: 0, count: featureCount)
        }
        resetRunningStatistics()
    }
}

extension DifferentiableBatchNorm: Codable {
    private enum CodingKeys: String, CodingKey {
        case featureCount, isAffine, weight, bias, runningStatistics, mode, epsilon, activation
    }

    /// Decodes a layer; throws `DecodingError.dataCorrupted` with the
    /// `BatchNormError` for a state the layer's checks reject.
    ///
    /// - Parameters:
    ///   - decoder: The decoder to read from.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        featureCount = try container.decode(Int.self, forKey: .featureCount)
        isAffine = try container.decode(Bool.self, forKey: .isAffine)
        weight = try container.decode([Scalar].self, forKey: .weight)
        bias = try container.decode([Scalar].self, forKey: .bias)
        runningStatistics = try container.decodeIfPresent(BatchNormRunningStatistics<Scalar>.self,
                                                          forKey: .runningStatistics)
        mode = try container.decode(BatchNormMode.self, forKey: .mode)
        epsilon = try container.decode(Double.self, forKey: .epsilon)
        activation = try container.decode(BatchNormActivation.self, forKey: .activation)
        executor = .automatic
        reducer = nil
        try DecodingError.checking(decoder) { () throws(BatchNormError) in
            _ = try BatchNorm<Scalar>(featureCount: featureCount, epsilon: epsilon)
            let parameterCount = isAffine ? featureCount : 0
            for (values, name) in [(weight, "weight"), (bias, "bias")] where values.count != parameterCount {
                throw BatchNormError(.countMismatch, argument: name, expected: "\(parameterCount) values",
                                     actual: "\(values.count) values")
            }
            if let runningStatistics, runningStatistics.featureCount != featureCount {
                throw BatchNormError(.countMismatch, argument: "runningStatistics",
                                     expected: "\(featureCount) channels",
                                     actual: "\(runningStatistics.featureCount) channels")
            }
        }
    }

    /// Encodes γ, β, the running statistics, the mode, ε and the activation.
    ///
    /// - Parameter encoder: The encoder to write to.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(featureCount, forKey: .featureCount)
        try container.encode(isAffine, forKey: .isAffine)
        try container.encode(weight, forKey: .weight)
        try container.encode(bias, forKey: .bias)
        try container.encodeIfPresent(runningStatistics, forKey: .runningStatistics)
        try container.encode(mode, forKey: .mode)
        try container.encode(epsilon, forKey: .epsilon)
        try container.encode(activation, forKey: .activation)
    }
}
