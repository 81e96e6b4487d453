public import _Differentiation
public import BatchNormKernels
import Synchronization

/// The scalars of the differentiable API: `Float` and `Double`, whose
/// tangents are themselves.
public protocol DifferentiableBatchNormScalar: BatchNormScalar, Differentiable where TangentVector == Self {}
extension Float: DifferentiableBatchNormScalar {}
extension Double: DifferentiableBatchNormScalar {}

/// Running statistics that a differentiable call updates: a reference, so
/// that a call inside `gradient(at:of:)` or `valueWithPullback` (which cannot
/// mutate its arguments) can update them, once per forward pass. Thread-safe:
/// calls that share it update it one at a time.
///
/// It also keeps the storage of the output, input gradient and residual
/// gradient that the calls using it last returned (one tensor each), and
/// writes the next call's into it once you no longer hold those arrays, as a
/// training loop does not after its step: no new memory, and so no page
/// faults, per step. An array it returned and that you mutate in place before
/// the next call is copied first, as any array that shares its storage is.
public final class BatchNormRunningStatistics<Scalar: DifferentiableBatchNormScalar>: Sendable {
    /// A ``BatchNorm`` layer holds them, so that they follow its rules.
    private let layer: Mutex<BatchNorm<Scalar>>
    /// The storage of the tensors the calls last returned.
    let recycler = StorageRecycler<Scalar>()
    /// C.
    public let featureCount: Int

    /// Running mean 0 and variance 1 for `featureCount` channels, updated with
    /// `momentum` (nil: a cumulative average), as ``BatchNorm``'s.
    public init(featureCount: Int, momentum: Double? = 0.1) throws(BatchNormError) {
        layer = Mutex(try BatchNorm<Scalar>(featureCount: featureCount, momentum: momentum, affine: false))
        self.featureCount = featureCount
    }

    /// The running mean, one per channel.
    public var mean: [Scalar] { layer.withLock { $0.runningMean! } }
    /// The running unbiased variance, one per channel.
    public var variance: [Scalar] { layer.withLock { $0.runningVariance! } }
    /// The number of training passes that updated them.
    public var batchesTracked: Int { layer.withLock { $0.batchesTracked } }

    /// Runs `body` on the layer that holds the statistics, under the lock.
    func withLayer<R>(_ body: (inout BatchNorm<Scalar>) throws(BatchNormError) -> R) throws(BatchNormError) -> R {
        try layer.withLock { (layer) throws(BatchNormError) -> R in try body(&layer) }
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
///   (see ``BatchNormReducer``): the statistics, and in the pullback dγ and
///   dβ, are the whole batch's. Every rank calls it, and its pullback, in
///   the same order.
///
/// Its derivative is registered to the package's fused backward kernels: the
/// pullback of `gradient(at:of:)` or `valueWithPullback` runs
/// `BatchNormalization.backward`, never a scalar differentiation of the
/// formula, and returns exactly what it returns. A differentiable function
/// cannot throw: the shape is checked when it is made, and an argument that
/// does not fit it (the input's count, γ's, β's or `running`'s channels)
/// stops the program with the ``BatchNormError`` that names it.
@differentiable(reverse, wrt: (input, weight, bias))
public func batchNorm<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode = .training, running: BatchNormRunningStatistics<Scalar>? = nil,
    epsilon: Double = 1e-5, activation: BatchNormActivation = .identity,
    executor: BatchNormExecutor = .automatic, reducer: (any BatchNormReducer)? = nil
) -> [Scalar] {
    Pass(input, residual: nil, shape: shape, weight: weight, bias: bias, mode: mode, running: running,
         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer).output
}

/// The residual block's batch norm as a differentiable function of the input,
/// the residual z, γ and β: y = activation(BN(x) + z), in the same pass, as
/// ``batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:)``
/// otherwise.
@differentiable(reverse, wrt: (input, residual, weight, bias))
public func batchNorm<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode = .training, running: BatchNormRunningStatistics<Scalar>? = nil,
    epsilon: Double = 1e-5, activation: BatchNormActivation = .identity,
    executor: BatchNormExecutor = .automatic, reducer: (any BatchNormReducer)? = nil
) -> [Scalar] {
    Pass(input, residual: residual, shape: shape, weight: weight, bias: bias, mode: mode, running: running,
         epsilon: epsilon, activation: activation, executor: executor, reducer: reducer).output
}

