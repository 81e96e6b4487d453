@_spi(Testing) import BatchNormKernels
import BatchNormReference
import Testing

/// Outputs of calls whose tensors outgrow the last-level cache are written
/// with non-temporal stores after a scalar prologue that aligns them. These tests reach that path on small
/// tensors, every output streamed (a test hook, per thread), so that they run
/// in every build, the sanitizers' included: both layouts, run lengths that
/// leave every kind of remainder, the half formats and the fused epilogue.
/// Channels last with at most 1024 channels, an item's rows are one run whose
/// vectors cross row ends (100 channels: the crossing moves from row to row;
/// 3: a vector spans several rows).
@Suite struct StreamedOutputTests {
    func streamingEveryOutput<Result>(_ body: () throws -> Result) rethrows -> Result {
        BatchNormFaultInjection.streamOutputs(from: 0)
        defer { BatchNormFaultInjection.streamOutputs(from: nil) }
        return try body()
    }

    @Test("streamed outputs match the float64 reference",
          arguments: [([1, 2, 50, 53], BatchNormLayout.channelsFirst), ([301, 1030], .channelsFirst),
                      ([2, 100, 12, 13], .channelsLast), ([3, 3, 17, 19], .channelsLast)])
    func streamedOutputs(nchw: [Int], layout: BatchNormLayout) throws {
        try streamingEveryOutput { try StreamingStoreTests.checkFloat(nchw: nchw, layout: layout) }
    }

    /// Streamed, a channels-first item writes each image's whole planes as one
    /// run across its channels, each vector that reaches into the next plane
    /// taking each lane's coefficients from its own plane: every output (y
    /// with residual and relu, dx, dz, inference dx) is the bits of the
    /// unstreamed call, on planes of 49 and 51 values (vectors cross plane
    /// ends at every offset) and of 56×56, on every executor.
    @Test("streamed outputs are the bits of unstreamed ones", arguments: [[3, 40, 7, 7], [2, 20, 17, 3], [2, 5, 56, 56]])
    func streamedOutputsKeepTheirBits(nchw: [Int]) throws {
        let count = nchw.reduce(1, *), channels = nchw[1]
        let x: [Float] = randomValues(count, center: 0.2, spread: 2, seed: 91)
        let z: [Float] = randomValues(count, seed: 92), dy: [Float] = randomValues(count, seed: 93)
        let weight: [Float] = randomValues(channels, center: 1, spread: 0.5, seed: 94)
        func run(_ executor: BatchNormExecutor) throws -> [[UInt32]] {
            let forward = try BatchNormalization.forwardTraining(x, shape: nchw, weight: weight, residual: z,
                                                                 activation: .relu, executor: executor)
            let g = try BatchNormalization.backward(
                outputGradient: dy, input: x, shape: nchw, statistics: forward.statistics, weight: weight,
                activation: .relu, forwardOutput: forward.output, wantsResidualGradient: true, executor: executor)
            var statistics = forward.statistics
            statistics.mode = .inference
            let inference = try BatchNormalization.backward(outputGradient: dy, input: x, shape: nchw,
                                                            statistics: statistics, weight: weight,
                                                            executor: executor)
            return [forward.output, g.input!, g.residual!, inference.input!].map { $0.map(\.bitPattern) }
        }
        for executor in someExecutors {
            let cached = try run(executor)
            let streamed = try streamingEveryOutput { try run(executor) }
            #expect(streamed == cached, "\(executor)")
        }
    }

