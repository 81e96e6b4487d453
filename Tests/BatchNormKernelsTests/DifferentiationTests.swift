import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import Testing

/// Σ aᵢ·bᵢ, differentiable (by the derivative below): its pullback hands
/// `b`·v to whatever made `a` and `a`·v to whatever made `b`.
func dot<S: DifferentiableBatchNormScalar>(_ a: [S], _ b: [S]) -> S {
    zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
}

@derivative(of: dot)
func dotVJP<S: DifferentiableBatchNormScalar>(_ a: [S], _ b: [S])
    -> (value: S, pullback: (S) -> ([S].TangentVector, [S].TangentVector))
{
    (dot(a, b), { v in (.init(b.map { $0 * v }), .init(a.map { $0 * v })) })
}

/// The row-major product of a (m × k) and b (k × n), differentiable in both.
func matmul(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for p in 0..<k { for j in 0..<n { c[i * n + j] += a[i * k + p] * b[p * n + j] } } }
    return c
}

@derivative(of: matmul)
func matmulVJP(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int)
    -> (value: [Double], pullback: ([Double].TangentVector) -> ([Double].TangentVector, [Double].TangentVector))
{
    (matmul(a, b, m, k, n), { v in
        var da = [Double](repeating: 0, count: m * k), db = [Double](repeating: 0, count: k * n)
        let g = v.base.isEmpty ? [Double](repeating: 0, count: m * n) : v.base
        for i in 0..<m { for p in 0..<k { for j in 0..<n {
            da[i * k + p] += g[i * n + j] * b[p * n + j]
            db[p * n + j] += a[i * k + p] * g[i * n + j]
        } } }
        return (.init(da), .init(db))
    })
}

/// Two linear layers with batch norm and a ReLU (fused into it) between:
/// loss = Σ (relu(BN(x·W₁))·W₂ − target)² / N.
struct SmallModel: Differentiable {
    var w1: [Double], w2: [Double]
    var bn: DifferentiableBatchNorm<Double>
    @noDerivative let inputs = 5, hidden = 6, outputs = 3, batch = 8

    @differentiable(reverse)
    func loss(_ x: [Double], _ target: [Double]) -> Double {
        let h = matmul(x, w1, batch, inputs, hidden)
        let a = bn(h, shape: try! BatchNormShape([batch, hidden]))
        let out = matmul(a, w2, batch, hidden, outputs)
        return dot(out, out) / Double(batch) - 2 * dot(out, target) / Double(batch)
    }
}

/// Swift's automatic differentiation through the package's kernels.
@Suite struct DifferentiationTests {
    static let shapes: [(nchw: [Int], layout: BatchNormLayout)] = [
        ([4, 3, 5, 5], .channelsFirst), ([4, 3, 5, 5], .channelsLast), ([16, 20], .channelsFirst),
        ([2, 40, 7, 7], .channelsLast),
    ]

