import BatchNormKernels
import BatchNormReference
import Foundation
import Testing

/// The fused epilogues y = relu(BN(x)), BN(x) + z and relu(BN(x) + z), forward
/// and backward, against the float64 reference written from the formulas.
@Suite struct EpilogueTests {
    /// (activation, with a residual)
    static let epilogues: [(BatchNormActivation, Bool)] = [(.relu, false), (.identity, true), (.relu, true)]

    /// `[N, C, S…]` and the layout: edges, both walks, split parts, C > 1024 in
    /// channels last, and random shapes in alternating layouts.
    static let shapes: [([Int], BatchNormLayout)] = [
        ([4, 3, 5, 5], .channelsFirst), ([64, 40, 7, 7], .channelsFirst), ([3000, 5], .channelsFirst),
        ([2, 3, 150, 150], .channelsFirst), ([1, 1, 70_001], .channelsFirst), ([8, 40, 7, 7], .channelsLast),
        ([2, 1100, 17], .channelsLast), ([9, 3, 5], .channelsLast),
    ] + randomShapes(count: 8, seed: 13).enumerated().map { i, nchw in
        (nchw, i % 2 == 0 ? BatchNormLayout.channelsFirst : .channelsLast)
    }

    @Test("relu, residual add and both match the float64 reference, forward and backward, both modes",
          arguments: shapes, 0..<3)
    func matchesReference(tensor: ([Int], BatchNormLayout), epilogue: Int) throws {
        let (nchw, layout) = tensor, (activation, residual) = Self.epilogues[epilogue]
        try ReferenceAgreementTests.check(Float.self, nchw: nchw, layout: layout, executors: someExecutors,
                                          seed: 51, activation: activation, residual: residual)
        try ReferenceAgreementTests.check(Double.self, nchw: nchw, layout: layout, executors: someExecutors,
                                          seed: 61, activation: activation, residual: residual)
    }

    /// relu(v) is v where v > 0 or v is NaN, and +0 where v ≤ 0 (−0 included);
    /// backward passes dy unless y ≤ 0, so where y is NaN the gradient passes
    /// (PyTorch's threshold_backward), and where y is ±0 it does not.
    @Test("the relu at 0, −0, below 0 and NaN, forward and backward")
    func reluAtTheEdges() throws {
        // Inference with mean 0, variance 1 - ε, γ = 1, β = 0: BN(x) = x exactly.
        let x: [Float] = [2, 0, -0.0, -3, .nan, 0.5]
        let shape = [6, 1]
        let y = try BatchNormalization.forwardInference(
            x, shape: shape, runningMean: [0], runningVariance: [Float(1 - 1e-5)], activation: .relu, executor: .serial)
        #expect(y[0] == 2 && y[5] == 0.5)
        #expect(y[1].bitPattern == Float(0).bitPattern && y[2].bitPattern == Float(0).bitPattern)
        #expect(y[3].bitPattern == Float(0).bitPattern)
        #expect(y[4].isNaN)
        let dy: [Float] = [1, 2, 3, 4, 5, 6]
        let statistics = try BatchNormalization.inferenceStatistics(runningMean: [Float(0)],
                                                                    runningVariance: [Float(1 - 1e-5)])
        let gradients = try BatchNormalization.backward(
            outputGradient: dy, input: x, shape: shape, statistics: statistics, activation: .relu, forwardOutput: y,
            wantsResidualGradient: true, executor: .serial)
        #expect(gradients.residual! == [1, 0, 0, 0, 5, 6])
        #expect(gradients.input! == gradients.residual!.map { $0 * Float(statistics.invStd[0]) })
        // A given y of −0, or negative, masks too.
        let masked = try BatchNormalization.backward(
            outputGradient: dy, input: x, shape: shape, statistics: statistics, activation: .relu,
            forwardOutput: [-0.0, -1, 1, .nan, 0, 3], wantsResidualGradient: true, executor: .serial)
        #expect(masked.residual! == [0, 0, 3, 4, 0, 6])
    }

