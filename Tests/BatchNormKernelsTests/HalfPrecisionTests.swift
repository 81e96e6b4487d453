import BatchNormKernels
import BatchNormReference
import BatchNormTestSupport
import Testing

/// The two half formats, as the tests need them.
protocol HalfFormat: BatchNormElement, Equatable where Parameter == Float {
    /// `value` rounded once to the format.
    init(roundingOnce value: Double)
    init(bitPattern: UInt16)
    var widened: Float { get }
    var bits: UInt16 { get }
    static var format: SixteenBitFormat { get }
}

extension Float16: HalfFormat {
    init(roundingOnce value: Double) { self.init(value) }
    var widened: Float { Float(self) }
    var bits: UInt16 { bitPattern }
    static var format: SixteenBitFormat { .float16 }
}

extension BFloat16: HalfFormat {
    init(roundingOnce value: Double) { self.init(value) }
    var widened: Float { Float(self) }
    var bits: UInt16 { bitPattern }
    static var format: SixteenBitFormat { .bfloat16 }
}

/// Units in the last place between two values of a 16-bit format (sign and
/// magnitude mapped onto one ordered line, so ±0 are 0 apart); two NaNs are
/// 0 apart, a NaN and a number infinitely far.
func ulps<H: HalfFormat>(_ a: H, _ b: H) -> Int {
    ulps(bits: a.bits, b.bits, in: H.format)
}

/// Float16 and BFloat16 tensors (parameters in Float): every output within
/// one unit in the last place of the float64 result of the same formula on
/// the same inputs, rounded to the format.
@Suite struct HalfPrecisionTests {
    static func values<H: HalfFormat>(_: H.Type, _ count: Int, center: Double = 0, spread: Double = 1,
                                      seed: UInt64) -> [H] {
        (randomValues(count, center: center, spread: spread, seed: seed) as [Double]).map { H(roundingOnce: $0) }
    }

    /// The largest distance, in ulps, between `got` and the float64 `want` rounded to the format.
    static func worstUlps<H: HalfFormat>(_ got: [H], _ want: [Double]) -> Int {
        if H.self == Float16.self { return BatchNormTestSupport.worstUlps(unsafeBitCast(got, to: [Float16].self), want) }
        precondition(H.self == BFloat16.self)
        return BatchNormTestSupport.worstUlps(unsafeBitCast(got, to: [BFloat16].self), want)
    }

    func checkAgainstReference<H: HalfFormat>(
        _: H.Type, nchw: [Int], layout: BatchNormLayout, center: Double, spread: Double,
        executor: BatchNormExecutor, activation: BatchNormActivation = .identity, cancelling: Bool = false,
        parameterScale: Float = 1, gradientScale: Double = 1
    ) throws {
        let shape = dimensions(nchw, in: layout), channels = nchw[1], count = nchw.reduce(1, *)
        let x = Self.values(H.self, count, center: center, spread: spread, seed: UInt64(count))
        var dy = Self.values(H.self, count, spread: gradientScale, seed: UInt64(count) + 1)
        // With the relu, the residual block's y = relu(BN(x) + z) and its dz.
        var z = activation == .relu ? Self.values(H.self, count, seed: UInt64(count) + 2) : nil
        let weight: [Float] = (randomValues(channels, center: 1, spread: 0.5, seed: 3) as [Float]).map { $0 * parameterScale }
        let bias: [Float] = (randomValues(channels, seed: 4) as [Float]).map { $0 * parameterScale }
        if cancelling {
            // Outputs far smaller than the terms they are formed from: z ≈ -BN(x), so y = BN(x) + z
            // is a few thousandths, and dy ≈ BN(x), affine in x̂, so that dx nearly vanishes.
            let bn = ReferenceBatchNorm.forward(
                x.map { Double($0.widened) }, shape: shape, channelsLast: layout == .channelsLast, training: true,
                weight: weight.map(Double.init), bias: bias.map(Double.init),
                runningMean: Array(repeating: 0, count: channels),
                runningVariance: Array(repeating: 1, count: channels)).output
            let noise: [Double] = randomValues(count, seed: UInt64(count) + 5)
            z = (0..<count).map { H(roundingOnce: -bn[$0] + 3e-3 * noise[$0]) }
            dy = (0..<count).map { H(roundingOnce: bn[$0] + 1e-3 * noise[($0 + 1) % count]) }
        }
        var layer = try BatchNorm<H>(featureCount: channels, momentum: 0.25, activation: activation,
                                     executor: executor)
        layer.weight = weight
        layer.bias = bias
        let forward = try layer.forward(x, shape: shape, layout: layout, residual: z)
        let gradients = try layer.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                           statistics: forward.statistics, forwardOutput: forward.output,
                                           wantsResidualGradient: z != nil)