    func checkBitwise<S: DifferentiableBatchNormScalar>(
        _: S.Type, nchw: [Int], layout: BatchNormLayout, mode: BatchNormMode, activation: BatchNormActivation
    ) throws {
        let shape = try BatchNormShape(dimensions(nchw, in: layout), layout: layout)
        let channels = nchw[1]
        let x: [S] = randomValues(shape.count, center: 2, spread: 3, seed: 11)
        let w: [S] = randomValues(shape.count, seed: 12)
        // With the relu, the residual block's form y = relu(BN(x) + z).
        let z: [S]? = activation == .relu ? randomValues(shape.count, seed: 15) : nil
        var layer = try DifferentiableBatchNorm<S>(featureCount: channels, mode: mode, activation: activation)
        layer.weight = randomValues(channels, center: 1, spread: 0.5, seed: 13)
        layer.bias = randomValues(channels, seed: 14)
        let (dLayer, dx, dz): (DifferentiableBatchNorm<S>.TangentVector, [S].TangentVector, [S].TangentVector)
        if let z {
            (dLayer, dx, dz) = gradient(at: layer, x, z) { layer, x, z in dot(layer(x, adding: z, shape: shape), w) }
        } else {
            (dLayer, dx) = gradient(at: layer, x) { layer, x in dot(layer(x, shape: shape), w) }
            dz = .zero
        }

        // The same call by hand: forward, then backward with dy = w.
        var explicit = try BatchNorm<S>(featureCount: channels, mode: mode, activation: activation)
        explicit.weight = layer.weight
        explicit.bias = layer.bias
        let forward = try explicit.forward(x, shape: shape.dimensions, layout: layout, residual: z)
        let want = try explicit.backward(outputGradient: w, input: x, shape: shape.dimensions, layout: layout,
                                         statistics: forward.statistics, forwardOutput: forward.output,
                                         wantsResidualGradient: z != nil)
        let context = "\(nchw) \(layout) \(mode) \(activation) \(S.self)"
        #expect(dx.base.map(bitPattern) == want.input!.map(bitPattern), "\(context): dx")
        #expect(dz.base.map(bitPattern) == (want.residual ?? []).map(bitPattern), "\(context): dz")
        #expect(dLayer.weight.base.map(bitPattern) == want.weight!.map(bitPattern), "\(context): dγ")
        #expect(dLayer.bias.base.map(bitPattern) == want.bias!.map(bitPattern), "\(context): dβ")
        #expect(layer.runningStatistics!.mean.map(bitPattern) == explicit.runningMean!.map(bitPattern), "\(context)")
    }

    @Test func gradientsAreTheExplicitBackwardBitForBit() throws {
        for (nchw, layout) in Self.shapes {
            for mode in [BatchNormMode.training, .inference] {
                for activation in BatchNormActivation.allCases {
                    try checkBitwise(Float.self, nchw: nchw, layout: layout, mode: mode, activation: activation)
                    try checkBitwise(Double.self, nchw: nchw, layout: layout, mode: mode, activation: activation)
                }
            }
        }
    }

