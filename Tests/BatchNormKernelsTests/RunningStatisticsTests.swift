import BatchNormKernels
import BatchNormReference
import Testing

/// Running statistics: momentum, cumulative average, unbiased variance,
/// inference mode, the batch counter, and value semantics of the layer.
@Suite struct RunningStatisticsTests {
    let shape = [6, 3, 4, 5]
    var m: Double { Double(6 * 4 * 5) }

    func batch(_ seed: UInt64) -> [Double] { randomValues(shape.reduce(1, *), center: Double(seed), spread: 3, seed: seed) }

    @Test("momentum: running ← (1 − momentum)·running + momentum·batch, unbiased variance")
    func momentumUpdate() throws {
        var layer = try BatchNorm<Double>(featureCount: 3, momentum: 0.25)
        let x = batch(1)
        _ = try layer.forward(x, shape: shape)
        let (mean, biased) = ReferenceBatchNorm.statistics(x, shape: shape)
        let wantMean = mean.map { 0.75 * 0 + 0.25 * $0 }
        let wantVariance = biased.map { 0.75 * 1 + 0.25 * $0 * m / (m - 1) }
        #expect(normwiseError(layer.runningMean!, wantMean) <= 1e-14)
        #expect(normwiseError(layer.runningVariance!, wantVariance) <= 1e-14)
        #expect(layer.batchesTracked == 1)
    }

    @Test("momentum nil: the running statistics are the plain average of every batch's")
    func cumulativeAverage() throws {
        var layer = try BatchNorm<Double>(featureCount: 3, momentum: nil)
        var means = [[Double]](), variances = [[Double]]()
        for seed in 1...4 as ClosedRange<UInt64> {
            let x = batch(seed)
            _ = try layer.forward(x, shape: shape)
            let (mean, biased) = ReferenceBatchNorm.statistics(x, shape: shape)
            means.append(mean)
            variances.append(biased.map { $0 * m / (m - 1) })
            let k = Double(means.count)
            let wantMean = (0..<3).map { c in means.map { $0[c] }.reduce(0, +) / k }
            let wantVariance = (0..<3).map { c in variances.map { $0[c] }.reduce(0, +) / k }
            #expect(normwiseError(layer.runningMean!, wantMean) <= 1e-14)
            #expect(normwiseError(layer.runningVariance!, wantVariance) <= 1e-14)
            #expect(layer.batchesTracked == means.count)
        }
    }

    @Test("inference mode normalizes with the running statistics and changes nothing")
    func inferenceUsesRunningStatistics() throws {
        var layer = try BatchNorm<Float>(featureCount: 3)
        layer.runningMean = [1, -2, 0.5]
        layer.runningVariance = [4, 0.25, 9]
        layer.weight = [2, 1, -1]
        layer.bias = [0, 1, 3]
        layer.mode = .inference
        let before = layer
        let x: [Float] = randomValues(shape.reduce(1, *), seed: 9)
        let result = try layer.forward(x, shape: shape)
        let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, training: false,
                                              weight: [2, 1, -1], bias: [0, 1, 3],
                                              runningMean: [1, -2, 0.5], runningVariance: [4, 0.25, 9])
        #expect(normwiseError(result.output, want.output) <= 1e-6)
        #expect(result.statistics.mode == .inference)
        #expect(layer.runningMean == before.runningMean && layer.runningVariance == before.runningVariance)
        #expect(layer.batchesTracked == 0)
    }

    @Test("without running statistics, both modes use the batch statistics (as PyTorch)")
    func untrackedUsesBatchStatistics() throws {
        var layer = try BatchNorm<Double>(featureCount: 3, tracksRunningStatistics: false, mode: .inference)
        let x = batch(2)
        let result = try layer.forward(x, shape: shape)
        let want = ReferenceBatchNorm.forward(x, shape: shape, training: true)
        #expect(normwiseError(result.output, want.output) <= 1e-13)
        #expect(layer.runningMean == nil && layer.batchesTracked == 0)
    }

    @Test("a copy of the layer does not share state")
    func valueSemantics() throws {
        var a = try BatchNorm<Float>(featureCount: 3)
        let b = a
        _ = try a.forward(randomValues(shape.reduce(1, *), center: 5, seed: 3), shape: shape)
        #expect(a.runningMean != b.runningMean)
        #expect(b.runningMean == [0, 0, 0] && b.runningVariance == [1, 1, 1] && b.batchesTracked == 0)
    }

    @Test("defaults: ε = 1e-5, momentum 0.1, γ = 1, β = 0, running mean 0 and variance 1")
    func defaults() throws {
        let layer = try BatchNorm<Float>(featureCount: 2)
        #expect(layer.epsilon == 1e-5 && layer.momentum == 0.1)
        #expect(layer.weight == [1, 1] && layer.bias == [0, 0])
        #expect(layer.runningMean == [0, 0] && layer.runningVariance == [1, 1])
        #expect(layer.mode == .training && layer.isAffine && layer.tracksRunningStatistics)
    }
}
