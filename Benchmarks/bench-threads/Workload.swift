import BatchNormKernels
import BatchNormReference

/// The kind of input data a run uses.
enum DataKind: String, CaseIterable, Codable {
    case normal, subnormal, shifted
}

/// One shape's buffers, allocated and written once before any timing, and
/// the calls each mode times.
final class Workload<Scalar: BatchNormScalar> {
    let shape: BatchNormShape
    let x, dy, y, dx: UnsafeMutableBufferPointer<Scalar>
    let weight, bias, runningMean, runningVariance, dWeight, dBias: UnsafeMutableBufferPointer<Scalar>
    let mean, invStd: UnsafeMutableBufferPointer<Double>

    /// `data` scales the inputs: `.subnormal` makes every x a float subnormal (×1e-40),
    /// `.shifted` centres them at 1e4.
    init(shape: BatchNormShape, data: DataKind = .normal) {
        self.shape = shape
        let count = shape.count, channels = shape.channels
        func buffer<T: BinaryFloatingPoint>(_ n: Int, _ value: (Int) -> T) -> UnsafeMutableBufferPointer<T> {
            let b = UnsafeMutableBufferPointer<T>.allocate(capacity: n)
            for i in 0..<n { b.initializeElement(at: i, to: value(i)) }
            return b
        }
        // Deterministic, varied data; every output is written here so that its pages exist.
        x = buffer(count) { i in
            let v = Double((i &* 7919) % 1009) / 250 - 1.5
            switch data {
            case .normal: return Scalar(v)
            case .subnormal: return Scalar(v * 1e-40)
            case .shifted: return Scalar(1e4 + v)
            }
        }
        dy = buffer(count) { Scalar(Double(($0 &* 104_729) % 997) / 500 - 1) }
        y = buffer(count) { _ in 0 }
        dx = buffer(count) { _ in 0 }
        weight = buffer(channels) { Scalar(1 + Double($0 % 5) / 10) }
        bias = buffer(channels) { Scalar(Double($0 % 3) / 10) }
        runningMean = buffer(channels) { _ in 0.25 }
        runningVariance = buffer(channels) { _ in 1.5 }
        dWeight = buffer(channels) { _ in 0 }
        dBias = buffer(channels) { _ in 0 }
        mean = buffer(channels) { _ in 0 }
        invStd = buffer(channels) { _ in 0 }
        // Statistics for backward come from a real forward pass.
        run(.forwardTraining, executor: .serial)
    }

    deinit {
        for b in [x, dy, y, dx, weight, bias, runningMean, runningVariance, dWeight, dBias] { b.deallocate() }
        mean.deallocate()
        invStd.deallocate()
    }

    /// One call of `mode`: affine, with saved statistics (forward training) and
    /// all three gradients through the batch statistics (backward).
    func run(_ mode: Mode, executor: BatchNormExecutor) {
        do {
            switch mode {
            case .forwardTraining:
                try BatchNormalization.forwardTraining(
                    input: UnsafeBufferPointer(x), output: y, shape: shape, weight: UnsafeBufferPointer(weight),
                    bias: UnsafeBufferPointer(bias), savedMean: mean, savedInvStd: invStd, executor: executor)
            case .forwardInference:
                try BatchNormalization.forwardInference(
                    input: UnsafeBufferPointer(x), output: y, shape: shape,
                    runningMean: UnsafeBufferPointer(runningMean), runningVariance: UnsafeBufferPointer(runningVariance),
                    weight: UnsafeBufferPointer(weight), bias: UnsafeBufferPointer(bias), executor: executor)
            case .backward:
                try BatchNormalization.backward(
                    mode: .training, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy),
                    shape: shape, mean: UnsafeBufferPointer(mean), invStd: UnsafeBufferPointer(invStd),
                    weight: UnsafeBufferPointer(weight), inputGradient: dx, weightGradient: dWeight,
                    biasGradient: dBias, executor: executor)
            }
        } catch {
            fatalError("bench-threads: \(error)")
        }
    }
}

/// The pure-Swift float64 reference on a sample of the batch: the first N'
/// images, N' chosen so that the sample has at most `limit` values.
struct ReferenceSample {
    let dimensions: [Int]
    let channelsLast: Bool
    let x, dy: [Double]
    let weight, bias: [Double]
    let forward: ReferenceBatchNorm.Forward

    init(shape: BatchNormShape, limit: Int = 1 << 19) {
        var dimensions = shape.dimensions
        let perImage = shape.count / shape.batchSize
        dimensions[0] = max(2, min(shape.batchSize, limit / perImage))
        self.dimensions = dimensions
        channelsLast = shape.layout == .channelsLast
        let count = dimensions.reduce(1, *)
        x = (0..<count).map { Double(($0 &* 7919) % 1009) / 250 - 1.5 }
        dy = (0..<count).map { Double(($0 &* 104_729) % 997) / 500 - 1 }
        weight = (0..<shape.channels).map { 1 + Double($0 % 5) / 10 }
        bias = (0..<shape.channels).map { Double($0 % 3) / 10 }
        forward = ReferenceBatchNorm.forward(x, shape: dimensions, channelsLast: channelsLast, training: true,
                                             weight: weight, bias: bias)
    }

    var count: Int { x.count }

    func run(_ mode: Mode) {
        switch mode {
        case .forwardTraining:
            _ = ReferenceBatchNorm.forward(x, shape: dimensions, channelsLast: channelsLast, training: true,
                                           weight: weight, bias: bias)
        case .forwardInference:
            let channels = weight.count
            _ = ReferenceBatchNorm.forward(x, shape: dimensions, channelsLast: channelsLast, training: false,
                                           weight: weight, bias: bias,
                                           runningMean: Array(repeating: 0.25, count: channels),
                                           runningVariance: Array(repeating: 1.5, count: channels))
        case .backward:
            _ = ReferenceBatchNorm.backward(x, outputGradient: dy, shape: dimensions, channelsLast: channelsLast,
                                            training: true,
                                            mean: forward.mean, invStd: forward.invStd, weight: weight)
        }
    }
}
