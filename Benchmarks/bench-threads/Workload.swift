import BatchNormKernels
import BatchNormReference
import CBenchSupport

import Dispatch

/// The kind of input data a run uses.
enum DataKind: String, CaseIterable, Codable {
    case normal, subnormal, shifted
}

/// What follows batch norm: nothing, the fused epilogues, or the same work as
/// a user would do it without them (our batch norm, then a separate
/// elementwise pass over the tensor on the same threads; backward: the relu
/// mask pass, whose output is also dz, then our backward).
enum Epilogue: String, CaseIterable, Codable {
    case none
    case relu
    case addRelu = "add-relu"
    case reluSeparate = "relu-separate"
    case addReluSeparate = "add-relu-separate"

    var activation: BatchNormActivation { self == .relu || self == .addRelu ? .relu : .identity }
    var hasResidual: Bool { self == .addRelu || self == .addReluSeparate }
    var isSeparate: Bool { self == .reluSeparate || self == .addReluSeparate }
}

/// One shape's buffers, allocated and written once before any timing, and
/// the calls each mode times.
final class Workload<Scalar: BenchElement> {
    let shape: BatchNormShape
    let x, dy, y, dx: UnsafeMutableBufferPointer<Scalar>
    /// The residual z, its gradient dz, and the masked gradient of the separate passes.
    let z, dz, masked: UnsafeMutableBufferPointer<Scalar>
    let weight, bias, runningMean, runningVariance, dWeight, dBias: UnsafeMutableBufferPointer<Scalar.Parameter>
    let mean, invStd: UnsafeMutableBufferPointer<Double>

    /// The memory of every buffer above, freed with the workload.
    private let allocations: [UnsafeMutableRawPointer]

    /// `data` scales the inputs: `.subnormal` makes every x a float subnormal (×1e-40),
    /// `.shifted` centres them at 1e4. With `tensorOffset`, each tensor-sized
    /// buffer starts that many bytes past a 4 KiB boundary; without, where
    /// the allocator puts it.
    init(shape: BatchNormShape, data: DataKind = .normal, tensorOffset: Int? = nil) {
        self.shape = shape
        let count = shape.count, channels = shape.channels
        var allocations = [UnsafeMutableRawPointer]()
        /// `n` values from `value`; with `placed`, `placed` bytes past a 4 KiB boundary.
        func buffer<T>(_ n: Int, placed: Int? = nil, _ value: (Int) -> T) -> UnsafeMutableBufferPointer<T> {
            let raw = UnsafeMutableRawPointer.allocate(
                byteCount: n * MemoryLayout<T>.stride + (placed.map { 4096 + $0 } ?? 0),
                alignment: placed == nil ? MemoryLayout<T>.alignment : 4096)
            allocations.append(raw)
            let b = UnsafeMutableBufferPointer(start: (raw + (placed ?? 0)).bindMemory(to: T.self, capacity: n),
                                               count: n)
            for i in 0..<n { b.initializeElement(at: i, to: value(i)) }
            return b
        }
        func tensor(_ value: (Int) -> Scalar) -> UnsafeMutableBufferPointer<Scalar> {
            buffer(count, placed: tensorOffset, value)
        }
        // Deterministic, varied data; every output is written here so that its pages exist.
        x = tensor { i in
            let v = Double((i &* 7919) % 1009) / 250 - 1.5
            switch data {
            case .normal: return Scalar(benchValue: v)
            case .subnormal: return Scalar(benchValue: v * 1e-40)
            case .shifted: return Scalar(benchValue: 1e4 + v)
            }
        }
        dy = tensor { Scalar(benchValue: Double(($0 &* 104_729) % 997) / 500 - 1) }
        z = tensor { Scalar(benchValue: Double(($0 &* 7_727) % 991) / 500 - 1) }
        dz = tensor { _ in Scalar.zero }
        masked = tensor { _ in Scalar.zero }
        y = tensor { _ in Scalar.zero }
        dx = tensor { _ in Scalar.zero }
        weight = buffer(channels) { Scalar.Parameter(1 + Double($0 % 5) / 10) }
        bias = buffer(channels) { Scalar.Parameter(Double($0 % 3) / 10) }
        runningMean = buffer(channels) { _ in 0.25 }
        runningVariance = buffer(channels) { _ in 1.5 }
        dWeight = buffer(channels) { _ in 0 }
        dBias = buffer(channels) { _ in 0 }
        mean = buffer(channels) { _ in 0.0 }
        invStd = buffer(channels) { _ in 0.0 }
        self.allocations = allocations
        // Statistics for backward come from a real forward pass.
        run(.forwardTraining, executor: .serial)
    }

    deinit {
        for raw in allocations { raw.deallocate() }
        readSlots.deallocate()
    }

    /// Makes y and the saved statistics those of a training forward pass with
    /// `epilogue` (what backward with that epilogue needs), untimed.
    func prepare(_ epilogue: Epilogue) {
        run(.forwardTraining, epilogue: epilogue, executor: .serial)
    }