    /// Over an in-process group of ranks, the differentiable layer with a
    /// reducer gives what the synchronized kernels give, bit for bit.
    @Test func synchronizedGradientsAreTheSynchronizedBackwardBitForBit() throws {
        let slices = [2, 3], image = 4 * 9, channels = 4
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(60))
        let all: [Double] = randomValues(5 * image, center: 1, spread: 2, seed: 41)
        let outcomes = onRanks(2) { rank -> Bool in
            let start = slices[..<rank].reduce(0, +) * image
            let x = Array(all[start..<(start + slices[rank] * image)])
            let w: [Double] = randomValues(x.count, seed: UInt64(42 + rank))
            guard let shape = try? BatchNormShape([slices[rank], channels, 3, 3]),
                  let layer = try? DifferentiableBatchNorm<Double>(featureCount: channels, reducer: reducers[rank]),
                  var explicit = try? BatchNorm<Double>(featureCount: channels)
            else { return false }
            let (dLayer, dx) = gradient(at: layer, x) { layer, x in dot(layer(x, shape: shape), w) }
            guard let forward = try? explicit.forward(x, shape: shape.dimensions, reducer: reducers[rank]),
                  let want = try? explicit.backward(outputGradient: w, input: x, shape: shape.dimensions,
                                                    statistics: forward.statistics, reducer: reducers[rank])
            else { return false }
            return dx.base.map(\.bitPattern) == want.input!.map(\.bitPattern)
                && dLayer.weight.base.map(\.bitPattern) == want.weight!.map(\.bitPattern)
                && dLayer.bias.base.map(\.bitPattern) == want.bias!.map(\.bitPattern)
                && layer.runningStatistics!.variance == explicit.runningVariance!
        }
        #expect(outcomes == [true, true])
    }

    @Test func runningStatisticsUpdateOncePerForwardPass() throws {
        let shape = try BatchNormShape([6, 4, 3])
        let x: [Float] = randomValues(shape.count, center: 3, seed: 21)
        let layer = try DifferentiableBatchNorm<Float>(featureCount: 4, momentum: 0.5)
        let (_, pullback) = valueWithPullback(at: layer) { layer in dot(layer(x, shape: shape), x) }
        _ = pullback(1)
        _ = pullback(2)
        #expect(layer.runningStatistics!.batchesTracked == 1)
        _ = gradient(at: x) { x in dot(layer(x, shape: shape), x) }
        #expect(layer.runningStatistics!.batchesTracked == 2)
        _ = layer(x, shape: shape)
        #expect(layer.runningStatistics!.batchesTracked == 3)

        // Three updates, as three forward calls of the BatchNorm layer make them.
        var explicit = try BatchNorm<Float>(featureCount: 4, momentum: 0.5)
        for _ in 0..<3 { _ = try explicit.forward(x, shape: shape.dimensions) }
        #expect(layer.runningStatistics!.mean == explicit.runningMean!)
        #expect(layer.runningStatistics!.variance == explicit.runningVariance!)
    }

    /// Gradients of a small model from `gradient(at:)` against central finite
    /// differences of its loss, in double.
    @Test func smallModelGradientsMatchFiniteDifferences() throws {
        var model = SmallModel(w1: randomValues(30, seed: 31), w2: randomValues(18, seed: 32),
                               bn: try DifferentiableBatchNorm<Double>(featureCount: 6))
        model.bn.weight = randomValues(6, center: 1, spread: 0.3, seed: 33)
        model.bn.bias = randomValues(6, spread: 0.5, seed: 34)
        let x: [Double] = randomValues(40, seed: 35), target: [Double] = randomValues(24, seed: 36)
        let g = gradient(at: model) { model in model.loss(x, target) }

        // h = 1e-5: truncation error h²·f''' and rounding error ε·f/h both near 1e-10 here.
        let h = 1e-5
        func numeric(_ perturb: (inout SmallModel, Double) -> Void) -> Double {
            var plus = model, minus = model
            perturb(&plus, h)
            perturb(&minus, -h)
            return (plus.loss(x, target) - minus.loss(x, target)) / (2 * h)
        }
        var got: [Double] = [], want: [Double] = []
        for i in 0..<30 { got.append(g.w1.base[i]); want.append(numeric { $0.w1[i] += $1 }) }
        for i in 0..<18 { got.append(g.w2.base[i]); want.append(numeric { $0.w2[i] += $1 }) }
        for c in 0..<6 {
            got.append(g.bn.weight.base[c]); want.append(numeric { $0.bn.weight[c] += $1 })
            got.append(g.bn.bias.base[c]); want.append(numeric { $0.bn.bias[c] += $1 })
        }
        let error = zip(got, want).map { abs($0 - $1) }.max()! / want.map(abs).max()!
        // Measured: 4e-11; the bound leaves room for a ReLU kink within h of a hidden value.
        #expect(error <= 1e-8, "normwise error \(error) against central differences")
    }

    /// Differentiable calls cannot throw: an argument that does not fit stops
    /// the program, with a message that names it.
    @Test func anArgumentThatDoesNotFitStopsTheProgramNamingIt() async throws {
        func standardError(_ result: ExitTest.Result?) -> String {
            String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        }
        let channels = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let layer = try DifferentiableBatchNorm<Float>(featureCount: 3)
            _ = layer([Float](repeating: 1, count: 24), shape: try BatchNormShape([2, 4, 3]))
        }
        #expect(standardError(channels).contains("shape[1]"), "\(standardError(channels))")
        let input = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let layer = try DifferentiableBatchNorm<Float>(featureCount: 3)
            _ = layer([Float](repeating: 1, count: 20), shape: try BatchNormShape([2, 3, 3]))
        }
        #expect(standardError(input).contains("input: expected 18 values, got 20"), "\(standardError(input))")
        let running = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = batchNorm([Float](repeating: 1, count: 18), shape: try BatchNormShape([2, 3, 3]),
                          weight: [1, 1, 1], bias: [0, 0, 0], mode: .inference)
        }
        #expect(standardError(running).contains("running"), "\(standardError(running))")
    }
}
