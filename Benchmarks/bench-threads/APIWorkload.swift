import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels

/// Which public path a figure times: what Swift code calls, not only the kernels.
enum API: String, CaseIterable, Codable {
    /// `BatchNormalization` over caller-owned buffers.
    case raw
    /// The array conveniences, returning new arrays each call.
    case arrays
    /// The array conveniences writing `into:` arrays kept from call to call.
    case arraysInto = "arrays-into"
    /// The `BatchNorm` layer, returning new arrays each call.
    case layer
    /// The layer writing `into:` arrays kept from call to call.
    case layerInto = "layer-into"
    /// `DifferentiableBatchNorm` (Float and Double): a call, or
    /// `valueWithPullback` and its pullback (forward-backward).
    case autodiff

    /// Whether this path times `mode` (autodiff has no backward without its forward).
    func times(_ mode: Mode) -> Bool { !(self == .autodiff && mode == .backward) }
}

/// One shape's arrays, a `BatchNorm` layer and the kept `into:` arrays,
/// made before any timing from a `Workload`'s data, and the calls each API,
/// mode and fused epilogue time. Returned arrays are dropped at once, as a
/// training loop drops the previous step's.
final class APIWorkload<Scalar: BenchElement> {
    let shape: BatchNormShape
    let x, dy, z: [Scalar]
    let weight, bias, runningMean, runningVariance: [Scalar.Parameter]
    /// y of a training forward with the residual and relu: the mask add-relu's backward is given.
    var residualOutput = [Scalar]()
    var layer: BatchNorm<Scalar>
    var output = [Scalar]()
    var gradients = BatchNormGradients<Scalar>()
    var statistics: BatchNormStatistics
    /// The differentiable calls, for the scalars that have them.
    let autodiff: ((Mode, Epilogue, BatchNormExecutor) -> Void)?

    init(_ workload: Workload<Scalar>) {
        shape = workload.shape
        x = Array(workload.x)
        dy = Array(workload.dy)
        z = Array(workload.z)
        weight = Array(workload.weight)
        bias = Array(workload.bias)
        runningMean = Array(workload.runningMean)
        runningVariance = Array(workload.runningVariance)
        statistics = BatchNormStatistics(mode: .training, mean: Array(workload.mean),
                                         invStd: Array(workload.invStd))
        do {
            layer = try BatchNorm<Scalar>(featureCount: shape.channels)
            residualOutput = try BatchNormalization.forwardTraining(
                x, shape: shape.dimensions, layout: shape.layout, weight: weight, bias: bias, residual: z,
                activation: .relu, executor: .serial).output
        } catch {
            fatalError("bench-threads: \(error)")
        }
        layer.weight = weight
        layer.bias = bias
        autodiff = Scalar.autodiffCalls(x: x, dy: dy, z: z, shape: shape, weight: weight, bias: bias)
        // The kept arrays' pages exist before timing, as the raw buffers' do.
        run(.arraysInto, .forwardBackward, epilogue: .addRelu, executor: .serial)
        run(.layerInto, .forwardBackward, epilogue: .addRelu, executor: .serial)
    }

