import BatchNormKernels
import BatchNormReference
import Testing

/// NaN and infinity stay in their channel; huge values do not overflow; a
/// constant channel normalizes to β, with ε = 0 too.
@Suite struct ExtremeValueTests {
    /// Shapes for each layout: long planes, short planes (blocks of channels), columns.
    static let shapes: [[Int]] = [[4, 3, 5, 5], [8, 40, 7, 7], [64, 100]]

    /// Every walk: long and short planes, columns, channels last with lanes and without.
    static let layoutShapes: [BatchNormShape] = shapes.map { try! BatchNormShape($0) } + [
        try! BatchNormShape([8, 7, 7, 40], layout: .channelsLast), try! BatchNormShape([9, 5, 3], layout: .channelsLast),
    ]

    /// Indices of channel `c` in a tensor of `shape`.
    func indices(of c: Int, in shape: BatchNormShape) -> [Int] {
        let channels = shape.channels, spatial = shape.spatialSize
        return (0..<shape.batchSize).flatMap { n in
            (0..<spatial).map { s in
                shape.layout == .channelsFirst ? (n * channels + c) * spatial + s : (n * spatial + s) * channels + c
            }
        }
    }

    @Test("NaN or ±Inf in one channel changes only that channel's outputs and statistics",
          arguments: layoutShapes, [Float.nan, .infinity, -.infinity])
    func nonFiniteStaysInItsChannel(shapeValue: BatchNormShape, poison: Float) throws {
        let shape = shapeValue.dimensions, layout = shapeValue.layout
        let count = shapeValue.count, channels = shapeValue.channels, bad = 1
        let clean: [Float] = randomValues(count, center: 1, spread: 2, seed: 71)
        var dirty = clean
        dirty[indices(of: bad, in: shapeValue)[3]] = poison
        let dy: [Float] = randomValues(count, seed: 72)
        for executor in someExecutors {
            let a = try BatchNormalization.forwardTraining(clean, shape: shape, layout: layout, executor: executor)
            let b = try BatchNormalization.forwardTraining(dirty, shape: shape, layout: layout, executor: executor)
            let ga = try BatchNormalization.backward(outputGradient: dy, input: clean, shape: shape, layout: layout,
                                                     statistics: a.statistics, executor: executor)
            let gb = try BatchNormalization.backward(outputGradient: dy, input: dirty, shape: shape, layout: layout,
                                                     statistics: b.statistics, executor: executor)
            for c in 0..<channels {
                let at = indices(of: c, in: shapeValue)
                if c == bad {
                    #expect(at.allSatisfy { !b.output[$0].isFinite }, "the poisoned channel's y is not finite")
                    #expect(!b.statistics.mean[c].isFinite || !b.statistics.invStd[c].isFinite)
                } else {
                    #expect(at.allSatisfy { a.output[$0].bitPattern == b.output[$0].bitPattern }, "channel \(c)")
                    #expect(at.allSatisfy { ga.input![$0].bitPattern == gb.input![$0].bitPattern }, "dx channel \(c)")
                    #expect(a.statistics.mean[c] == b.statistics.mean[c] && a.statistics.invStd[c] == b.statistics.invStd[c])
                    #expect(ga.weight![c] == gb.weight![c] && ga.bias![c] == gb.bias![c])
                }
            }
        }
    }