@derivative(of: batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:),
            wrt: (input, weight, bias))
@usableFromInline
func batchNormVJP<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?,
    epsilon: Double, activation: BatchNormActivation, executor: BatchNormExecutor,
    reducer: (any BatchNormReducer)?
) -> (value: [Scalar],
      pullback: ([Scalar].TangentVector)
          -> ([Scalar].TangentVector, [Scalar].TangentVector, [Scalar].TangentVector))
{
    let pass = Pass(input, residual: nil, shape: shape, weight: weight, bias: bias, mode: mode, running: running,
                    epsilon: epsilon, activation: activation, executor: executor, reducer: reducer)
    return (pass.output, { v in
        let g = pass.gradients(v)
        return (g.input, g.weight, g.bias)
    })
}

@derivative(of: batchNorm(_:adding:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:),
            wrt: (input, residual, weight, bias))
@usableFromInline
func batchNormResidualVJP<Scalar: DifferentiableBatchNormScalar>(
    _ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
    mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?,
    epsilon: Double, activation: BatchNormActivation, executor: BatchNormExecutor,
    reducer: (any BatchNormReducer)?
) -> (value: [Scalar],
      pullback: ([Scalar].TangentVector)
          -> ([Scalar].TangentVector, [Scalar].TangentVector, [Scalar].TangentVector, [Scalar].TangentVector))
{
    let pass = Pass(input, residual: residual, shape: shape, weight: weight, bias: bias, mode: mode,
                    running: running, epsilon: epsilon, activation: activation, executor: executor, reducer: reducer)
    return (pass.output, { v in
        let g = pass.gradients(v)
        return (g.input, g.residual, g.weight, g.bias)
    })
}

/// One forward pass of `batchNorm`, through the ``BatchNorm`` layer's own
/// forward (so the running statistics follow its rules exactly), and what
/// its pullback needs. With running statistics, the output and the gradients
/// are written into the storage their recycler hands back.
struct Pass<Scalar: DifferentiableBatchNormScalar> {
    typealias Tangent = [Scalar].TangentVector
    let input: [Scalar], shape: BatchNormShape, weight: [Scalar], hasResidual: Bool
    let activation: BatchNormActivation, executor: BatchNormExecutor, reducer: (any BatchNormReducer)?
    let output: [Scalar], statistics: BatchNormStatistics
    /// Where the output and gradients get their storage, with running statistics.
    let recycler: StorageRecycler<Scalar>?

