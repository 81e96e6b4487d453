import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import Dispatch
import Foundation

/// Labelled points: `features` per example, row-major.
struct Dataset {
    var x: [Float]
    var labels: [Int]
    let features: Int
    var count: Int { labels.count }

    /// Examples `range` as a minibatch.
    func rows(_ range: Range<Int>) -> (x: [Float], labels: [Int]) {
        (Array(x[(range.lowerBound * features)..<(range.upperBound * features)]), Array(labels[range]))
    }
}

/// A classification problem from a fixed seed: z ~ N(0, 1) in `features`
/// dimensions, labelled by a random two-layer ReLU teacher, and observed as
/// x_j = s_j·z_j + o_j with scales s_j from e^−2 to e^2 and offsets o_j in
/// ±3, so the raw inputs are badly scaled, as real features often are.
/// Returns a training and a test set.
func makeProblem(train: Int, test: Int, features: Int = 16, classes: Int = 4, seed: UInt64) -> (Dataset, Dataset) {
    var random = Random(seed: seed)
    let hidden = 32
    let teacher1 = (0..<(features * hidden)).map { _ in random.normal() }
    let teacher2 = (0..<(hidden * classes)).map { _ in random.normal() }
    let scales = (0..<features).map { _ in exp(4 * random.uniform() - 2) }
    let offsets = (0..<features).map { _ in 6 * random.uniform() - 3 }
    func make(_ count: Int) -> Dataset {
        var x = [Float](), labels = [Int]()
        for _ in 0..<count {
            let z = (0..<features).map { _ in random.normal() }
            let h = relu(linear(z, teacher1, Array(repeating: 0, count: hidden), rows: 1))
            let logits = linear(h, teacher2, Array(repeating: 0, count: classes), rows: 1)
            labels.append(logits.indices.max { logits[$0] < logits[$1] }!)
            x += (0..<features).map { scales[$0] * z[$0] + offsets[$0] }
        }
        return Dataset(x: x, labels: labels, features: features)
    }
    return (make(train), make(test))
}

/// What one training run of the perceptron gives.
struct Run {
    /// (step, mean training loss over the steps since the last point)
    var curve: [(x: Double, y: Double)] = []
    var testLoss = Double.nan
    var testAccuracy = Double.nan
    var diverged: Bool { !testLoss.isFinite }
}

/// Trains a perceptron with minibatch SGD and evaluates it on `test` (batch
/// norm in inference mode, with its running statistics).
func train(sizes: [Int], normalized: Bool, rate: Float, scale: Float, steps: Int, batch: Int,
           data: (train: Dataset, test: Dataset), seed: UInt64) -> Run {
    var model = Perceptron(sizes: sizes, normalized: normalized, scale: scale, seed: seed)
    var run = Run()
    var window: [Double] = []
    let every = max(1, steps / 40)
    for step in 0..<steps {
        let start = (step * batch) % (data.train.count - batch + 1)
        let (x, labels) = data.train.rows(start..<(start + batch))
        let (loss, g) = valueWithGradient(at: model) { model in crossEntropy(model(x, rows: batch), labels: labels) }
        guard loss.isFinite else { return run }   // diverged: no test figures
        model.descend(along: g, rate: rate)
        window.append(Double(loss))
        if (step + 1) % every == 0 {
            run.curve.append((Double(step + 1), window.reduce(0, +) / Double(window.count)))
            window = []
        }
    }
    let evaluating = model.evaluating
    let logits = evaluating(data.test.x, rows: data.test.count)
    run.testLoss = Double(crossEntropy(logits, labels: data.test.labels))
    let classes = sizes.last!
    let correct = data.test.labels.indices.filter { i in
        let row = logits[(i * classes)..<((i + 1) * classes)]
        return row.indices.max { row[$0] < row[$1] }! - i * classes == data.test.labels[i]
    }.count
    run.testAccuracy = Double(correct) / Double(data.test.count)
    return run
}

// MARK: 1. The deep linear chain

/// ŷ = x·w₁·w₂·…·w_l with one unit per layer; with batch norm, the last
/// hidden layer h_{l−1} = x·w₁·…·w_{l−1} is normalized before w_l.
struct DeepChain: Differentiable {
    var lower: [Float]          // w₁ … w_{l−1}
    var top: Float              // w_l
    var bn: DifferentiableBatchNorm<Float>
    @noDerivative let normalized: Bool

    @differentiable(reverse, wrt: self)
    func callAsFunction(_ x: [Float]) -> [Float] {
        let h = chain(x, lower)
        return scaled(normalized ? bn(h, shape: shape(x.count, 1)) : h, by: top)
    }
}

/// x·Π wᵢ for every x.
func chain(_ x: [Float], _ w: [Float]) -> [Float] {
    let product = w.reduce(1, *)
    return x.map { $0 * product }
}

@derivative(of: chain)
func chainVJP(_ x: [Float], _ w: [Float])
    -> (value: [Float], pullback: ([Float].TangentVector) -> ([Float].TangentVector, [Float].TangentVector))
{
    let product = w.reduce(1, *)
    return (chain(x, w), { v in
        guard !v.base.isEmpty else { return (.zero, .zero) }
        let xv = zip(x, v.base).reduce(0) { $0 + $1.0 * $1.1 }
        let dw = w.indices.map { i in xv * w.indices.reduce(1) { $1 == i ? $0 : $0 * w[$1] } }
        return (.init(v.base.map { $0 * product }), .init(dw))
    })
}

/// a·w for every a.
func scaled(_ a: [Float], by w: Float) -> [Float] { a.map { $0 * w } }

@derivative(of: scaled)
func scaledVJP(_ a: [Float], by w: Float)
    -> (value: [Float], pullback: ([Float].TangentVector) -> ([Float].TangentVector, Float))
{
    (scaled(a, by: w), { v in
        guard !v.base.isEmpty else { return (.zero, 0) }
        return (.init(v.base.map { $0 * w }), zip(a, v.base).reduce(0) { $0 + $1.0 * $1.1 })
    })
}

/// The final training loss of full-batch gradient descent on the chain, or
/// nil when it diverged. Targets y = −2x (+ a little noise), weights start
/// at 1.25 ± 0.05: the product is 1.25^l, far from the target.
func trainChain(depth: Int, normalized: Bool, rate: Float, steps: Int, seed: UInt64) -> Double? {
    var random = Random(seed: seed)
    let x = (0..<256).map { _ in random.normal() }
    let y = x.map { -2 * $0 + 0.1 * random.normal() }
    var model = DeepChain(
        lower: (0..<(depth - 1)).map { _ in 1.25 + 0.1 * random.uniform() - 0.05 },
        top: 1.25, bn: try! DifferentiableBatchNorm(featureCount: 1, executor: .serial), normalized: normalized)
    var loss: Float = .nan
    for _ in 0..<steps {
        let (value, g) = valueWithGradient(at: model) { model in meanSquaredError(model(x), y) }
        loss = value
        guard loss.isFinite, loss < 1e6 else { return nil }
        step(&model.lower, g.lower, rate)
        model.top -= rate * g.top
        if normalized {
            step(&model.bn.weight, g.bn.weight, rate)
            step(&model.bn.bias, g.bn.bias, rate)
        }
    }
    let final = meanSquaredError(model(x), y)
    return final.isFinite && final < 1e6 ? Double(final) : nil
}

// MARK: 4. Time

/// Median milliseconds of `body` over `repetitions` calls.
func milliseconds(_ repetitions: Int, _ body: () -> Void) -> Double {
    var times: [Double] = []
    for _ in 0..<repetitions {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    }
    return times.sorted()[times.count / 2]
}