        let wide = x.map { Double($0.widened) }, wideDy = dy.map { Double($0.widened) }
        let relu = activation == .relu
        let want = ReferenceBatchNorm.forward(
            wide, shape: shape, channelsLast: layout == .channelsLast, training: true,
            weight: weight.map(Double.init), bias: bias.map(Double.init),
            runningMean: Array(repeating: 0, count: channels), runningVariance: Array(repeating: 1, count: channels),
            momentum: 0.25, residual: z.map { $0.map { Double($0.widened) } }, relu: relu)
        // The mask: the reference's own output, rounded as ours is (a y within rounding of 0 decides it).
        let mask = relu ? forward.output.map { Double($0.widened) } : nil
        let wantBackward = ReferenceBatchNorm.backward(
            wide, outputGradient: wideDy, shape: shape, channelsLast: layout == .channelsLast, training: true,
            mean: want.mean, invStd: want.invStd, weight: weight.map(Double.init), forwardOutput: mask)
        let context = "\(nchw) \(layout) \(H.self) \(executor) \(activation) data \(center) ± \(spread)"
        #expect(Self.worstUlps(forward.output, want.output) <= 1, "\(context): y")
        #expect(Self.worstUlps(gradients.input!, wantBackward.inputGradient) <= 1, "\(context): dx")
        // dz is dy itself, masked: exact in every bit.
        if z != nil {
            #expect(gradients.residual!.map(\.bits) == wantBackward.residualGradient.map { H(roundingOnce: $0).bits },
                    "\(context): dz")
        }
        // Statistics and Float outputs: the float bounds of the Float kernels.
        #expect(ReferenceBatchNorm.normwiseError(forward.statistics.mean, want.mean, scale: abs(center) + spread)
                    <= 1e-12, "\(context): mean")
        #expect(ReferenceBatchNorm.normwiseError(layer.runningVariance!, want.runningVariance!) <= 1e-6, "\(context)")
        #expect(ReferenceBatchNorm.normwiseError(gradients.weight!, wantBackward.weightGradient) <= 5e-6, "\(context)")
        #expect(ReferenceBatchNorm.normwiseError(gradients.bias!, wantBackward.biasGradient) <= 5e-6, "\(context)")

        // Inference with the updated running statistics, and its backward.
        layer.mode = .inference
        let inference = try layer.forward(x, shape: shape, layout: layout, residual: z)
        let wantInference = ReferenceBatchNorm.forward(
            wide, shape: shape, channelsLast: layout == .channelsLast, training: false,
            weight: weight.map(Double.init), bias: bias.map(Double.init),
            runningMean: layer.runningMean!.map(Double.init), runningVariance: layer.runningVariance!.map(Double.init),
            residual: z.map { $0.map { Double($0.widened) } }, relu: relu)
        #expect(Self.worstUlps(inference.output, wantInference.output) <= 1, "\(context): inference y")
        let inferenceMask = relu ? inference.output.map { Double($0.widened) } : nil
        let wantInferenceBackward = ReferenceBatchNorm.backward(
            wide, outputGradient: wideDy, shape: shape, channelsLast: layout == .channelsLast, training: false,
            mean: wantInference.mean, invStd: wantInference.invStd, weight: weight.map(Double.init),
            forwardOutput: inferenceMask)
        let inferenceGradients = try layer.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                                    statistics: inference.statistics,
                                                    forwardOutput: inference.output,
                                                    wantsResidualGradient: z != nil)
        #expect(Self.worstUlps(inferenceGradients.input!, wantInferenceBackward.inputGradient) <= 1,
                "\(context): inference dx")
    }

    static let shapes: [[Int]] = [[4, 3, 5], [2, 70, 7, 7], [3, 130, 14, 14], [2, 5, 56, 56], [300, 20],
                                  [40, 9, 33], [2, 1100, 17], [5, 17, 3, 2, 3], [64, 40, 7, 7]]

    @Test(arguments: shapes)
    func outputsAreWithinOneUlpOfTheFloat64Result(nchw: [Int]) throws {
        for (index, layout) in [BatchNormLayout.channelsFirst, .channelsLast].enumerated() {
            let executor = someExecutors[(index + nchw.count) % someExecutors.count]
            for activation in BatchNormActivation.allCases {
                try checkAgainstReference(Float16.self, nchw: nchw, layout: layout, center: 0, spread: 3,
                                          executor: executor, activation: activation)
                try checkAgainstReference(BFloat16.self, nchw: nchw, layout: layout, center: 0, spread: 3,
                                          executor: executor, activation: activation)
            }
        }
    }

    /// Outputs that nearly cancel (y = BN(x) + z with z ≈ -BN(x); dx from a
    /// dy nearly affine in x̂): the float arithmetic of the half formats
    /// cannot give these to one ulp, and its check must send them to double.
    @Test func cancellingOutputsStayWithinOneUlp() throws {
        for (index, nchw) in [[4, 3, 5], [2, 70, 7, 7], [300, 20], [2, 1100, 17]].enumerated() {
            let layout: BatchNormLayout = index % 2 == 0 ? .channelsFirst : .channelsLast
            try checkAgainstReference(Float16.self, nchw: nchw, layout: layout, center: 0, spread: 3,
                                      executor: .serial, cancelling: true)
            try checkAgainstReference(BFloat16.self, nchw: nchw, layout: layout, center: 0, spread: 3,
                                      executor: .serial, cancelling: true)
            try checkAgainstReference(Float16.self, nchw: nchw, layout: layout, center: 100, spread: 1,
                                      executor: .serial, cancelling: true)
        }
    }

    /// Outputs of a plain forward near zero, in inference, where the zero is
    /// put: each channel's β makes y vanish at one of its values (held
    /// exactly by the format), so that there y is far smaller than the terms
    /// it is formed from. Those values must fail the check and go to double
    /// (float alone is thousands of ulps off there); with relu, the mask
    /// recomputed from x must agree with y at every one of them.
    @Test func plainOutputsNearZeroStayWithinOneUlp() throws {
        for (index, layout) in [BatchNormLayout.channelsFirst, .channelsLast].enumerated() {
            for activation in BatchNormActivation.allCases {
                let executor = someExecutors[index % someExecutors.count]
                try checkNearZero(Float16.self, layout: layout, activation: activation, executor: executor)
                try checkNearZero(BFloat16.self, layout: layout, activation: activation, executor: executor)
            }
        }
    }

    func checkNearZero<H: HalfFormat>(_: H.Type, layout: BatchNormLayout, activation: BatchNormActivation,
                                      executor: BatchNormExecutor) throws {
        let nchw = [4, 24, 9], channels = nchw[1], spatial = nchw[2], count = nchw.reduce(1, *)
        let shape = dimensions(nchw, in: layout)
        let runningMean: [Float] = randomValues(channels, seed: 51)
        let runningVariance: [Float] = randomValues(channels, center: 1, spread: 0.5, seed: 52)
        let weight: [Float] = (randomValues(channels, center: 1, spread: 0.5, seed: 53) as [Float])
            .enumerated().map { $0.offset % 3 == 0 ? -$0.element : $0.element }
        // Each channel's zero of y, 0.5 to 1.5 away from 0, of either sign.
        let zeros = Self.values(H.self, channels, center: 1, spread: 0.5, seed: 54)
            .enumerated().map { $0.offset % 2 == 0 ? $0.element : H(roundingOnce: -Double($0.element.widened)) }
        let bias = (0..<channels).map { (c: Int) -> Float in
            let zero = Double(zeros[c].widened), mean = Double(runningMean[c])
            let invStd = 1 / (Double(runningVariance[c]) + 1e-5).squareRoot()
            return Float(-(zero - mean) * Double(weight[c]) * invStd)
        }
        // Per channel: its zero and the four values either side of it in the format, then values near it.
        let noise: [Double] = randomValues(count, spread: 0.05, seed: 55)
        var nchwValues = [H]()
        for n in 0..<nchw[0] {
            for c in 0..<channels {
                for s in 0..<spatial {
                    let j = n * spatial + s
                    nchwValues.append(j < 9 ? H(bitPattern: UInt16(Int(zeros[c].bits) + j - 4))
                                            : H(roundingOnce: Double(zeros[c].widened) + noise[j * channels + c]))
                }
            }
        }
        let x = arranged(nchwValues, nchw: nchw, in: layout)
        let dy = Self.values(H.self, count, seed: 56)
        let relu = activation == .relu
        let y: [H] = try BatchNormalization.forwardInference(
            x, shape: shape, layout: layout, runningMean: runningMean, runningVariance: runningVariance,
            weight: weight, bias: bias, activation: activation, executor: executor)
        let wide = x.map { Double($0.widened) }
        let want = ReferenceBatchNorm.forward(
            wide, shape: shape, channelsLast: layout == .channelsLast, training: false,
            weight: weight.map(Double.init), bias: bias.map(Double.init),
            runningMean: runningMean.map(Double.init), runningVariance: runningVariance.map(Double.init), relu: relu)
        let context = "\(H.self) \(layout) \(activation) \(executor)"
        // The data does what it is for: outputs far smaller than their terms, in a quarter of the channels at least.
        #expect(want.output.filter { $0 != 0 && abs($0) < 1e-4 }.count >= channels / 4, "\(context): near zero")
        #expect(Self.worstUlps(y, want.output) <= 1, "\(context): y")

        let statistics = try BatchNormalization.inferenceStatistics(runningMean: runningMean,
                                                                    runningVariance: runningVariance)
        let recomputed = try BatchNormalization.backward(
            outputGradient: dy, input: x, shape: shape, layout: layout, statistics: statistics,
            weight: weight, bias: bias, activation: activation, executor: executor)
        let wantBackward = ReferenceBatchNorm.backward(
            wide, outputGradient: dy.map { Double($0.widened) }, shape: shape,
            channelsLast: layout == .channelsLast, training: false, mean: want.mean, invStd: want.invStd,
            weight: weight.map(Double.init), forwardOutput: relu ? y.map { Double($0.widened) } : nil)
        #expect(Self.worstUlps(recomputed.input!, wantBackward.inputGradient) <= 1, "\(context): dx")
        if relu {
            let given = try BatchNormalization.backward(
                outputGradient: dy, input: x, shape: shape, layout: layout, statistics: statistics,
                weight: weight, activation: activation, forwardOutput: y, executor: executor)
            let differing = zip(given.input!, recomputed.input!).filter { $0.bits != $1.bits }.count
            #expect(differing == 0, "\(context): dx with the mask recomputed from x")
        }
    }

    /// Values near 100 ± 1 (Float16) and 1e4 ± 1 (BFloat16, where they are
    /// coarse): μ and σ still exact to the bound.
    @Test func shiftedDataStaysWithinOneUlp() throws {
        for nchw in [[4, 3, 5], [2, 5, 56, 56], [300, 20]] {
            try checkAgainstReference(Float16.self, nchw: nchw, layout: .channelsFirst, center: 100, spread: 1,
                                      executor: .serial)
            try checkAgainstReference(BFloat16.self, nchw: nchw, layout: .channelsLast, center: 1e4, spread: 1,
                                      executor: .serial)
        }
    }

    /// Subnormals of each format as inputs.
    @Test func subnormalInputsStayWithinOneUlp() throws {
        try checkAgainstReference(Float16.self, nchw: [3, 4, 50], layout: .channelsFirst, center: 0, spread: 5e-5,
                                  executor: .serial)
        try checkAgainstReference(BFloat16.self, nchw: [3, 4, 50], layout: .channelsFirst, center: 0, spread: 1e-38,
                                  executor: .serial)
    }

    /// Subnormals of each format as outputs: γ and β that small make y and
    /// dx subnormal. In BFloat16 they are float subnormals too (γ/σ rounds to
    /// one, so the channel is computed in double), which AVX-512 BF16's
    /// narrowing would flush to zero.
    @Test func subnormalOutputsStayWithinOneUlp() throws {
        for layout in [BatchNormLayout.channelsFirst, .channelsLast] {
            try checkAgainstReference(Float16.self, nchw: [3, 5, 7, 7], layout: layout, center: 0, spread: 1,
                                      executor: .serial, parameterScale: 2e-5)
            try checkAgainstReference(BFloat16.self, nchw: [3, 5, 7, 7], layout: layout, center: 0, spread: 1,
                                      executor: .serial, parameterScale: 2e-39)
        }
    }

    /// γ/σ below float's normal range with normal outputs: σ = 1e8 and
    /// γ = 1e-36 give γ/σ a float subnormal of a few bits, while y is near
    /// 1e-36 (and dx, with dy near 1e7, near 1e-37, in inference mode too).
    /// Float arithmetic with that factor erred by up to 200 ulps of BFloat16;
    /// such channels are computed in double.
    @Test func subnormalFactorsStayWithinOneUlp() throws {
        for layout in [BatchNormLayout.channelsFirst, .channelsLast] {
            try checkAgainstReference(BFloat16.self, nchw: [3, 5, 7, 7], layout: layout, center: 0, spread: 1e8,
                                      executor: .serial, parameterScale: 1e-36, gradientScale: 1e7)
        }
    }

    /// Every executor and thread count, and channels last against channels
    /// first transposed: the same bits, every one of them (the 16 of each
    /// tensor value, the 32 of each Float parameter gradient and statistic),
    /// in both half formats.
    @Test func resultsAreBitwiseTheSameForEveryExecutorAndLayout() throws {
        try checkBitwiseAcrossExecutors(BFloat16.self)
        try checkBitwiseAcrossExecutors(Float16.self)
    }

    func checkBitwiseAcrossExecutors<H: HalfFormat>(_: H.Type) throws {
        for nchw in [[2, 70, 7, 7], [3, 130, 14, 14], [300, 20]] {
            var seen: [[UInt32]]? = nil
            for (i, executor) in allExecutors.enumerated() {
                let layout: BatchNormLayout = i % 2 == 0 ? .channelsFirst : .channelsLast
                let shape = dimensions(nchw, in: layout), count = nchw.reduce(1, *)
                let x: [H] = arranged(Self.values(H.self, count, center: 2, spread: 3, seed: 9), nchw: nchw, in: layout)
                let dy: [H] = arranged(Self.values(H.self, count, seed: 10), nchw: nchw, in: layout)
                var layer = try BatchNorm<H>(featureCount: nchw[1], executor: executor)
                let forward = try layer.forward(x, shape: shape, layout: layout)
                let g = try layer.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                           statistics: forward.statistics)
                func wide(_ values: [H]) -> [UInt32] {
                    arranged(values, nchw: nchw, in: layout, inverse: true).map { UInt32($0.bits) }
                }
                let outputs = [wide(forward.output), wide(g.input!), g.weight!.map(\.bitPattern),
                               g.bias!.map(\.bitPattern), layer.runningMean!.map(\.bitPattern),
                               layer.runningVariance!.map(\.bitPattern)]
                if let seen { #expect(outputs == seen, "\(H.self) \(nchw) \(executor) \(layout)") }
                seen = outputs
            }
        }
    }

    /// A result past Float16's largest finite value (65504) becomes ±∞ as it is
    /// written; the running statistics, in Float, stay finite.
    @Test func overflowOnNarrowingGivesInfinityAndFiniteStatistics() throws {
        let x = Self.values(Float16.self, 60, spread: 2, seed: 21)
        var layer = try BatchNorm<Float16>(featureCount: 3)
        layer.weight = [1e5, 1, 1e5]
        let y = try layer.forward(x, shape: [4, 3, 5]).output
        let channel0 = (0..<4).flatMap { n in (0..<5).map { y[(n * 3) * 5 + $0] } }
        #expect(channel0.contains { $0 == .infinity } && channel0.contains { $0 == -.infinity })
        #expect(channel0.allSatisfy { !$0.isNaN })
        #expect(layer.runningMean!.allSatisfy(\.isFinite) && layer.runningVariance!.allSatisfy(\.isFinite))
        // BFloat16 holds the same values.
        let xb = x.map { BFloat16(Float($0)) }
        var bf = try BatchNorm<BFloat16>(featureCount: 3)
        bf.weight = [1e5, 1, 1e5]
        #expect(try bf.forward(xb, shape: [4, 3, 5]).output.allSatisfy { $0.widened.isFinite })
    }

    /// NaN and ∞ in one channel's input leave every other channel's outputs
    /// as they are without them.
    @Test func nonFiniteValuesStayInTheirChannel() throws {
        let nchw = [4, 3, 5]
        var x = Self.values(Float16.self, 60, spread: 2, seed: 31)
        let clean = try BatchNormalization.forwardTraining(x, shape: nchw).output
        x[1 * 5 + 2] = .nan      // image 0, channel 1
        x[(2 * 3 + 1) * 5] = .infinity
        let dirty = try BatchNormalization.forwardTraining(x, shape: nchw).output
        for n in 0..<4 {
            for c in [0, 2] {
                for s in 0..<5 {
                    let i = (n * 3 + c) * 5 + s
                    #expect(dirty[i].bitPattern == clean[i].bitPattern)
                }
            }
            #expect((0..<5).allSatisfy { dirty[(n * 3 + 1) * 5 + $0].isNaN })
        }
    }

    /// Synchronized over an in-process group: each rank's slice equals
    /// single-process batch norm on the whole batch, in ulps.
    @Test(arguments: [BatchNormLayout.channelsFirst, .channelsLast])
    func synchronizedRanksMatchOneProcessWithinOneUlp(layout: BatchNormLayout) throws {
        try checkSynchronized(Float16.self, layout: layout)
        try checkSynchronized(BFloat16.self, layout: layout)
    }

    /// Three ranks of uneven slices: y and dx within one ulp of the float64
    /// result on the whole batch, in both formats and layouts.
    func checkSynchronized<H: HalfFormat>(_: H.Type, layout: BatchNormLayout) throws {
        let nchw = [6, 4, 7, 7], image = 4 * 49, slices = [2, 1, 3]
        let x: [H] = arranged(Self.values(H.self, 6 * image, center: 1, spread: 2, seed: 51), nchw: nchw, in: layout)
        let dy: [H] = arranged(Self.values(H.self, 6 * image, seed: 52), nchw: nchw, in: layout)
        let reducers = try InProcessReducer.makeGroup(rankCount: 3, timeout: .seconds(60))
        let outcomes = onRanks(3) { rank -> (y: [H], dx: [H])? in
            let start = slices[..<rank].reduce(0, +) * image, range = start..<(start + slices[rank] * image)
            let shape = dimensions([slices[rank], 4, 7, 7], in: layout)
            guard let forward = try? BatchNormalization.forwardTraining(Array(x[range]), shape: shape, layout: layout,
                                                                        reducer: reducers[rank]),
                  let gradients = try? BatchNormalization.backward(
                      outputGradient: Array(dy[range]), input: Array(x[range]), shape: shape, layout: layout,
                      statistics: forward.statistics, reducer: reducers[rank])
            else { return nil }
            return (forward.output, gradients.input!)
        }
        let ranks = try #require(outcomes.allSatisfy { $0 != nil } ? outcomes.map { $0! } : nil)
        let shape = dimensions(nchw, in: layout), channelsLast = layout == .channelsLast
        let truth = ReferenceBatchNorm.forward(x.map { Double($0.widened) }, shape: shape, channelsLast: channelsLast,
                                               training: true)
        let truthBack = ReferenceBatchNorm.backward(
            x.map { Double($0.widened) }, outputGradient: dy.map { Double($0.widened) }, shape: shape,
            channelsLast: channelsLast, training: true, mean: truth.mean, invStd: truth.invStd)
        #expect(Self.worstUlps(ranks.flatMap(\.y), truth.output) <= 1, "\(H.self) \(layout): y")
        #expect(Self.worstUlps(ranks.flatMap(\.dx), truthBack.inputGradient) <= 1, "\(H.self) \(layout): dx")
    }

    /// Errors are the same, and leave everything as it was.
    @Test func errorsAreCheckedBeforeAnythingIsWritten() throws {
        let x = Self.values(BFloat16.self, 24, seed: 41)
        expectThrows(.countMismatch, argument: "input") { () throws(BatchNormError) in
            _ = try BatchNormalization.forwardTraining(x, shape: [2, 3, 5])
        }
        #expect {
            _ = try BatchNormalization.forwardTraining(x, shape: [2, 3, 4], weight: [Float](repeating: 1, count: 2))
        } throws: { ($0 as? BatchNormError)?.argument == "weight" }
        var layer = try BatchNorm<Float16>(featureCount: 3)
        layer.runningMean = [0, 0]
        let before = layer.runningVariance
        expectThrows(.countMismatch, argument: "runningMean") { () throws(BatchNormError) in
            _ = try layer.forward(x.map { Float16($0.widened) }, shape: [2, 3, 4])
        }
        #expect(layer.runningVariance == before && layer.batchesTracked == 0)
    }
}
