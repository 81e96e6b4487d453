@_spi(Testing) import BatchNormKernels
import BatchNormReference
import Foundation
import Testing

/// Runs `body(rank)` on `count` threads at once (each rank blocks in the
/// reducer until the others arrive, so they cannot share a smaller pool) and
/// returns the results in rank order.
func onRanks<T>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    let results = RankResults<T>(count)
    let done = DispatchGroup()
    for rank in 0..<count {
        done.enter()
        let thread = Thread {
            let value = body(rank)
            results.lock.withLock { results.values[rank] = value }
            done.leave()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
    done.wait()
    return results.values.map { $0! }
}

/// The results of `onRanks`, filled by its threads under a lock.
final class RankResults<T>: @unchecked Sendable {
    var values: [T?]
    let lock = NSLock()
    init(_ count: Int) { values = Array(repeating: nil, count: count) }
}

/// A slice's outcome: the forward output, statistics, running statistics and
/// the gradients, or the error the rank threw.
struct RankOutcome<S: BatchNormScalar>: @unchecked Sendable {
    var output: [S] = [], mean: [Double] = [], invStd: [Double] = []
    var runningMean: [S] = [], runningVariance: [S] = []
    var dx: [S] = [], dWeight: [S] = [], dBias: [S] = [], dz: [S] = []
    var error: BatchNormError?
}

/// Synchronized batch norm (a `reducer` on each call) over R ranks, each with
/// its own slice of one batch along N, against single-process batch norm on
/// the whole batch.
@Suite struct SynchronizedTests {
    /// The layer's other forms: without γ and β, with a cumulative average, a
    /// residual without the relu.
    struct Variant: Sendable {
        var affine = true
        var momentum: Double? = 0.3
        var residual: Bool? = nil   // nil: with the relu only
    }

    /// The layer every rank (and the single process) starts from.
    static func layer<S: BatchNormScalar>(_: S.Type, channels: Int, executor: BatchNormExecutor,
                                           activation: BatchNormActivation = .identity,
                                           variant: Variant = .init()) throws -> BatchNorm<S> {
        var layer = try BatchNorm<S>(featureCount: channels, momentum: variant.momentum, affine: variant.affine,
                                     activation: activation, executor: executor)
        if variant.affine {
            layer.weight = randomValues(channels, center: 1, spread: 0.5, seed: 71)
            layer.bias = randomValues(channels, seed: 72)
        }
        layer.runningMean = randomValues(channels, seed: 73)
        layer.runningVariance = randomValues(channels, center: 2, spread: 1, seed: 74)
        return layer
    }

    /// Forward and backward on each rank's slice (`slices[r]` images of the
    /// shape's other dimensions) in `mode`; with a residual `z`, the epilogue
    /// y = activation(BN(x) + z) and its gradient dz.
    static func synchronized<S: BatchNormScalar>(
        _: S.Type, shape: [Int], layout: BatchNormLayout, slices: [Int], x: [S], dy: [S], z: [S]? = nil,
        executor: BatchNormExecutor, mode: BatchNormMode, activation: BatchNormActivation = .identity,
        parameterGradients: BatchNormParameterGradients = .perRank, variant: Variant = .init()
    ) throws -> [RankOutcome<S>] {
        let channels = layout == .channelsFirst ? shape[1] : shape.last!
        let image = shape.dropFirst().reduce(1, *)
        let reducers = try InProcessReducer.makeGroup(rankCount: slices.count, timeout: .seconds(60))
        let starts = slices.indices.map { slices[..<$0].reduce(0, +) * image }
        let base = try layer(S.self, channels: channels, executor: executor, activation: activation, variant: variant)
        return onRanks(slices.count) { rank in
            var outcome = RankOutcome<S>()
            do throws(BatchNormError) {
                var layer = base
                layer.mode = mode
                var mine = shape
                mine[0] = slices[rank]
                let range = starts[rank]..<(starts[rank] + slices[rank] * image)
                let input = Array(x[range]), gradient = Array(dy[range]), residual = z.map { Array($0[range]) }
                let forward = try layer.forward(input, shape: mine, layout: layout, residual: residual,
                                                reducer: reducers[rank])
                let gradients = try layer.backward(
                    outputGradient: gradient, input: input, shape: mine, layout: layout,
                    statistics: forward.statistics, forwardOutput: z != nil ? forward.output : nil,
                    wantsResidualGradient: z != nil, reducer: reducers[rank], parameterGradients: parameterGradients)
                outcome.dz = gradients.residual ?? []
                outcome.output = forward.output
                outcome.mean = forward.statistics.mean
                outcome.invStd = forward.statistics.invStd
                outcome.runningMean = layer.runningMean!
                outcome.runningVariance = layer.runningVariance!
                outcome.dx = gradients.input!
                outcome.dWeight = gradients.weight ?? []
                outcome.dBias = gradients.bias ?? []
            } catch {
                outcome.error = error
            }
            return outcome
        }
    }

    /// The same on one process with the whole batch.
    static func single<S: BatchNormScalar>(
        _: S.Type, shape: [Int], layout: BatchNormLayout, x: [S], dy: [S], z: [S]? = nil,
        executor: BatchNormExecutor, mode: BatchNormMode, activation: BatchNormActivation = .identity,
        variant: Variant = .init()
    ) throws -> RankOutcome<S> {
        let channels = layout == .channelsFirst ? shape[1] : shape.last!
        var layer = try layer(S.self, channels: channels, executor: executor, activation: activation,
                              variant: variant)
        layer.mode = mode
        let forward = try layer.forward(x, shape: shape, layout: layout, residual: z)
        let gradients = try layer.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                           statistics: forward.statistics,
                                           forwardOutput: z != nil ? forward.output : nil,
                                           wantsResidualGradient: z != nil)
        return RankOutcome(output: forward.output, mean: forward.statistics.mean, invStd: forward.statistics.invStd,
                           runningMean: layer.runningMean!, runningVariance: layer.runningVariance!,
                           dx: gradients.input!, dWeight: gradients.weight ?? [], dBias: gradients.bias ?? [],
                           dz: gradients.residual ?? [])
    }

    func checkAgreement<S: BatchNormScalar>(
        _: S.Type, shape: [Int], layout: BatchNormLayout, slices: [Int], executor: BatchNormExecutor,
        mode: BatchNormMode, activation: BatchNormActivation, variant: Variant = .init()
    ) throws {
        let count = shape.reduce(1, *)
        let x: [S] = randomValues(count, center: 5, spread: 3, seed: UInt64(count))
        let dy: [S] = randomValues(count, seed: UInt64(count) + 1)
        // With the relu, a residual too: the whole epilogue, y = relu(BN(x) + z) and dz.
        let z: [S]? = variant.residual ?? (activation == .relu) ? randomValues(count, seed: UInt64(count) + 2) : nil
        let whole = try Self.single(S.self, shape: shape, layout: layout, x: x, dy: dy, z: z, executor: executor,
                                    mode: mode, activation: activation, variant: variant)
        let bound = S.self == Float.self ? 1e-6 : 1e-12
        for parameterGradients in [BatchNormParameterGradients.perRank, .wholeBatch] {
            let ranks = try Self.synchronized(S.self, shape: shape, layout: layout, slices: slices, x: x, dy: dy, z: z,
                                              executor: executor, mode: mode, activation: activation,
                                              parameterGradients: parameterGradients, variant: variant)
            let context = "\(shape) \(layout) slices \(slices) \(executor) \(mode) \(activation) \(S.self) "
                + "\(parameterGradients)"
            for rank in ranks { #expect(rank.error == nil, "\(context): \(rank.error!)") }
            guard ranks.allSatisfy({ $0.error == nil }) else { return }

            // Every rank holds bitwise the same statistics and running statistics.
            for rank in ranks.dropFirst() {
                #expect(rank.mean.map(\.bitPattern) == ranks[0].mean.map(\.bitPattern), "\(context): mean")
                #expect(rank.invStd.map(\.bitPattern) == ranks[0].invStd.map(\.bitPattern), "\(context): invStd")
                #expect(rank.runningMean.map(bitPattern) == ranks[0].runningMean.map(bitPattern), "\(context)")
                #expect(rank.runningVariance.map(bitPattern) == ranks[0].runningVariance.map(bitPattern),
                        "\(context)")
            }
            // ... equal, within the float or double kernels' bounds, to one process on the whole batch.
            var pairs: [(String, [Double], [Double], Double)] = [
                ("y", doubles(ranks.flatMap(\.output)), doubles(whole.output), 0),
                ("mean", ranks[0].mean, whole.mean, 0), ("invStd", ranks[0].invStd, whole.invStd, 0),
                ("running mean", doubles(ranks[0].runningMean), doubles(whole.runningMean), 0),
                ("running variance", doubles(ranks[0].runningVariance), doubles(whole.runningVariance), 0),
                ("dx", doubles(ranks.flatMap(\.dx)), doubles(whole.dx), 0),
                ("dz", doubles(ranks.flatMap(\.dz)), doubles(whole.dz), 0),
            ]
            switch parameterGradients {
            case .wholeBatch:
                // The whole batch's dγ and dβ, bitwise the same on every rank.
                for rank in ranks.dropFirst() {
                    #expect(rank.dWeight.map(bitPattern) == ranks[0].dWeight.map(bitPattern), "\(context): dγ")
                    #expect(rank.dBias.map(bitPattern) == ranks[0].dBias.map(bitPattern), "\(context): dβ")
                }
                pairs += [("dγ", doubles(ranks[0].dWeight), doubles(whole.dWeight), 0),
                          ("dβ", doubles(ranks[0].dBias), doubles(whole.dBias), 0)]
            case .perRank:
                // Each rank's part: summed over the ranks, the whole batch's. Each part is rounded
                // to the scalar type on its own, so the bound is taken against the largest part
                // (the scale), which the whole batch's value can be far below when parts cancel.
                func total(_ parts: [[S]]) -> [Double] {
                    (0..<parts[0].count).map { c in parts.reduce(0) { $0 + Double($1[c]) } }
                }
                func largest(_ parts: [[S]]) -> Double { parts.joined().map { abs(Double($0)) }.max() ?? 0 }
                pairs += [("dγ", total(ranks.map(\.dWeight)), doubles(whole.dWeight), largest(ranks.map(\.dWeight))),
                          ("dβ", total(ranks.map(\.dBias)), doubles(whole.dBias), largest(ranks.map(\.dBias)))]
            }
            for (name, got, want, scale) in pairs {
                let error = ReferenceBatchNorm.normwiseError(got, want, scale: scale)
                #expect(error <= bound, "\(context): \(name) normwise error \(error)")
            }
        }
    }

    /// 1 to 8 ranks (powers of two and not) with uneven slices (a slice of one image; with spatial
    /// size 1, one value per channel on a rank), both layouts and scalar types,
    /// training and inference, plain and with the fused residual add and ReLU.
    @Test(arguments: [
        ([4, 6, 5, 3], [4]), ([7, 6, 5, 3], [3, 4]), ([6, 3, 49], [1, 2, 3]), ([9, 20, 7, 7], [2, 3, 1, 3]),
        ([5, 130], [1, 1, 3]), ([4, 17, 1, 1], [1, 2, 1]), ([3, 40, 56, 56], [2, 1]), ([5, 4, 2, 3, 5], [2, 3]),
        ([9, 6, 5, 3], [1, 2, 1, 2, 3]), ([13, 5, 3, 3], [1, 1, 2, 1, 3, 4, 1]), ([16, 10, 7, 7], [2, 2, 2, 2, 2, 2, 2, 2]),
    ])
    func ranksAgreeWithOneProcessOnTheWholeBatch(shape: [Int], slices: [Int]) throws {
        for (index, layout) in [BatchNormLayout.channelsFirst, .channelsLast].enumerated() {
            let dims = dimensions(shape, in: layout)
            let executor = someExecutors[(index + slices.count) % someExecutors.count]
            let activation: BatchNormActivation = slices.count % 2 == 0 ? .relu : .identity
            for mode in [BatchNormMode.training, .inference] {
                try checkAgreement(Float.self, shape: dims, layout: layout, slices: slices, executor: executor,
                                   mode: mode, activation: activation)
                try checkAgreement(Double.self, shape: dims, layout: layout, slices: slices, executor: executor,
                                   mode: mode, activation: activation)
            }
        }
    }

    /// Without γ and β, with a cumulative average of the running statistics
    /// (momentum nil), a residual without the relu, and the relu without a
    /// residual (its backward mask recomputed from x on every rank).
    @Test(arguments: [BatchNormLayout.channelsFirst, .channelsLast])
    func otherLayerFormsAgreeWithOneProcess(layout: BatchNormLayout) throws {
        let variant = Variant(affine: false, momentum: nil, residual: true)
        for mode in [BatchNormMode.training, .inference] {
            try checkAgreement(Float.self, shape: dimensions([7, 6, 5, 3], in: layout), layout: layout,
                               slices: [3, 4], executor: .serial, mode: mode, activation: .relu,
                               variant: Variant(residual: false))
            try checkAgreement(Float.self, shape: dimensions([7, 6, 5, 3], in: layout), layout: layout,
                               slices: [3, 4], executor: .serial, mode: mode, activation: .identity, variant: variant)
            try checkAgreement(Double.self, shape: dimensions([9, 6, 5, 3], in: layout), layout: layout,
                               slices: [1, 2, 1, 2, 3], executor: .dispatch(threads: 2), mode: mode,
                               activation: .identity, variant: variant)
        }
    }

    /// With one rank, synchronized batch norm is the single-process kernel bit
    /// for bit: the merge of one set of partials is that set.
    @Test func oneRankIsTheSingleProcessKernelBitForBit() throws {
        for shape in [[4, 6, 5, 3], [300, 20], [2, 5, 56, 56]] {
            let count = shape.reduce(1, *)
            let x: [Float] = randomValues(count, center: 5, spread: 3, seed: 81)
            let dy: [Float] = randomValues(count, seed: 82)
            let rank = try Self.synchronized(Float.self, shape: shape, layout: .channelsFirst, slices: [shape[0]],
                                             x: x, dy: dy, executor: .dispatch(threads: 2), mode: .training)[0]
            let whole = try Self.single(Float.self, shape: shape, layout: .channelsFirst, x: x, dy: dy,
                                        executor: .dispatch(threads: 2), mode: .training)
            #expect(rank.error == nil)
            #expect(rank.output.map(bitPattern) == whole.output.map(bitPattern))
            #expect(rank.mean.map(\.bitPattern) == whole.mean.map(\.bitPattern))
            #expect(rank.invStd.map(\.bitPattern) == whole.invStd.map(\.bitPattern))
            #expect(rank.runningVariance.map(bitPattern) == whole.runningVariance.map(bitPattern))
            #expect(rank.dx.map(bitPattern) == whole.dx.map(bitPattern))
            #expect(rank.dWeight.map(bitPattern) == whole.dWeight.map(bitPattern))
        }
    }

    /// The ranks merge (count, mean, M2), so the variance stays exact where σ²
    /// is far below ε; rebuilding it from a rounded invstd, as a merge of
    /// means and inverse standard deviations must, loses it.
    @Test func varianceMergeStaysExactWhenVarianceIsFarBelowEpsilon() throws {
        let shape = [8, 3, 4, 4], slices = [3, 1, 4]
        let count = shape.reduce(1, *)
        // Values ±1e-6: σ² ≈ 3e-13, ε = 1e-5, so σ² + ε holds σ² in its last few float bits.
        let x: [Float] = randomValues(count, spread: 1e-6, seed: 91)
        let reducers = try InProcessReducer.makeGroup(rankCount: slices.count, timeout: .seconds(60))
        let image = shape.dropFirst().reduce(1, *)
        let outcomes = onRanks(slices.count) { rank -> (variance: [Float], invStd: [Double])? in
            guard var layer = try? BatchNorm<Float>(featureCount: 3, momentum: 1) else { return nil }
            let start = slices[..<rank].reduce(0, +) * image
            let input = Array(x[start..<(start + slices[rank] * image)])
            var mine = shape
            mine[0] = slices[rank]
            guard let forward = try? layer.forward(input, shape: mine, reducer: reducers[rank]) else { return nil }
            return (layer.runningVariance!, forward.statistics.invStd)
        }
        let truth = ReferenceBatchNorm.statistics(x.map(Double.init), shape: shape)
        for outcome in outcomes {
            let outcome = try #require(outcome)
            var rebuiltErrors: [Double] = []
            for c in 0..<3 {
                let m = Double(count / 3)
                let unbiased = truth.variance[c] * m / (m - 1)
                // Ours: the running variance (momentum 1) is the whole batch's unbiased σ², rounded to float.
                #expect(abs(Double(outcome.variance[c]) - unbiased) <= 1e-6 * unbiased)
                // From the same invstd rounded to float (PyTorch's SyncBatchNorm keeps invstd in the
                // tensor's type and each rank's variance is rebuilt as 1/invstd² − ε):
                let invStd = Double(Float(outcome.invStd[c]))
                rebuiltErrors.append(abs(1 / (invStd * invStd) - 1e-5 - truth.variance[c]) / truth.variance[c])
            }
            #expect(rebuiltErrors.max()! > 0.1, "rebuilding σ² from invstd lost only \(rebuiltErrors)")
        }
    }
}