    init(
        _ input: [Scalar], residual: [Scalar]?, shape: BatchNormShape, weight: [Scalar], bias: [Scalar],
        mode: BatchNormMode, running: BatchNormRunningStatistics<Scalar>?, epsilon: Double,
        activation: BatchNormActivation, executor: BatchNormExecutor, reducer: (any BatchNormReducer)?
    ) {
        (self.input, self.shape, self.weight, hasResidual) = (input, shape, weight, residual != nil)
        (self.activation, self.executor, self.reducer) = (activation, executor, reducer)
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
            return try running.withLayer { (layer) throws(BatchNormError) in try run(&layer) }
        }
        recycler?.keep(.output, output)
        self.output = output
    }

    /// dx, dz, dγ and dβ for the output's tangent `v`, from the fused backward kernels.
    func gradients(_ v: Tangent) -> (input: Tangent, residual: Tangent, weight: Tangent, bias: Tangent) {
        // An empty tangent is the zero of its array: nothing flows back.
        guard !v.base.isEmpty else { return (.zero, .zero, .zero, .zero) }
        var g = BatchNormGradients<Scalar>(
            input: recycler?.take(.inputGradient, count: shape.count),
            residual: hasResidual ? recycler?.take(.residualGradient, count: shape.count) : nil)
        stopOnError("batchNorm's pullback") { () throws(BatchNormError) in
            try BatchNormalization.backward(
                outputGradient: v.base, input: input, shape: shape.dimensions, layout: shape.layout,
                statistics: statistics, weight: weight, activation: activation, forwardOutput: output,
                into: &g, wantsResidualGradient: hasResidual, executor: executor, reducer: reducer)
        }
        recycler?.keep(.inputGradient, g.input!)
        if hasResidual { recycler?.keep(.residualGradient, g.residual!) }
        return (.init(g.input!), hasResidual ? .init(g.residual!) : .zero, .init(g.weight!), .init(g.bias!))
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
/// var bn = try DifferentiableBatchNorm<Float>(featureCount: 64)
/// let shape = try BatchNormShape([32, 64, 56, 56])
/// let (loss, gradient) = valueWithGradient(at: bn) { bn in mse(bn(x, shape: shape), target) }
/// bn.move(by: gradient.scaled(by: -learningRate))   // or update weight and bias yourself
/// ```
///
/// Calling it runs ``batchNorm(_:shape:weight:bias:mode:running:epsilon:activation:executor:reducer:)``
/// with its parameters: in training mode it normalizes with the batch's
/// statistics and updates ``runningStatistics`` once per forward pass
/// (inside a differentiated function too); in inference mode it normalizes
/// with them. Because a differentiable call cannot mutate the layer, the
/// running statistics are a reference: copies of a layer share them.
public struct DifferentiableBatchNorm<Scalar: DifferentiableBatchNormScalar>: Differentiable {
    /// γ, one per channel.
    public var weight: [Scalar]
    /// β, one per channel.
    public var bias: [Scalar]
    /// Updated by training-mode calls, used by inference-mode calls; shared by copies.
    @noDerivative public let runningStatistics: BatchNormRunningStatistics<Scalar>
    /// Training (batch statistics) or inference (running statistics).
    @noDerivative public var mode: BatchNormMode
    /// ε, added to the variance.
    @noDerivative public var epsilon: Double
    /// Applied in the same pass: y = activation(BN(x)).
    @noDerivative public var activation: BatchNormActivation
    /// Who runs the kernels.
    @noDerivative public var executor: BatchNormExecutor
    /// When set, synchronized batch norm across its ranks (see ``BatchNormReducer``).
    @noDerivative public var reducer: (any BatchNormReducer)?

    /// γ = 1, β = 0, running mean 0 and variance 1 for `featureCount` channels,
    /// with PyTorch's defaults (ε = 1e-5, momentum 0.1; nil: a cumulative average).
    public init(
        featureCount: Int, epsilon: Double = 1e-5, momentum: Double? = 0.1, mode: BatchNormMode = .training,
        activation: BatchNormActivation = .identity, executor: BatchNormExecutor = .automatic,
        reducer: (any BatchNormReducer)? = nil
    ) throws(BatchNormError) {
        // The layer that checks them, and holds the running statistics.
        _ = try BatchNorm<Scalar>(featureCount: featureCount, epsilon: epsilon, momentum: momentum,
                                  executor: executor)
        runningStatistics = try BatchNormRunningStatistics(featureCount: featureCount, momentum: momentum)
        weight = Array(repeating: 1, count: featureCount)
        bias = Array(repeating: 0, count: featureCount)
        self.mode = mode
        self.epsilon = epsilon
        self.activation = activation
        self.executor = executor
        self.reducer = reducer
    }

    /// y = activation(γ · x̂ + β) over `input` of `shape`, in the layer's mode.
    @differentiable(reverse)
    public func callAsFunction(_ input: [Scalar], shape: BatchNormShape) -> [Scalar] {
        batchNorm(input, shape: shape, weight: weight, bias: bias, mode: mode, running: runningStatistics,
                  epsilon: epsilon, activation: activation, executor: executor, reducer: reducer)
    }

    /// y = activation(γ · x̂ + β + z), the residual z shaped like the input, in one pass.
    @differentiable(reverse)
    public func callAsFunction(_ input: [Scalar], adding residual: [Scalar], shape: BatchNormShape) -> [Scalar] {
        batchNorm(input, adding: residual, shape: shape, weight: weight, bias: bias, mode: mode,
                  running: runningStatistics, epsilon: epsilon, activation: activation, executor: executor,
                  reducer: reducer)
    }
}
