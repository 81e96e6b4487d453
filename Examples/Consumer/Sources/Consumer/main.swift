import BatchNormKernels

// The raw kernels, in place over caller-owned memory (the README's first example).
let shape = try BatchNormShape([4, 3, 5, 5])
var x = (0..<shape.count).map { Float($0 % 17) * 0.25 }
var mean = [Double](repeating: 0, count: 3), invStd = mean
try x.withUnsafeMutableBufferPointer { x in
    try mean.withUnsafeMutableBufferPointer { mean in
        try invStd.withUnsafeMutableBufferPointer { invStd in
            try BatchNormalization.forwardTraining(
                input: UnsafeBufferPointer(x), output: x, shape: shape,
                savedMean: mean, savedInvStd: invStd, executor: .automatic)
        }
    }
}
var channelSum: Float = 0
for n in 0..<4 {
    let start = n * 3 * 25
    channelSum += x[start..<(start + 25)].reduce(0, +)
}
let channelMean = channelSum / 100
print("raw kernel: channel 0 mean after normalization \(channelMean), saved μ \(mean)")
precondition(abs(channelMean) < 1e-5)

// The layer type (the README's second example).
var bn = try BatchNorm<Float>(featureCount: 3)
let input = (0..<shape.count).map { Float($0 % 11) }
let dy = input.map { $0 * 0.1 - 0.5 }
let forward = try bn.forward(input, shape: shape.dimensions)
let grads = try bn.backward(outputGradient: dy, input: input, shape: shape.dimensions,
                            statistics: forward.statistics)
bn.mode = .inference
let inference = try bn.forward(input, shape: shape.dimensions)
print("layer: running mean \(bn.runningMean!), dγ \(grads.weight!), dβ \(grads.bias!), inference y[0] \(inference.output[0])")

// The same through arrays kept from step to step: their storage is reused.
var y = [Float](), gradients = BatchNormGradients<Float>()
bn.mode = .training
for _ in 0..<3 {
    let statistics = try bn.forward(input, into: &y, shape: shape.dimensions)
    try bn.backward(outputGradient: dy, input: input, shape: shape.dimensions, statistics: statistics,
                    into: &gradients)
}
print("into: arrays: y[0] \(y[0]), dx[0] \(gradients.input![0])")

// A mistake is a typed error, not a crash.
do {
    _ = try bn.forward(input, shape: [4, 2, 5, 5])
} catch {
    print("typed error: \(error)")
}
print("OpenMP compiled in: \(isOpenMPAvailable)")