/// Errors of synchronized calls are collective: every rank throws, none waits
/// for ever, and none writes anything.
@Suite struct SynchronizedErrorTests {
    /// What one rank does: its layer, its call, and what it saw afterwards.
    struct Call: Sendable {
        var shape: [Int]
        var layout: BatchNormLayout = .channelsFirst
        var mode: BatchNormMode = .training
        var epsilon = 1e-5
        var weightCount: Int? = nil
        var double = false
        var activation: BatchNormActivation = .identity
        var affine = true
        var momentum: Double? = 0.1
        var tracks = true
        var residual = false
    }

    /// Runs `calls[r]` on rank r (forward) and returns each rank's error, and
    /// whether its layer and output stayed as they were.
    static func run(_ calls: [Call]) throws -> [(error: BatchNormError?, untouched: Bool)] {
        let reducers = try InProcessReducer.makeGroup(rankCount: calls.count, timeout: .seconds(60))
        return onRanks(calls.count) { rank in
            let call = calls[rank]
            let channels = call.layout == .channelsFirst ? call.shape[1] : call.shape.last!
            func attempt<S: BatchNormScalar>(_: S.Type) -> (BatchNormError?, Bool) {
                do throws(BatchNormError) {
                    var layer = try BatchNorm<S>(
                        featureCount: channels, epsilon: call.epsilon, momentum: call.momentum, affine: call.affine,
                        tracksRunningStatistics: call.tracks, mode: call.mode, activation: call.activation)
                    if let count = call.weightCount { layer.weight = Array(repeating: 1, count: count) }
                    let before = (layer.runningMean, layer.runningVariance, layer.batchesTracked)
                    let x: [S] = randomValues(call.shape.reduce(1, *), seed: 5)
                    var output = [S](repeating: 7, count: x.count)
                    do throws(BatchNormError) {
                        try layer.forward(x, into: &output, shape: call.shape, layout: call.layout,
                                          residual: call.residual ? x : nil, reducer: reducers[rank])
                        return (nil, false)
                    } catch {
                        let untouched = output.allSatisfy { $0 == 7 } && layer.runningMean == before.0
                            && layer.runningVariance == before.1 && layer.batchesTracked == before.2
                        return (error, untouched)
                    }
                } catch {
                    return (error, true)
                }
            }
            return call.double ? attempt(Double.self) : attempt(Float.self)
        }
    }