    /// The loss L = Σ w·relu(BN(x) + z) for fixed random w; backward with dy = w must
    /// equal its central differences in x, γ, β and z (away from relu's kink: the
    /// data keep |BN(x) + z| well above h).
    @Test("relu(BN(x) + z) backward matches central finite differences in double",
          arguments: [try! BatchNormShape([3, 2, 4]), try! BatchNormShape([2, 3, 3, 4], layout: .channelsLast)])
    func finiteDifferences(shape: BatchNormShape) throws {
        let dims = shape.dimensions, count = shape.count, channels = shape.channels
        let x: [Double] = randomValues(count, center: 0.3, spread: 1.5, seed: 71)
        let z: [Double] = randomValues(count, seed: 72)
        let w: [Double] = randomValues(count, seed: 73)
        let gamma: [Double] = randomValues(channels, center: 1, spread: 0.5, seed: 74)
        let beta: [Double] = randomValues(channels, seed: 75)
        let h = 1e-6
        func loss(_ x: [Double], _ gamma: [Double], _ beta: [Double], _ z: [Double]) throws -> Double {
            let y = try BatchNormalization.forwardTraining(x, shape: dims, layout: shape.layout, weight: gamma,
                                                           bias: beta, residual: z, activation: .relu).output
            return zip(y, w).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let forward = try BatchNormalization.forwardTraining(x, shape: dims, layout: shape.layout, weight: gamma,
                                                             bias: beta, residual: z, activation: .relu)
        #expect(forward.output.allSatisfy { $0 == 0 || $0 > 1e-4 }, "a value too close to the kink")
        let gradients = try BatchNormalization.backward(
            outputGradient: w, input: x, shape: dims, layout: shape.layout, statistics: forward.statistics,
            weight: gamma, activation: .relu, forwardOutput: forward.output, wantsResidualGradient: true)
        func central(_ values: [Double], _ i: Int, _ f: ([Double]) throws -> Double) throws -> Double {
            var plus = values, minus = values
            plus[i] += h
            minus[i] -= h
            return (try f(plus) - f(minus)) / (2 * h)
        }
        let numericX = try (0..<count).map { i in try central(x, i) { try loss($0, gamma, beta, z) } }
        let numericZ = try (0..<count).map { i in try central(z, i) { try loss(x, gamma, beta, $0) } }
        let numericGamma = try (0..<channels).map { c in try central(gamma, c) { try loss(x, $0, beta, z) } }
        let numericBeta = try (0..<channels).map { c in try central(beta, c) { try loss(x, gamma, $0, z) } }
        // Truncation O(h²) and rounding O(ε/h) ≈ 1e-10 relative to the loss; 1e-7 covers both.
        #expect(normwiseError(gradients.input!, numericX) <= 1e-7)
        #expect(normwiseError(gradients.residual!, numericZ) <= 1e-7)
        #expect(normwiseError(gradients.weight!, numericGamma) <= 1e-7)
        #expect(normwiseError(gradients.bias!, numericBeta) <= 1e-7)
    }

    @Test("with an epilogue, channels last equals transposed channels first, and every executor the serial bits",
          arguments: [[2, 70, 7, 7], [3, 130, 14, 14], [2, 5, 56, 56], [40, 9, 33], [6, 40, 3, 3], [12, 150, 2]])
    func bitwiseAcrossLayoutsAndExecutors(nchw: [Int]) throws {
        let count = nchw.reduce(1, *), channels = nchw[1]
        let x: [Float] = randomValues(count, center: 0.2, spread: 2, seed: 81)
        let z: [Float] = randomValues(count, seed: 82), dy: [Float] = randomValues(count, seed: 83)
        let weight: [Float] = randomValues(channels, center: 1, spread: 0.5, seed: 84)
        func run(_ layout: BatchNormLayout, _ executor: BatchNormExecutor) throws -> [Data] {
            let dims = dimensions(nchw, in: layout)
            func arrange(_ v: [Float]) -> [Float] { arranged(v, nchw: nchw, in: layout) }
            func back(_ v: [Float]) -> Data { bytes(arranged(v, nchw: nchw, in: layout, inverse: true)) }
            let forward = try BatchNormalization.forwardTraining(
                arrange(x), shape: dims, layout: layout, weight: weight, residual: arrange(z), activation: .relu,
                executor: executor)
            let g = try BatchNormalization.backward(
                outputGradient: arrange(dy), input: arrange(x), shape: dims, layout: layout,
                statistics: forward.statistics, weight: weight, activation: .relu, forwardOutput: forward.output,
                wantsResidualGradient: true, executor: executor)
            return [back(forward.output), back(g.input!), back(g.residual!), bytes(g.weight!), bytes(g.bias!)]
        }
        let expected = try run(.channelsFirst, .serial)
        for executor in someExecutors {
            #expect(try run(.channelsLast, executor) == expected, "channels last \(executor)")
            #expect(try run(.channelsFirst, executor) == expected, "channels first \(executor)")
        }
    }
}

extension EpilogueTests {
    /// Backward with relu and no `forwardOutput` recomputes the mask from x,
    /// γ, β and the statistics, bit for bit the y the forward call wrote: its
    /// gradients are the bits of the call given y, in both modes, every
    /// layout, element type and executor. β and γ of both signs, and x on
    /// both sides of the mean, make the mask cut every channel. The fixed
    /// shapes only: they reach every walk, both layouts and split parts.
    @Test("relu backward recomputing the mask from x gives the bits it gives with the forward output",
          arguments: shapes.prefix(8))
    func reluMaskFromInput(tensor: ([Int], BatchNormLayout)) throws {
        try reluMaskFromInput(Float.self, tensor)
        try reluMaskFromInput(Double.self, tensor)
        try reluMaskFromInput(Float16.self, tensor)
        try reluMaskFromInput(BFloat16.self, tensor)
    }

