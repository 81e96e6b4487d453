import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import BatchNormReference
import Testing

/// Synchronized batch norm inside data-parallel training, as PyTorch's DDP
/// runs it: every rank holds a replica of the model and an equal slice of the
/// batch, computes the gradient of its own mean loss, and every gradient is
/// averaged across the ranks before the same SGD step on every replica. That
/// must give the parameters of one process training on the whole batch with
/// the mean loss.
@Suite struct DataParallelTests {
    /// h = x · W (x: N×D, W: D×C), y = BN(h) over C features, loss = mean((y − t)²).
    struct Model {
        var w: [Double]
        var bn: BatchNorm<Double>
        static let inputs = 3, features = 4

        init() throws {
            w = randomValues(Model.inputs * Model.features, spread: 1, seed: 90)
            bn = try BatchNorm<Double>(featureCount: Model.features, momentum: 0.2)
            bn.weight = randomValues(Model.features, center: 1, spread: 0.3, seed: 91)
            bn.bias = randomValues(Model.features, spread: 0.3, seed: 92)
        }

        /// This replica's gradients (dW, dγ, dβ) of the mean loss over `x`'s rows.
        mutating func gradients(
            x: [Double], t: [Double], reducer: (any BatchNormReducer)?, parameterGradients: BatchNormParameterGradients
        ) throws -> [Double] {
            let (d, c) = (Model.inputs, Model.features), n = x.count / d
            var h = [Double](repeating: 0, count: n * c)
            for i in 0..<n { for k in 0..<d { for j in 0..<c { h[i * c + j] += x[i * d + k] * w[k * c + j] } } }
            let forward = try bn.forward(h, shape: [n, c], reducer: reducer)
            let dy = zip(forward.output, t).map { 2 * ($0 - $1) / Double(n * c) }
            let g = try bn.backward(outputGradient: dy, input: h, shape: [n, c], statistics: forward.statistics,
                                    reducer: reducer, parameterGradients: parameterGradients)
            var dw = [Double](repeating: 0, count: d * c)
            for i in 0..<n { for k in 0..<d { for j in 0..<c { dw[k * c + j] += x[i * d + k] * g.input![i * c + j] } } }
            return dw + g.weight! + g.bias!
        }

        mutating func step(_ gradients: [Double], rate: Double) {
            let (d, c) = (Model.inputs, Model.features)
            for i in 0..<(d * c) { w[i] -= rate * gradients[i] }
            for j in 0..<c {
                bn.weight![j] -= rate * gradients[d * c + j]
                bn.bias![j] -= rate * gradients[d * c + c + j]
            }
        }

        var parameters: [Double] { w + bn.weight! + bn.bias! + bn.runningMean! + bn.runningVariance! }
    }

    static let steps = 4, rows = 24, rate = 0.5

    func batch(_ step: Int) -> (x: [Double], t: [Double]) {
        (randomValues(Self.rows * Model.inputs, center: 1, spread: 2, seed: UInt64(100 + step)),
         randomValues(Self.rows * Model.features, spread: 1, seed: UInt64(200 + step)))
    }

    /// One process on the whole batch.
    func single() throws -> [Double] {
        var model = try Model()
        for step in 0..<Self.steps {
            let (x, t) = batch(step)
            model.step(try model.gradients(x: x, t: t, reducer: nil, parameterGradients: .perRank), rate: Self.rate)
        }
        return model.parameters
    }

    /// R replicas on equal slices, gradients averaged across ranks as DDP does.
    func dataParallel(ranks: Int, parameterGradients: BatchNormParameterGradients) throws -> [[Double]?] {
        let reducers = try InProcessReducer.makeGroup(rankCount: ranks, timeout: .seconds(60))
        let slice = Self.rows / ranks
        return onRanks(ranks) { rank -> [Double]? in
            do {
                var model = try Model()
                for step in 0..<Self.steps {
                    let (x, t) = batch(step)
                    let mine = (rank * slice)..<((rank + 1) * slice)
                    let local = try model.gradients(
                        x: Array(x[(mine.lowerBound * Model.inputs)..<(mine.upperBound * Model.inputs)]),
                        t: Array(t[(mine.lowerBound * Model.features)..<(mine.upperBound * Model.features)]),
                        reducer: reducers[rank], parameterGradients: parameterGradients)
                    let averaged = try reducers[rank].sum(local).map { $0 / Double(ranks) }
                    model.step(averaged, rate: Self.rate)
                }
                return model.parameters
            } catch {
                return nil
            }
        }
    }