    /// One call of `mode` with `epilogue`: affine, with saved statistics
    /// (forward training) and all gradients through the batch statistics
    /// (backward; dz too with a residual).
    func run(_ mode: Mode, epilogue: Epilogue = .none, executor: BatchNormExecutor) {
        let residual = epilogue.hasResidual && !epilogue.isSeparate ? UnsafeBufferPointer(z) : nil
        let activation = epilogue.activation
        do {
            switch mode {
            case .forwardBackward:
                run(.forwardTraining, epilogue: epilogue, executor: executor)
                run(.backward, epilogue: epilogue, executor: executor)
                return
            case .forwardTraining:
                try BatchNormalization.forwardTraining(
                    input: UnsafeBufferPointer(x), output: y, shape: shape, weight: UnsafeBufferPointer(weight),
                    bias: UnsafeBufferPointer(bias), residual: residual, activation: activation,
                    savedMean: mean, savedInvStd: invStd, executor: executor)
            case .forwardInference:
                try BatchNormalization.forwardInference(
                    input: UnsafeBufferPointer(x), output: y, shape: shape,
                    runningMean: UnsafeBufferPointer(runningMean), runningVariance: UnsafeBufferPointer(runningVariance),
                    weight: UnsafeBufferPointer(weight), bias: UnsafeBufferPointer(bias), residual: residual,
                    activation: activation, executor: executor)
            case .backward:
                if epilogue.isSeparate { maskPass(threads: executor.threads) }
                try BatchNormalization.backward(
                    mode: .training, input: UnsafeBufferPointer(x),
                    outputGradient: UnsafeBufferPointer(epilogue.isSeparate ? masked : dy),
                    shape: shape, mean: UnsafeBufferPointer(mean), invStd: UnsafeBufferPointer(invStd),
                    weight: UnsafeBufferPointer(weight), bias: UnsafeBufferPointer(bias), inputGradient: dx,
                    weightGradient: dWeight, biasGradient: dBias, activation: activation,
                    // relu's mask: the forward output's after a residual, else recomputed from x
                    forwardOutput: epilogue == .addRelu ? UnsafeBufferPointer(y) : nil,
                    residualGradient: epilogue == .addRelu ? dz : nil, executor: executor)
            }
        } catch {
            fatalError("bench-threads: \(error)")
        }
        if mode != .backward && epilogue.isSeparate { activationPass(residual: epilogue.hasResidual, threads: executor.threads) }
    }

    /// What the reads of `readOutput` add up to, kept so that they are not optimized away.
    private(set) var readSum: UInt64 = 0
    /// Each Dispatch worker's sum in `readOutput`, kept from call to call.
    private var readSlots = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: 0)

    /// The next layer's read of what `mode` wrote (y, or dx after backward),
    /// on the executor's kind of threads: an OpenMP team, Dispatch workers,
    /// or the calling thread.
    func readOutput(of mode: Mode, executor: BatchNormExecutor) {
        let output = mode == .backward || mode == .forwardBackward ? dx : y
        nonisolated(unsafe) let base = UnsafeRawPointer(output.baseAddress!)
        let bytes = output.count * MemoryLayout<Scalar>.stride, threads = executor.threads
        switch executor {
        case .openMP:
            readSum &+= cbench_read_words_openmp(base, Int64(bytes), Int32(threads))
        case .dispatch:
            let words = bytes / 8
            if readSlots.count < threads {   // once per thread count, in the untimed warm-up calls
                readSlots.deallocate()
                readSlots = .allocate(capacity: threads)
            }
            nonisolated(unsafe) let slots = readSlots
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let begin = words * t / threads, end = words * (t + 1) / threads
                slots[t] = cbench_read_words(base + 8 * begin, Int64(8 * (end - begin)))
            }
            readSum = slots.prefix(threads).reduce(readSum, &+)
        case .serial:
            readSum &+= cbench_read_words(base, Int64(bytes))
        }
    }

    /// The separate forward pass: y = max(0, y (+ z)), vectorized C on `threads` threads.
    private func activationPass(residual: Bool, threads: Int) {
        nonisolated(unsafe) let y = UnsafeMutableRawPointer(y.baseAddress!)
        nonisolated(unsafe) let z = residual ? UnsafeRawPointer(z.baseAddress!) : nil
        let isFloat = Scalar.self == Float.self
        precondition(isFloat || Scalar.self == Double.self, "the separate epilogue passes are float and double only")
        parallelChunks(threads: threads) { range in
            let n = Int64(range.count)
            if isFloat {
                cbench_relu_f32(y.assumingMemoryBound(to: Float.self) + range.lowerBound,
                                z.map { $0.assumingMemoryBound(to: Float.self) + range.lowerBound }, n)
            } else {
                cbench_relu_f64(y.assumingMemoryBound(to: Double.self) + range.lowerBound,
                                z.map { $0.assumingMemoryBound(to: Double.self) + range.lowerBound }, n)
            }
        }
    }

    /// The separate backward pass: g = dy where y > 0, else 0 (g is also dz).
    private func maskPass(threads: Int) {
        nonisolated(unsafe) let g = UnsafeMutableRawPointer(masked.baseAddress!)
        nonisolated(unsafe) let dy = UnsafeRawPointer(dy.baseAddress!), y = UnsafeRawPointer(y.baseAddress!)
        let isFloat = Scalar.self == Float.self
        precondition(isFloat || Scalar.self == Double.self, "the separate epilogue passes are float and double only")
        parallelChunks(threads: threads) { range in
            let n = Int64(range.count), at = range.lowerBound
            if isFloat {
                cbench_relu_mask_f32(g.assumingMemoryBound(to: Float.self) + at,
                                     dy.assumingMemoryBound(to: Float.self) + at,
                                     y.assumingMemoryBound(to: Float.self) + at, n)
            } else {
                cbench_relu_mask_f64(g.assumingMemoryBound(to: Double.self) + at,
                                     dy.assumingMemoryBound(to: Double.self) + at,
                                     y.assumingMemoryBound(to: Double.self) + at, n)
            }
        }
    }

    private func parallelChunks(threads: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let count = shape.count
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            body((count * t / threads)..<(count * (t + 1) / threads))
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
        case .forwardBackward:
            run(.forwardTraining)
            run(.backward)
        case .backward:
            _ = ReferenceBatchNorm.backward(x, outputGradient: dy, shape: dimensions, channelsLast: channelsLast,
                                            training: true,
                                            mean: forward.mean, invStd: forward.invStd, weight: weight)
        }
    }
}
