import _Differentiation
import Foundation
import BatchNormDifferentiation
import BatchNormKernels

// The building blocks of the demo's networks, each with its derivative
// written out: plain Swift loops, row-major matrices, Float.

/// x·W + b for a batch of `rows` rows of x (rows × inputs), W (inputs × outputs).
func linear(_ x: [Float], _ weight: [Float], _ bias: [Float], rows: Int) -> [Float] {
    let outputs = bias.count, inputs = weight.count / outputs
    var y = [Float](repeating: 0, count: rows * outputs)
    for i in 0..<rows {
        for j in 0..<outputs { y[i * outputs + j] = bias[j] }
        for p in 0..<inputs {
            let a = x[i * inputs + p]
            for j in 0..<outputs { y[i * outputs + j] += a * weight[p * outputs + j] }
        }
    }
    return y
}

@derivative(of: linear)
func linearVJP(_ x: [Float], _ weight: [Float], _ bias: [Float], rows: Int)
    -> (value: [Float], pullback: ([Float].TangentVector)
        -> ([Float].TangentVector, [Float].TangentVector, [Float].TangentVector))
{
    let outputs = bias.count, inputs = weight.count / outputs
    return (linear(x, weight, bias, rows: rows), { v in
        guard !v.base.isEmpty else { return (.zero, .zero, .zero) }
        let g = v.base
        var dx = [Float](repeating: 0, count: rows * inputs)
        var dw = [Float](repeating: 0, count: inputs * outputs)
        var db = [Float](repeating: 0, count: outputs)
        for i in 0..<rows {
            for j in 0..<outputs { db[j] += g[i * outputs + j] }
            for p in 0..<inputs {
                let a = x[i * inputs + p]
                var s: Float = 0
                for j in 0..<outputs {
                    s += g[i * outputs + j] * weight[p * outputs + j]
                    dw[p * outputs + j] += a * g[i * outputs + j]
                }
                dx[i * inputs + p] = s
            }
        }
        return (.init(dx), .init(dw), .init(db))
    })
}

/// max(0, x), elementwise (the networks without batch norm).
func relu(_ x: [Float]) -> [Float] { x.map { max(0, $0) } }

@derivative(of: relu)
func reluVJP(_ x: [Float]) -> (value: [Float], pullback: ([Float].TangentVector) -> [Float].TangentVector) {
    (relu(x), { v in
        guard !v.base.isEmpty else { return .zero }
        return .init(zip(x, v.base).map { $0 > 0 ? $1 : 0 })
    })
}

/// The mean over rows of the cross-entropy of softmax(logits) against `labels`.
func crossEntropy(_ logits: [Float], labels: [Int]) -> Float {
    let classes = logits.count / labels.count
    var total: Float = 0
    for (i, label) in labels.enumerated() {
        let row = logits[(i * classes)..<((i + 1) * classes)]
        let top = row.max()!
        let sum = row.reduce(0) { $0 + exp($1 - top) }
        total += log(sum) + top - row[row.startIndex + label]
    }
    return total / Float(labels.count)
}

@derivative(of: crossEntropy)
func crossEntropyVJP(_ logits: [Float], labels: [Int])
    -> (value: Float, pullback: (Float) -> [Float].TangentVector)
{
    let classes = logits.count / labels.count
    return (crossEntropy(logits, labels: labels), { v in
        var g = [Float](repeating: 0, count: logits.count)
        for (i, label) in labels.enumerated() {
            let row = logits[(i * classes)..<((i + 1) * classes)]
            let top = row.max()!
            let sum = row.reduce(0) { $0 + exp($1 - top) }
            for k in 0..<classes {
                let p = exp(logits[i * classes + k] - top) / sum
                g[i * classes + k] = v * (p - (k == label ? 1 : 0)) / Float(labels.count)
            }
        }
        return .init(g)
    })
}

/// The mean squared difference of `prediction` and `target`.
func meanSquaredError(_ prediction: [Float], _ target: [Float]) -> Float {
    zip(prediction, target).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Float(target.count)
}