    /// Outputs that nearly cancel, which the half formats' check sends to
    /// double, in streamed runs of whole planes: the double recomputation of a
    /// vector across a plane end takes each lane's own plane's coefficients
    /// (a lane given its neighbour plane's would be off by far more than an ulp).
    @Test func streamedCancellingHalfOutputsStayWithinOneUlp() throws {
        try streamingEveryOutput {
            for nchw in [[2, 70, 7, 7], [3, 9, 17, 3]] {
                try HalfPrecisionTests().checkAgainstReference(Float16.self, nchw: nchw, layout: .channelsFirst,
                                                               center: 0, spread: 3, executor: .serial,
                                                               cancelling: true)
                try HalfPrecisionTests().checkAgainstReference(BFloat16.self, nchw: nchw, layout: .channelsFirst,
                                                               center: 100, spread: 1, executor: .serial,
                                                               cancelling: true)
            }
        }
    }

    /// The half formats stream whole 64-byte lines (two vectors joined):
    /// every value still within one ulp of the float64 result, with the fused
    /// residual and relu (Float16, 3 channels last: vectors span rows) and
    /// without (BFloat16, channels first).
    @Test func streamedHalfOutputsStayWithinOneUlp() throws {
        try streamingEveryOutput {
            try HalfPrecisionTests().checkAgainstReference(Float16.self, nchw: [1, 3, 29, 29], layout: .channelsLast,
                                                           center: 0, spread: 3, executor: .automatic, activation: .relu)
            try HalfPrecisionTests().checkAgainstReference(BFloat16.self, nchw: [1, 5, 23, 23],
                                                           layout: .channelsFirst, center: 0, spread: 3,
                                                           executor: .automatic)
        }
    }
}

/// The same float checks on tensors the kernels stream themselves: 48 MiB
/// of output, whose calls touch 96 MiB, more than the last-level cache of
/// the machines CI runs on. Tensors this large take minutes in a debug build, so these run
/// only when BATCHNORM_LARGE_TESTS=1 (CI sets it).
@Suite(.enabled(if: largeTestsEnabled)) struct StreamingStoreTests {
    @Test("outputs past the streaming threshold match the float64 reference",
          arguments: [([1, 2, 2500, 2601], BatchNormLayout.channelsFirst), ([12_301, 1030], .channelsFirst),
                      ([2, 100, 252, 252], .channelsLast)])
    func streamedOutputs(nchw: [Int], layout: BatchNormLayout) throws {
        let count = nchw.reduce(1, *)
        #expect(count * MemoryLayout<Float>.size >= 48 << 20)
        try Self.checkFloat(nchw: nchw, layout: layout)
    }

    /// Forward training, backward and inference backward of float `x` against
    /// the float64 reference, on every executor.
    static func checkFloat(nchw: [Int], layout: BatchNormLayout) throws {
        let shape = dimensions(nchw, in: layout), channelsLast = layout == .channelsLast
        let count = nchw.reduce(1, *), channels = nchw[1]
        let x: [Float] = randomValues(count, center: 1, spread: 3, seed: 61)
        let dy: [Float] = randomValues(count, seed: 62)
        let weight: [Float] = randomValues(channels, center: 1, spread: 0.5, seed: 63)
        let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, channelsLast: channelsLast, training: true,
                                              weight: doubles(weight))
        let wantBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                   channelsLast: channelsLast, training: true, mean: want.mean,
                                                   invStd: want.invStd, weight: doubles(weight))
        let wantInference = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                        channelsLast: channelsLast, training: false,
                                                        mean: want.mean, invStd: want.invStd, weight: doubles(weight))
        for executor in someExecutors {
            let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                                 executor: executor)
            #expect(normwiseError(forward.output, want.output) <= Bound.forward(Float.self))
            let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                            layout: layout, statistics: forward.statistics,
                                                            weight: weight, executor: executor)
            #expect(normwiseError(gradients.input!, wantBack.inputGradient) <= Bound.backward(Float.self))
            var inference = forward.statistics
            inference.mode = .inference
            let inferenceGradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                                     layout: layout, statistics: inference,
                                                                     weight: weight, executor: executor)
            #expect(normwiseError(inferenceGradients.input!, wantInference.inputGradient) <= Bound.backward(Float.self))
        }
    }
}