    @Test(arguments: [
        ("channels", [Call(shape: [2, 3, 4]), Call(shape: [2, 4, 4])]),
        ("spatial size", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 5]), Call(shape: [2, 3, 4])]),
        ("layout", [Call(shape: [2, 3, 4]), Call(shape: [2, 4, 3], layout: .channelsLast)]),
        ("scalar type", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], double: true)]),
        ("mode", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], mode: .inference)]),
        ("epsilon", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], epsilon: 1e-3)]),
        ("activation", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], activation: .relu)]),
        ("residual", [Call(shape: [2, 3, 4], residual: true), Call(shape: [2, 3, 4])]),
        ("weight and bias", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], affine: false)]),
        ("momentum", [Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], momentum: 0.3)]),
        ("momentum", [Call(shape: [2, 3, 4], tracks: false), Call(shape: [2, 3, 4])]),
    ])
    func ranksThatDisagreeAllThrowTheSameErrorAndWriteNothing(field: String, calls: [Call]) throws {
        let outcomes = try Self.run(calls)
        let first = try #require(outcomes[0].error)
        #expect(first.code == .rankMismatch && first.argument == field, "\(first)")
        for outcome in outcomes {
            #expect(outcome.error == first)
            #expect(outcome.untouched)
        }
    }

    /// Backward with statistics other than the ones the ranks share (this
    /// rank's own, from a local forward) would give silently wrong gradients.
    @Test func ranksGivenDifferentStatisticsToBackwardAllThrow() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(60))
        let errors = onRanks(2) { rank -> BatchNormError? in
            let x: [Float] = randomValues(24, center: 1, spread: 2, seed: UInt64(rank))
            do throws(BatchNormError) {
                let synchronized = try BatchNormalization.forwardTraining(x, shape: [2, 3, 4], reducer: reducers[rank])
                let local = try BatchNormalization.forwardTraining(x, shape: [2, 3, 4])
                _ = try BatchNormalization.backward(
                    outputGradient: x, input: x, shape: [2, 3, 4],
                    statistics: rank == 0 ? synchronized.statistics : local.statistics, reducer: reducers[rank])
                return nil
            } catch {
                return error
            }
        }
        #expect(errors[0]?.code == .rankMismatch && errors[0]?.argument == "statistics", "\(String(describing: errors[0]))")
        #expect(errors[1] == errors[0])
    }

    /// Backward's errors are collective as forward's: a rank whose own
    /// arguments fail throws its error, the others `rankFailed`, and nobody's
    /// gradient arrays change.
    @Test func aRankWhoseBackwardArgumentsFailMakesEveryRankThrow() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 3, timeout: .seconds(60))
        let outcomes = onRanks(3) { rank -> (BatchNormError?, Bool) in
            let x: [Float] = randomValues(24, center: 1, spread: 2, seed: UInt64(rank))
            var gradients = BatchNormGradients<Float>(input: [Float](repeating: 7, count: 24))
            do throws(BatchNormError) {
                let forward = try BatchNormalization.forwardTraining(x, shape: [2, 3, 4], reducer: reducers[rank])
                let dy = rank == 2 ? Array(x.prefix(20)) : x                       // rank 2: 20 values, not 24
                try BatchNormalization.backward(outputGradient: dy, input: x, shape: [2, 3, 4],
                                                statistics: forward.statistics, into: &gradients,
                                                reducer: reducers[rank])
                return (nil, false)
            } catch {
                return (error, gradients.input!.allSatisfy { $0 == 7 })
            }
        }
        #expect(outcomes[2].0?.code == .countMismatch && outcomes[2].0?.argument == "outputGradient")
        for rank in [0, 1] {
            #expect(outcomes[rank].0?.code == .rankFailed && outcomes[rank].0?.argument == "rank 2")
        }
        #expect(outcomes.allSatisfy { $0.1 })
    }

    @Test func aRankWhoseArgumentsFailMakesEveryRankThrow() throws {
        let outcomes = try Self.run([Call(shape: [2, 3, 4]), Call(shape: [2, 3, 4], weightCount: 2),
                                     Call(shape: [2, 3, 4])])
        #expect(outcomes[1].error?.code == .countMismatch && outcomes[1].error?.argument == "weight")
        for rank in [0, 2] {
            #expect(outcomes[rank].error?.code == .rankFailed && outcomes[rank].error?.argument == "rank 1",
                    "\(String(describing: outcomes[rank].error))")
        }
        #expect(outcomes.allSatisfy { $0.untouched })
    }

    @Test func aShapeErrorBeforeTheKernelCallIsCollectiveToo() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(60))
        let errors = onRanks(2) { rank -> BatchNormError? in
            let shape = rank == 0 ? [2, 3, 4] : [2, 0, 4]
            do throws(BatchNormError) {
                _ = try BatchNormalization.forwardTraining([Float](repeating: 1, count: 24), shape: shape,
                                                          reducer: reducers[rank])
                return nil
            } catch { return error }
        }
        #expect(errors[0]?.code == .rankFailed)
        #expect(errors[1]?.code == .invalidDimension)
    }

    @Test func oneValueInTheWholeBatchThrowsAndTwoRanksOfOneValueEachNormalize() throws {
        // One value per channel on the only rank: m = 1 over the whole batch.
        let reducers = try InProcessReducer.makeGroup(rankCount: 1)
        expectThrows(.tooFewValuesPerChannel, argument: "shape") { () throws(BatchNormError) in
            _ = try BatchNormalization.forwardTraining([Float](repeating: 1, count: 3), shape: [1, 3],
                                                      reducer: reducers[0])
        }
        // One value per channel on each of two ranks: m = 2, allowed.
        let pair = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(60))
        let outputs = onRanks(2) { rank in
            try? BatchNormalization.forwardTraining([Float(rank), 5], shape: [1, 2], reducer: pair[rank]).output
        }
        // Channel 0 holds {0, 1} over the two ranks: y = ∓0.5 / sqrt(0.25 + ε); channel 1 is constant.
        let y = Float(0.5 / (0.25 + 1e-5).squareRoot())
        #expect(outputs[0] == [-y, 0] && outputs[1] == [y, 0], "\(outputs)")
    }

    /// `allReduce` merges in the documented tree, the same bits on every rank:
    /// with P the largest power of two ≤ R, rank r ≥ P folded into r − P, then
    /// pairs at distances 1, 2, 4, …, the lower ranks' values first. The merge
    /// here is not commutative (3a + b), so any other order gives other bits.
    @Test(arguments: Array(1...17))
    func allReduceMergesInTheDocumentedTreeOnEveryRank(rankCount: Int) throws {
        @Sendable func merge(_ a: [Double], _ b: [Double]) -> [Double] { zip(a, b).map { 3 * $0 + $1 } }
        var powerOfTwo = 1
        while powerOfTwo * 2 <= rankCount { powerOfTwo *= 2 }
        var folded = (0..<powerOfTwo).map { [Double($0 + 1), -Double($0)] }
        for r in powerOfTwo..<rankCount { folded[r - powerOfTwo] = merge(folded[r - powerOfTwo], [Double(r + 1), -Double(r)]) }
        func tree(_ range: Range<Int>) -> [Double] {
            range.count == 1 ? folded[range.lowerBound]
                : merge(tree(range.lowerBound..<(range.lowerBound + range.count / 2)),
                        tree((range.lowerBound + range.count / 2)..<range.upperBound))
        }
        let want = tree(0..<powerOfTwo)
        let reducers = try InProcessReducer.makeGroup(rankCount: rankCount, timeout: .seconds(60))
        let results = onRanks(rankCount) { rank in
            try? reducers[rank].allReduce([Double(rank + 1), -Double(rank)], merge: merge)
        }
        for (rank, result) in results.enumerated() {
            #expect(result == want, "rank \(rank) of \(rankCount)")
        }
        let sums = onRanks(rankCount) { rank in try? reducers[rank].sum([Double(rank), 1]) }
        #expect(sums.allSatisfy { $0 == [Double(rankCount * (rankCount - 1) / 2), Double(rankCount)] })
    }

    /// The tree's merge of random uneven slices (some of one value per channel,
    /// data far from zero) against the float64 statistics of the whole batch.
    @Test(arguments: [3, 5, 8, 13])
    func treeMergedStatisticsMatchTheFloat64Reference(rankCount: Int) throws {
        var rng = SplitMix64(seed: UInt64(rankCount))
        let channels = 6, spatial = 5
        let slices = (0..<rankCount).map { _ in Int.random(in: 1...4, using: &rng) }
        let center = Double(Int.random(in: -1000...1000, using: &rng))
        let x: [Double] = randomValues(slices.reduce(0, +) * channels * spatial, center: center, spread: 3,
                                       seed: UInt64(rankCount) + 7)
        let starts = slices.indices.map { slices[..<$0].reduce(0, +) * channels * spatial }
        let reducers = try InProcessReducer.makeGroup(rankCount: rankCount, timeout: .seconds(60))
        let statistics = onRanks(rankCount) { rank -> BatchNormStatistics? in
            let mine = Array(x[starts[rank]..<(starts[rank] + slices[rank] * channels * spatial)])
            return try? BatchNormalization.forwardTraining(mine, shape: [slices[rank], channels, spatial],
                                                           epsilon: 0, reducer: reducers[rank]).statistics
        }
        let want = ReferenceBatchNorm.statistics(x, shape: [x.count / (channels * spatial), channels, spatial])
        for (rank, got) in statistics.enumerated() {
            let got = try #require(got, "rank \(rank)")
            // Both sides sum at most 13 · 4 · 5 = 260 doubles per channel in different orders: a
            // few dozen units of double's rounding (1.1e-16) apart, at most, in the mean.
            #expect(ReferenceBatchNorm.normwiseError(got.mean, want.mean) <= 1e-14, "rank \(rank): mean")
            // Sums about a pivot lose at most a factor of the count (260) of double's rounding
            // whatever the offset (docs/design.md), and σ² = 1/r² two roundings more:
            // 260 · 1.1e-16 ≈ 3e-14, so 1e-13 (measured: 6e-15).
            let variance = got.invStd.map { 1 / ($0 * $0) }
            #expect(ReferenceBatchNorm.normwiseError(variance, want.variance) <= 1e-13, "rank \(rank): variance")
            #expect(got == statistics[0], "rank \(rank): the same bits on every rank")
        }
    }

    /// A rank whose core runs out of memory in its partial pass, after the
    /// agreement, still joins the exchange of partials: every rank throws
    /// (that rank `outOfMemory`, the others `rankFailed`), none writes
    /// anything, and no rank is left waiting.
    @Test(arguments: [BatchNormMode.training, .inference])
    func aRankThatRunsOutOfMemoryBetweenTheExchangesMakesEveryRankThrow(mode: BatchNormMode) throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(10))
        let outcomes = onRanks(2) { rank -> (forward: BatchNormError?, backward: BatchNormError?, untouched: Bool) in
            let x: [Float] = randomValues(24, center: 1, spread: 2, seed: UInt64(rank))
            var y = [Float](repeating: 7, count: 24)
            var layer = try! BatchNorm<Float>(featureCount: 3)
            defer { BatchNormFaultInjection.failJobCreation(after: nil) }
            if rank == 1 { BatchNormFaultInjection.failJobCreation(after: 0) }   // its partial pass
            var forwardError: BatchNormError?
            do throws(BatchNormError) {
                try layer.forward(x, into: &y, shape: [2, 3, 4], reducer: reducers[rank])
            } catch {
                forwardError = error
            }
            let untouched = y.allSatisfy { $0 == 7 } && layer.batchesTracked == 0
            // Backward after a good forward: the failure in the sums' pass.
            guard let statistics = try? layer.forward(x, into: &y, shape: [2, 3, 4], reducer: reducers[rank]) else {
                return (forwardError, nil, false)
            }
            var gradients = BatchNormGradients<Float>(input: [Float](repeating: 7, count: 24))
            if rank == 1 { BatchNormFaultInjection.failJobCreation(after: 0) }
            var backwardError: BatchNormError?
            let inMode = BatchNormStatistics(mode: mode, mean: statistics.mean, invStd: statistics.invStd)
            do throws(BatchNormError) {
                try layer.backward(outputGradient: x, input: x, shape: [2, 3, 4], statistics: inMode,
                                   into: &gradients, reducer: reducers[rank], parameterGradients: .wholeBatch)
            } catch {
                backwardError = error
            }
            return (forwardError, backwardError, untouched && gradients.input!.allSatisfy { $0 == 7 })
        }
        #expect(outcomes[1].forward?.code == .outOfMemory && outcomes[1].backward?.code == .outOfMemory)
        #expect(outcomes[0].forward?.code == .rankFailed && outcomes[0].forward?.argument == "rank 1")
        #expect(outcomes[0].backward?.code == .rankFailed && outcomes[0].backward?.argument == "rank 1")
        #expect(outcomes[0].untouched && outcomes[1].untouched)
    }

    /// Whichever of a synchronized call's jobs fails to allocate on one rank
    /// (the hook's `after` counts the call's job creations), the ranks end
    /// alike: every rank throws and writes nothing (that rank `outOfMemory`,
    /// the others `rankFailed`), or, past the call's last job, every rank
    /// succeeds. The jobs that run after the last exchange are made before it.
    @Test(arguments: [BatchNormMode.training, .inference], [BatchNormParameterGradients.perRank, .wholeBatch])
    func whicheverJobFailsToAllocateEveryRankEndsAlike(mode: BatchNormMode,
                                                       parameterGradients: BatchNormParameterGradients) throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(10))
        for failing in 0..<4 {
            let outcomes = onRanks(2) { rank -> [(error: BatchNormError?, untouched: Bool)] in
                let x: [Float] = randomValues(24, center: 1, spread: 2, seed: UInt64(rank))
                var layer = try! BatchNorm<Float>(featureCount: 3)
                layer.mode = mode
                defer { BatchNormFaultInjection.failJobCreation(after: nil) }
                var y = [Float](repeating: 7, count: 24)
                if rank == 1 { BatchNormFaultInjection.failJobCreation(after: failing) }
                var forwardError: BatchNormError?
                do throws(BatchNormError) {
                    try layer.forward(x, into: &y, shape: [2, 3, 4], reducer: reducers[rank])
                } catch {
                    forwardError = error
                }
                BatchNormFaultInjection.failJobCreation(after: nil)
                let forwardUntouched = y.allSatisfy { $0 == 7 } && layer.batchesTracked == 0
                guard let statistics = try? layer.forward(x, into: &y, shape: [2, 3, 4], reducer: reducers[rank])
                else { return [(forwardError, forwardUntouched)] }
                var gradients = BatchNormGradients<Float>(
                    input: [Float](repeating: 7, count: 24), weight: [7, 7, 7], bias: [7, 7, 7])
                if rank == 1 { BatchNormFaultInjection.failJobCreation(after: failing) }
                var backwardError: BatchNormError?
                do throws(BatchNormError) {
                    try layer.backward(outputGradient: x, input: x, shape: [2, 3, 4], statistics: statistics,
                                       into: &gradients, reducer: reducers[rank],
                                       parameterGradients: parameterGradients)
                } catch {
                    backwardError = error
                }
                let backwardUntouched = (gradients.input! + gradients.weight! + gradients.bias!).allSatisfy { $0 == 7 }
                return [(forwardError, forwardUntouched), (backwardError, backwardUntouched)]
            }
            #expect(outcomes[0].count == outcomes[1].count, "job \(failing): one rank's forward failed alone")
            for (pass, (zero, one)) in zip(["forward", "backward"], zip(outcomes[0], outcomes[1])) {
                if one.error == nil {
                    #expect(zero.error == nil, "job \(failing), \(pass): rank 0 threw \(zero.error!) alone")
                    continue
                }
                #expect(one.error?.code == .outOfMemory && one.untouched, "job \(failing), \(pass)")
                #expect(zero.error?.code == .rankFailed && zero.error?.argument == "rank 1" && zero.untouched,
                        "job \(failing), \(pass): rank 0 \(String(describing: zero.error))")
            }
            // The first job fails in every pass.
            if failing == 0 { #expect(outcomes[1].allSatisfy { $0.error != nil }) }
        }
    }

    /// A reducer that fails the way a transport can.
    struct FaultyReducer: BatchNormReducer {
        enum Fault { case throwing, shortResult, inconsistentCounts, notANumber, rankOutOfRange }
        let fault: Fault
        var rank: Int { 0 }
        var rankCount: Int { 2 }
        struct TransportDown: Error {}
        /// Plays rank 1 holding rank 0's values, but for the fault.
        func exchange(_ values: [Double], with partner: Int) throws -> [Double] {
            switch fault {
            case .throwing: throw TransportDown()
            case .shortResult: return Array(values.dropLast())
            case .inconsistentCounts:
                // The agreement passes; the partials (3 per channel) come back with channel 1's count changed.
                var other = values
                if values.count == 9 + 2 { other[3] += 1 }   // 3 channels × (count, mean, M2), and the status
                return other
            case .notANumber:
                // Every value garbled, the agreement's summary included.
                return values.map { _ in .nan }
            case .rankOutOfRange:
                // The agreement's summary names a failed rank that is not in the group, with no valid code.
                var other = values
                (other[0], other[1]) = (7, .infinity)
                return other
            }
        }
    }

    @Test(arguments: [FaultyReducer.Fault.throwing, .shortResult, .inconsistentCounts, .notANumber,
                      .rankOutOfRange])
    func aFailingReducerThrowsCommunicationFailedAndWritesNothing(fault: FaultyReducer.Fault) throws {
        var layer = try BatchNorm<Float>(featureCount: 3)
        #expect {
            _ = try layer.forward([Float](repeating: 1, count: 24), shape: [2, 3, 4],
                                  reducer: FaultyReducer(fault: fault))
        } throws: { ($0 as? BatchNormError)?.code == .communicationFailed }
        #expect(layer.runningMean == [0, 0, 0] && layer.batchesTracked == 0)
    }

    /// Two callers on one rank's reducer: the second throws at once; the first
    /// times out waiting for the other rank, and the group is then broken for
    /// every later call, exchanges included.
    @Test func aReducerCalledTwiceInOneRoundThrowsAndATimedOutGroupStaysBroken() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .milliseconds(500))
        let errors = onRanks(2) { caller -> BatchNormError? in
            if caller == 1 { Thread.sleep(forTimeInterval: 0.1) }   // the first caller deposits first
            do {
                _ = try reducers[0].allGather([Double(caller)])
                return nil
            } catch {
                return error as? BatchNormError
            }
        }
        #expect(errors[1]?.code == .communicationFailed && errors[1]?.actual.contains("twice") == true,
                "\(String(describing: errors[1]))")
        #expect(errors[0]?.code == .communicationFailed && errors[0]?.actual.contains("timed out") == true,
                "\(String(describing: errors[0]))")
        for call in [{ _ = try reducers[1].allGather([1]) }, { _ = try reducers[1].exchange([1], with: 0) }] {
            #expect { try call() } throws: {
                ($0 as? BatchNormError)?.code == .communicationFailed
                    && ($0 as? BatchNormError)?.actual.contains("broke") == true
            }
        }
    }

    @Test func aRankThatNeverCallsTimesOutInsteadOfHanging() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .milliseconds(200))
        #expect {
            _ = try BatchNormalization.forwardTraining([Float](repeating: 1, count: 24), shape: [2, 3, 4],
                                                      reducer: reducers[0])
        } throws: { ($0 as? BatchNormError)?.code == .communicationFailed }
    }
}