@derivative(of: meanSquaredError, wrt: prediction)
func meanSquaredErrorVJP(_ prediction: [Float], _ target: [Float])
    -> (value: Float, pullback: (Float) -> [Float].TangentVector)
{
    (meanSquaredError(prediction, target), { v in
        .init(zip(prediction, target).map { 2 * v * ($0 - $1) / Float(target.count) })
    })
}

/// A multilayer perceptron, inputs → hidden → hidden → classes, with ReLUs;
/// with batch norm, each hidden layer is linear → batch norm → ReLU, the
/// ReLU fused into the batch norm (`activation: .relu`).
struct Perceptron: Differentiable {
    var w1: [Float], b1: [Float], w2: [Float], b2: [Float], w3: [Float], b3: [Float]
    var bn1: DifferentiableBatchNorm<Float>, bn2: DifferentiableBatchNorm<Float>
    @noDerivative let normalized: Bool
    @noDerivative let sizes: [Int]

    /// He-normal weights times `scale`, zero biases.
    init(sizes: [Int], normalized: Bool, scale: Float, seed: UInt64) {
        var random = Random(seed: seed)
        func weights(_ inputs: Int, _ outputs: Int) -> [Float] {
            let deviation = scale * (2 / Float(inputs)).squareRoot()
            return (0..<(inputs * outputs)).map { _ in deviation * random.normal() }
        }
        w1 = weights(sizes[0], sizes[1]); b1 = Array(repeating: 0, count: sizes[1])
        w2 = weights(sizes[1], sizes[2]); b2 = Array(repeating: 0, count: sizes[2])
        w3 = weights(sizes[2], sizes[3]); b3 = Array(repeating: 0, count: sizes[3])
        // The sizes were checked by the caller: these cannot throw.
        bn1 = try! DifferentiableBatchNorm(featureCount: sizes[1], activation: .relu, executor: .serial)
        bn2 = try! DifferentiableBatchNorm(featureCount: sizes[2], activation: .relu, executor: .serial)
        self.normalized = normalized
        self.sizes = sizes
    }

    /// The logits of `rows` examples.
    @differentiable(reverse)
    func callAsFunction(_ x: [Float], rows: Int) -> [Float] {
        let h1 = linear(x, w1, b1, rows: rows)
        let a1 = normalized ? bn1(h1, shape: shape(rows, sizes[1])) : relu(h1)
        let h2 = linear(a1, w2, b2, rows: rows)
        let a2 = normalized ? bn2(h2, shape: shape(rows, sizes[2])) : relu(h2)
        return linear(a2, w3, b3, rows: rows)
    }

    /// The same network in inference mode (running statistics), sharing them.
    var evaluating: Perceptron {
        var copy = self
        copy.bn1.mode = .inference
        copy.bn2.mode = .inference
        return copy
    }

    /// One step of gradient descent.
    mutating func descend(along g: TangentVector, rate: Float) {
        step(&w1, g.w1, rate); step(&b1, g.b1, rate)
        step(&w2, g.w2, rate); step(&b2, g.b2, rate)
        step(&w3, g.w3, rate); step(&b3, g.b3, rate)
        if normalized {
            step(&bn1.weight, g.bn1.weight, rate); step(&bn1.bias, g.bn1.bias, rate)
            step(&bn2.weight, g.bn2.weight, rate); step(&bn2.bias, g.bn2.bias, rate)
        }
    }
}

/// A (rows, channels) shape for batch norm over the rows: BN1d.
func shape(_ rows: Int, _ channels: Int) -> BatchNormShape {
    try! BatchNormShape([rows, channels])
}

/// values -= rate · gradient (an empty gradient is zero).
func step(_ values: inout [Float], _ gradient: [Float].TangentVector, _ rate: Float) {
    guard !gradient.base.isEmpty else { return }
    for i in values.indices { values[i] -= rate * gradient.base[i] }
}

/// A deterministic generator (SplitMix64) with normal deviates (Box–Muller).
struct Random {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
    mutating func normal() -> Float {
        let u = max(uniform(), 1e-7), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
}