    /// μ and σ² accumulate in double, so values near ±1e30 (and up to 1e36, whose squares
    /// pass 1e72) do not overflow. PyTorch's CPU kernel returns zeros here.
    @Test("values near ±1e30 and beyond normalize correctly", arguments: [1e30, -1e30, 1e36])
    func hugeValues(center: Double) throws {
        for shapeValue in Self.layoutShapes {
            let shape = shapeValue.dimensions, layout = shapeValue.layout, channelsLast = layout == .channelsLast
            let count = shapeValue.count
            let x: [Float] = randomValues(count, center: center, spread: abs(center) / 10, seed: 73)
            #expect(x.allSatisfy { $0.isFinite })
            let dy: [Float] = randomValues(count, seed: 74)
            let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast,
                                                  training: true)
            let wantBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                       channelsLast: channelsLast, training: true, mean: want.mean,
                                                       invStd: want.invStd)
            let got = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout)
            let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                            layout: layout, statistics: got.statistics)
            #expect(normwiseError(got.output, want.output) <= Bound.forward(Float.self))
            #expect(normwiseError(gradients.weight!, wantBack.weightGradient) <= Bound.backward(Float.self))
            #expect(normwiseError(gradients.bias!, wantBack.biasGradient) <= Bound.backward(Float.self))
            // dx = k1·dy + k2·(x − μ) + k3 with k2 ∝ γ·r³·Σdy·(x − μ)/m: for σ ≈ 1e29 it is
            // about 1e-58, below float's range, so the float kernel loses the x̂ term of dx
            // (7–20 % normwise here). Known: float's dx is exact only for σ below about 1e19.
            withKnownIssue("float dx when σ is past about 1e19: its second coefficient underflows float") {
                #expect(normwiseError(gradients.input!, wantBack.inputGradient) <= Bound.backward(Float.self))
            }
        }
    }

    /// σ² = 0: x̂ = 0, so y = β exactly. With ε = 0 too, σ² + ε = 0 and r = +∞; the
    /// package defines x̂ = 0 there as well (y = β, dx = 0, dγ = 0, dβ = Σ dy) rather
    /// than returning NaN, and reports invStd = +∞.
    @Test("a constant channel normalizes to β, also with ε = 0", arguments: [1e-5, 0.0])
    func constantChannel(epsilon: Double) throws {
        for shapeValue in Self.layoutShapes {
            let shape = shapeValue.dimensions, layout = shapeValue.layout
            let count = shapeValue.count, channels = shapeValue.channels
            var x: [Float] = randomValues(count, center: 1, spread: 2, seed: 75)
            for i in indices(of: 0, in: shapeValue) { x[i] = 0.3 }
            let dy: [Float] = randomValues(count, seed: 76)
            let weight = [Float](repeating: 1.5, count: channels), bias = [Float](repeating: -0.25, count: channels)
            let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                                 bias: bias, epsilon: epsilon)
            let at = indices(of: 0, in: shapeValue)
            #expect(at.allSatisfy { forward.output[$0] == -0.25 })
            #expect(forward.statistics.mean[0] == Double(Float(0.3)))
            #expect(epsilon > 0 ? forward.statistics.invStd[0].isFinite : forward.statistics.invStd[0] == .infinity)
            for mode in [BatchNormMode.training, .inference] {
                var statistics = forward.statistics
                statistics.mode = mode
                let g = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                                        statistics: statistics, weight: weight)
                let sumDy = at.reduce(0.0) { $0 + Double(dy[$1]) }
                #expect(abs(Double(g.bias![0]) - sumDy) <= 1e-5 * max(1, abs(sumDy)))
                if epsilon == 0 {
                    #expect(g.weight![0] == 0 && at.allSatisfy { g.input![$0] == 0 }, "\(mode)")
                }
                #expect(g.input!.allSatisfy { $0.isFinite })
            }
            // Inference with a zero running variance and ε = 0 follows the same rule.
            let y = try BatchNormalization.forwardInference(
                x, shape: shape, layout: layout, runningMean: [Float](repeating: 0.3, count: channels),
                runningVariance: [Float](repeating: 0, count: channels), bias: bias, epsilon: epsilon)
            if epsilon == 0 { #expect(y.allSatisfy { $0 == -0.25 }) }
        }
    }

    /// A zero scale γ·r (r = 0, as an infinite running variance gives) is a
    /// signed zero, and inference's dx = (γ·r)·dy is IEEE's product in every
    /// value: the vectors', the tails' and the lanes' a single channel fills
    /// alike, with and without the sums pass (which writes dx when dγ or dβ
    /// is asked for). So dx = ±0 with the sign of γ times dy's, dy = ±0 too.
    @Test("inference dx keeps the sign of a zero scale, with and without the sums pass",
          arguments: layoutShapes + [try! BatchNormShape([1, 3, 41])])
    func zeroScaleKeepsItsSign(shape: BatchNormShape) throws {
        try zeroScaleKeepsItsSign(Float.self, shape)
        try zeroScaleKeepsItsSign(Double.self, shape)
    }

    func zeroScaleKeepsItsSign<E: BatchNormScalar>(_: E.Type, _ shape: BatchNormShape) throws {
        var dy: [E] = randomValues(shape.count, seed: 78)
        for i in stride(from: 0, to: shape.count, by: 7) { dy[i] = i % 2 == 0 ? 0 : -0.0 }
        let x: [E] = randomValues(shape.count, seed: 79)
        let gamma = (0..<shape.channels).map { E($0 % 2 == 0 ? -1.5 : 2) }
        let statistics = BatchNormStatistics(mode: .inference, mean: [Double](repeating: 0.25, count: shape.channels),
                                             invStd: [Double](repeating: 0, count: shape.channels))
        let buffers = (x: allocatedCopy(x), dy: allocatedCopy(dy), gamma: allocatedCopy(gamma),
                       mean: allocatedCopy(statistics.mean), invStd: allocatedCopy(statistics.invStd),
                       dx: UnsafeMutableBufferPointer<E>.allocate(capacity: shape.count))
        defer {
            buffers.x.deallocate(); buffers.dy.deallocate(); buffers.gamma.deallocate()
            buffers.mean.deallocate(); buffers.invStd.deallocate(); buffers.dx.deallocate()
        }
        for executor in someExecutors {
            let withSums = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape.dimensions,
                                                           layout: shape.layout, statistics: statistics,
                                                           weight: gamma, executor: executor).input!
            buffers.dx.initialize(repeating: 1)
            try BatchNormalization.backward(mode: .inference, input: UnsafeBufferPointer(buffers.x),
                                            outputGradient: UnsafeBufferPointer(buffers.dy), shape: shape,
                                            mean: UnsafeBufferPointer(buffers.mean),
                                            invStd: UnsafeBufferPointer(buffers.invStd),
                                            weight: UnsafeBufferPointer(buffers.gamma), inputGradient: buffers.dx,
                                            executor: executor)
            let dxOnly = Array(buffers.dx)
            let want = (0..<shape.channels).flatMap { c in
                let scale = E(Double(gamma[c]) * statistics.invStd[c])
                return indices(of: c, in: shape).map { (at: $0, sign: (dy[$0] * scale).sign) }
            }
            let wrongWithSums = want.count { withSums[$0.at] != 0 || withSums[$0.at].sign != $0.sign }
            let wrongAlone = want.count { dxOnly[$0.at] != 0 || dxOnly[$0.at].sign != $0.sign }
            #expect(wrongWithSums == 0, "\(E.self) \(shape) \(executor), with the sums pass")
            #expect(wrongAlone == 0, "\(E.self) \(shape) \(executor), dx alone")
        }
    }

    /// Subnormal inputs are computed exactly as IEEE arithmetic gives them: the
    /// kernels do not flush to zero (that would be process-wide floating-point
    /// state, and would change results). They cost time, not accuracy:
    /// `bench-threads --data subnormal` measures it, and CI checks it stays within 10x.
    @Test("subnormal inputs match the float64 reference (no flush to zero)")
    func subnormalInputs() throws {
        for shapeValue in Self.layoutShapes {
            let shape = shapeValue.dimensions, layout = shapeValue.layout, channelsLast = layout == .channelsLast
            let count = shapeValue.count
            let x: [Float] = randomValues(count, center: 0, spread: 1, seed: 77).map { $0 * 1e-40 }
            #expect(x.contains { $0 != 0 && !$0.isNormal })
            let dy: [Float] = randomValues(count, seed: 78)
            let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast,
                                                  training: true)
            let got = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout)
            // Near 1e-40 a float has about 17 significant bits: the spacing 1.4e-45 is
            // 1.4e-5 of the values, so x − μ in float (μ itself rounded to that grid)
            // cannot be better than about 1e-5 normwise. The bound is that limit.
            #expect(normwiseError(got.output, want.output) <= 1e-5)
            let wantBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                       channelsLast: channelsLast, training: true, mean: want.mean,
                                                       invStd: want.invStd)
            let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                            layout: layout, statistics: got.statistics)
            #expect(normwiseError(gradients.input!, wantBack.inputGradient) <= 1e-5)
            #expect(normwiseError(gradients.bias!, wantBack.biasGradient) <= Bound.backward(Float.self))
            // dγ = Σ dy · x̂ takes x̂ from the same grid-limited x − μ: the same 1e-5.
            #expect(normwiseError(gradients.weight!, wantBack.weightGradient) <= 1e-5)
        }
    }
}