    func reluMaskFromInput<E: TestElement>(_: E.Type, _ tensor: ([Int], BatchNormLayout)) throws {
        let (nchw, layout) = tensor
        let shape = dimensions(nchw, in: layout), count = nchw.reduce(1, *), channels = nchw[1]
        var rng = SplitMix64(seed: 97)
        let x = (0..<count).map { _ in E.rounded(Double.random(in: -2...2, using: &rng)) }
        let dy = (0..<count).map { _ in E.rounded(Double.random(in: -1...1, using: &rng)) }
        let weight = (0..<channels).map { E.Parameter($0 % 3 == 0 ? -1.25 : 0.5 + Double($0 % 5) / 4) }
        let bias = (0..<channels).map { E.Parameter(Double($0 % 7) / 4 - 0.75) }
        let runningMean = (0..<channels).map { E.Parameter(Double($0 % 4) / 8) }
        let runningVariance = (0..<channels).map { E.Parameter(0.5 + Double($0 % 3)) }
        let training = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                              bias: bias, activation: .relu)
        let inference = try BatchNormalization.forwardInference(
            x, shape: shape, layout: layout, runningMean: runningMean, runningVariance: runningVariance,
            weight: weight, bias: bias, activation: .relu)
        let inferenceStatistics = try BatchNormalization.inferenceStatistics(runningMean: runningMean,
                                                                             runningVariance: runningVariance)
        for (statistics, y) in [(training.statistics, training.output), (inferenceStatistics, inference)] {
            #expect(y.contains { $0.testBits == 0 } && y.contains { $0.testBits != 0 })   // +0 and positive
            for executor in someExecutors {
                let given = try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: shape, layout: layout, statistics: statistics,
                    weight: weight, activation: .relu, forwardOutput: y, executor: executor)
                let recomputed = try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: shape, layout: layout, statistics: statistics,
                    weight: weight, bias: bias, activation: .relu, executor: executor)
                let context = "\(E.self) \(nchw) \(statistics.mode) \(executor)"
                #expect(bytes(given.input!) == bytes(recomputed.input!), "\(context) dx")
                #expect(bytes(given.weight!) == bytes(recomputed.weight!)
                            && bytes(given.bias!) == bytes(recomputed.bias!), "\(context) dγ, dβ")
            }
        }
    }
}

/// A relu layer without residual: backward without the forward output
/// recomputes the mask with the layer's γ and β, the bits it gives with it.
@Test("a relu layer's backward without the forward output gives the bits it gives with it")
func reluLayerMaskFromInput() throws {
    let dims = [4, 3, 5, 5]
    let x: [Float] = randomValues(300, center: 0.4, spread: 2, seed: 94), dy: [Float] = randomValues(300, seed: 95)
    var layer = try BatchNorm<Float>(featureCount: 3, activation: .relu, executor: .serial)
    layer.weight = [1.5, -0.5, 1]
    layer.bias = [0.25, -0.5, 0.75]
    let forward = try layer.forward(x, shape: dims)
    let given = try layer.backward(outputGradient: dy, input: x, shape: dims, statistics: forward.statistics,
                                   forwardOutput: forward.output)
    let recomputed = try layer.backward(outputGradient: dy, input: x, shape: dims, statistics: forward.statistics)
    #expect(bytes(given.input!) == bytes(recomputed.input!) && bytes(given.weight!) == bytes(recomputed.weight!))
    #expect(bytes(given.bias!) == bytes(recomputed.bias!))
}

/// The layer with `activation = .relu` and a residual: the same results as the
/// kernels, running statistics of BN(x), and a backward whose dz needs the output.
@Test("a relu layer with a residual gives the kernels' results and tracks BN(x)'s statistics")
func reluLayer() throws {
    let dims = [4, 3, 5, 5]
    let x: [Float] = randomValues(300, center: 0.4, spread: 2, seed: 91), z: [Float] = randomValues(300, seed: 92)
    let dy: [Float] = randomValues(300, seed: 93)
    var layer = try BatchNorm<Float>(featureCount: 3, activation: .relu, executor: .serial)
    var plain = try BatchNorm<Float>(featureCount: 3, executor: .serial)
    let forward = try layer.forward(x, shape: dims, residual: z)
    _ = try plain.forward(x, shape: dims)
    #expect(layer.runningMean == plain.runningMean && layer.runningVariance == plain.runningVariance)
    let kernels = try BatchNormalization.forwardTraining(x, shape: dims, weight: [1, 1, 1], bias: [0, 0, 0],
                                                         residual: z, activation: .relu, executor: .serial)
    #expect(forward.output == kernels.output)
    #expect(forward.output.allSatisfy { $0 >= 0 } && forward.output.contains(0))
    #expect { _ = try layer.backward(outputGradient: dy, input: x, shape: dims, statistics: forward.statistics,
                                     wantsResidualGradient: true) }
        throws: { ($0 as! BatchNormError).argument == "forwardOutput" }
    let gradients = try layer.backward(outputGradient: dy, input: x, shape: dims, statistics: forward.statistics,
                                       forwardOutput: forward.output, wantsResidualGradient: true)
    let want = try BatchNormalization.backward(
        outputGradient: dy, input: x, shape: dims, statistics: forward.statistics, weight: [1, 1, 1],
        activation: .relu, forwardOutput: kernels.output, wantsResidualGradient: true, executor: .serial)
    #expect(gradients.input! == want.input! && gradients.weight! == want.weight! && gradients.residual! == want.residual!)
}