    @Test(arguments: [2, 3, 4])
    func averagedGradientsTrainAsOneProcessOnTheWholeBatch(ranks: Int) throws {
        let want = try single()
        let replicas = try dataParallel(ranks: ranks, parameterGradients: .perRank)
        for (rank, got) in replicas.enumerated() {
            let got = try #require(got, "rank \(rank) failed")
            // Double throughout: the replicas round differently from one process (sums over
            // slices, then across ranks), by a few ulps per step.
            #expect(ReferenceBatchNorm.normwiseError(got, want) <= 1e-12, "rank \(rank) of \(ranks)")
            #expect(got.map(\.bitPattern) == replicas[0]!.map(\.bitPattern), "replicas stay identical")
        }
        // The whole batch's dγ and dβ, averaged again, count them R times: the parameters drift away.
        let summed = try #require(try dataParallel(ranks: ranks, parameterGradients: .wholeBatch)[0])
        #expect(ReferenceBatchNorm.normwiseError(summed, want) > 1e-3)
    }

    /// A rank whose loss does not depend on the layer's output pulls back a zero
    /// (empty) tangent; it still joins the synchronized backward, so the other
    /// ranks finish instead of waiting for it.
    @Test func aZeroTangentOnOneRankStillJoinsTheCollective() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(30))
        let shape = try BatchNormShape([2, 3, 4])
        let results = onRanks(2) { rank -> [Double]? in
            guard let layer = try? DifferentiableBatchNorm<Double>(featureCount: 3, reducer: reducers[rank]) else {
                return nil
            }
            let x: [Double] = randomValues(shape.count, center: 1, spread: 2, seed: UInt64(rank))
            let (_, pullback) = valueWithPullback(at: x) { x in layer(x, shape: shape) }
            return pullback(rank == 0 ? .init(randomValues(shape.count, seed: 9)) : .zero).base
        }
        // Both finish (a rank left waiting would time out and stop the program). Rank 1's dx is
        // not zero: through the whole batch's μ and σ, rank 0's loss depends on rank 1's x.
        #expect(results[0]?.count == shape.count && results[1]?.count == shape.count)
        #expect(results[1]?.contains { $0 != 0 } == true)
    }

    /// Replicas copied from one differentiable layer share its running
    /// statistics; synchronized, each replica's call waits for the others in
    /// the exchange, so none may hold the statistics' lock meanwhile. They
    /// finish, and the statistics take the step's update once.
    @Test func replicasCopiedFromOneLayerDoNotDeadlock() throws {
        let reducers = try InProcessReducer.makeGroup(rankCount: 2, timeout: .seconds(30))
        let shape = try BatchNormShape([2, 3, 4])
        nonisolated(unsafe) let layer = try DifferentiableBatchNorm<Double>(featureCount: 3)   // copied, not shared, by each rank
        let x: [Double] = randomValues(2 * shape.count, center: 1, spread: 2, seed: 11)
        let outputs = onRanks(2) { rank -> [Double] in
            var replica = layer                  // a copy: the same running statistics
            replica.reducer = reducers[rank]
            return replica(Array(x[(rank * shape.count)..<((rank + 1) * shape.count)]), shape: shape)
        }
        #expect(outputs.allSatisfy { $0.count == shape.count })
        var single = try BatchNorm<Double>(featureCount: 3)
        _ = try single.forward(x, shape: [4, 3, 4])
        #expect(layer.runningStatistics!.batchesTracked == 1)
        #expect(ReferenceBatchNorm.normwiseError(layer.runningStatistics!.mean, single.runningMean!) <= 1e-15)
    }
}