    /// One call of `mode` through `api` (not `.raw`: the `Workload` times
    /// that) with a fused `epilogue` (not a separate one): the residual z
    /// and relu forward; backward, relu's mask recomputed from x, or with a
    /// residual given as the forward output, and dz.
    func run(_ api: API, _ mode: Mode, epilogue: Epilogue, executor: BatchNormExecutor) {
        precondition(!epilogue.isSeparate, "the public paths run the fused epilogues")
        let dimensions = shape.dimensions, layout = shape.layout
        let activation = epilogue.activation, residual = epilogue.hasResidual ? z : nil
        let forwardOutput = epilogue.hasResidual ? residualOutput : nil
        layer.executor = executor
        layer.activation = activation
        do {
            switch (api, mode) {
            case (.raw, _):
                preconditionFailure("the raw API is timed by Workload")
            case (.autodiff, _):
                autodiff!(mode, epilogue, executor)
            case (.arrays, .forwardTraining):
                _ = try BatchNormalization.forwardTraining(
                    x, shape: dimensions, layout: layout, weight: weight, bias: bias, residual: residual,
                    activation: activation, executor: executor)
            case (.arraysInto, .forwardTraining):
                statistics = try BatchNormalization.forwardTraining(
                    x, into: &output, shape: dimensions, layout: layout, weight: weight, bias: bias,
                    residual: residual, activation: activation, executor: executor)
            case (.arrays, .forwardInference):
                _ = try BatchNormalization.forwardInference(
                    x, shape: dimensions, layout: layout, runningMean: runningMean,
                    runningVariance: runningVariance, weight: weight, bias: bias, residual: residual,
                    activation: activation, executor: executor)
            case (.arraysInto, .forwardInference):
                try BatchNormalization.forwardInference(
                    x, into: &output, shape: dimensions, layout: layout, runningMean: runningMean,
                    runningVariance: runningVariance, weight: weight, bias: bias, residual: residual,
                    activation: activation, executor: executor)
            case (.arrays, .backward):
                _ = try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: dimensions, layout: layout, statistics: statistics,
                    weight: weight, bias: bias, activation: activation, forwardOutput: forwardOutput,
                    wantsResidualGradient: epilogue.hasResidual, executor: executor)
            case (.arraysInto, .backward):
                try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: dimensions, layout: layout, statistics: statistics,
                    weight: weight, bias: bias, activation: activation, forwardOutput: forwardOutput,
                    into: &gradients, wantsResidualGradient: epilogue.hasResidual, executor: executor)
            case (.layer, .forwardTraining), (.layer, .forwardInference):
                layer.mode = mode == .forwardTraining ? .training : .inference
                _ = try layer.forward(x, shape: dimensions, layout: layout, residual: residual)
            case (.layerInto, .forwardTraining), (.layerInto, .forwardInference):
                layer.mode = mode == .forwardTraining ? .training : .inference
                try layer.forward(x, into: &output, shape: dimensions, layout: layout, residual: residual)
            case (.layer, .backward):
                _ = try layer.backward(outputGradient: dy, input: x, shape: dimensions, layout: layout,
                                       statistics: statistics, forwardOutput: forwardOutput,
                                       wantsResidualGradient: epilogue.hasResidual)
            case (.layerInto, .backward):
                try layer.backward(outputGradient: dy, input: x, shape: dimensions, layout: layout,
                                   statistics: statistics, forwardOutput: forwardOutput, into: &gradients,
                                   wantsResidualGradient: epilogue.hasResidual)
            // A training step: y lives until its backward is done, as in a network.
            case (.arrays, .forwardBackward):
                let forward = try BatchNormalization.forwardTraining(
                    x, shape: dimensions, layout: layout, weight: weight, bias: bias, residual: residual,
                    activation: activation, executor: executor)
                let gradients = try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: dimensions, layout: layout, statistics: forward.statistics,
                    weight: weight, bias: bias, activation: activation,
                    forwardOutput: epilogue.hasResidual ? forward.output : nil,
                    wantsResidualGradient: epilogue.hasResidual, executor: executor)
                withExtendedLifetime((forward, gradients)) {}
            case (.layer, .forwardBackward):
                layer.mode = .training
                let forward = try layer.forward(x, shape: dimensions, layout: layout, residual: residual)
                let gradients = try layer.backward(outputGradient: dy, input: x, shape: dimensions, layout: layout,
                                                   statistics: forward.statistics,
                                                   forwardOutput: epilogue.hasResidual ? forward.output : nil,
                                                   wantsResidualGradient: epilogue.hasResidual)
                withExtendedLifetime((forward, gradients)) {}
            case (.arraysInto, .forwardBackward), (.layerInto, .forwardBackward):
                run(api, .forwardTraining, epilogue: epilogue, executor: executor)
                // add-relu's backward is given this forward's y as its mask
                if epilogue.hasResidual { swap(&output, &residualOutput) }
                run(api, .backward, epilogue: epilogue, executor: executor)
                if epilogue.hasResidual { swap(&output, &residualOutput) }
            }
        } catch {
            fatalError("bench-threads: \(error)")
        }
    }
}

extension BenchElement {
    /// The half formats have no differentiable API.
    static func autodiffCalls(
        x: [Self], dy: [Self], z: [Self], shape: BatchNormShape, weight: [Parameter], bias: [Parameter]
    ) -> ((Mode, Epilogue, BatchNormExecutor) -> Void)? { nil }
}

extension BenchElement where Self: DifferentiableBatchNormScalar {
    /// A `DifferentiableBatchNorm` over `x` (and, with a residual, `z`): a
    /// training or inference call, or `valueWithPullback` at the input (and
    /// the residual) and the layer, and the pullback of `dy`.
    static func differentiableCalls(
        x: [Self], dy: [Self], z: [Self], shape: BatchNormShape, weight: [Self], bias: [Self]
    ) -> ((Mode, Epilogue, BatchNormExecutor) -> Void)? {
        var layer: DifferentiableBatchNorm<Self>
        do {
            layer = try DifferentiableBatchNorm<Self>(featureCount: shape.channels)
        } catch {
            fatalError("bench-threads: \(error)")
        }
        layer.weight = weight
        layer.bias = bias
        let tangent = [Self].TangentVector(dy)
        return { mode, epilogue, executor in
            layer.executor = executor
            layer.activation = epilogue.activation
            layer.mode = mode == .forwardInference ? .inference : .training
            switch (mode == .forwardBackward, epilogue.hasResidual) {
            case (true, false):
                let (y, pullback) = valueWithPullback(at: x, layer) { x, layer in layer(x, shape: shape) }
                let gradients = pullback(tangent)
                withExtendedLifetime((y, gradients)) {}
            case (true, true):
                let (y, pullback) = valueWithPullback(at: x, z, layer) { x, z, layer in
                    layer(x, adding: z, shape: shape)
                }
                let gradients = pullback(tangent)
                withExtendedLifetime((y, gradients)) {}
            case (false, false):
                _ = layer(x, shape: shape)
            case (false, true):
                _ = layer(x, adding: z, shape: shape)
            }
        }
    }
}
