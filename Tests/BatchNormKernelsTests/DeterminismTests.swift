@_spi(Testing) import BatchNormKernels
import Testing

/// The plan depends only on the shape and partial results merge in its fixed
/// order, so every executor and thread count gives the same bits.
@Suite struct DeterminismTests {
    static let shapes: [BatchNormShape] = [
        try! BatchNormShape([2, 3, 150, 150]), try! BatchNormShape([1, 1, 70_001]), try! BatchNormShape([10_000, 20]),
        try! BatchNormShape([17, 130]), try! BatchNormShape([4, 100, 3, 3]), try! BatchNormShape([1000, 3, 5, 5]),
        try! BatchNormShape([2, 150, 150, 3], layout: .channelsLast),
        try! BatchNormShape([16, 7, 7, 130], layout: .channelsLast),
        try! BatchNormShape([100, 5, 5, 3], layout: .channelsLast),
    ]

    func outputs<S: BatchNormScalar>(_: S.Type, shape: BatchNormShape, executor: BatchNormExecutor) throws -> [[S]] {
        let count = shape.count, channels = shape.channels
        let layout = shape.layout, shape = shape.dimensions
        let x: [S] = randomValues(count, center: 3, spread: 2, seed: 3)
        let dy: [S] = randomValues(count, seed: 4)
        let weight: [S] = randomValues(channels, center: 1, spread: 0.5, seed: 5)
        let bias: [S] = randomValues(channels, seed: 6)
        let forward = try BatchNormalization.forwardTraining(x, shape: shape, layout: layout, weight: weight,
                                                             bias: bias, executor: executor)
        let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                                        statistics: forward.statistics, weight: weight,
                                                        executor: executor)
        let statistics = (forward.statistics.mean + forward.statistics.invStd).map { S($0) }
        return [forward.output, statistics, gradients.input!, gradients.weight!, gradients.bias!]
    }

    @Test("bitwise identical for thread counts 1 to 4 and OpenMP, Dispatch, serial", arguments: shapes)
    func bitwiseIdentical(shape: BatchNormShape) throws {
        let expectedFloat = try outputs(Float.self, shape: shape, executor: .serial)
        let expectedDouble = try outputs(Double.self, shape: shape, executor: .serial)
        for executor in allExecutors {
            let float = try outputs(Float.self, shape: shape, executor: executor)
            let double = try outputs(Double.self, shape: shape, executor: executor)
            // Compare bit patterns, so that a NaN would not pass as "different".
            #expect(float.map { $0.map(\.bitPattern) } == expectedFloat.map { $0.map(\.bitPattern) }, "\(executor)")
            #expect(double.map { $0.map(\.bitPattern) } == expectedDouble.map { $0.map(\.bitPattern) }, "\(executor)")
        }
    }

    /// Where a fused item's second pass asks for the next item's x (float
    /// calls whose inputs outgrow the last-level cache; here every fused item,
    /// through the test hook), each worker takes its next item before it runs
    /// the one it holds: every item still runs once, and every output keeps
    /// its bits, on each kind of executor, with more workers than items, and
    /// in both layouts.
    @Test("fused items that ask for the next item's x keep every bit",
          arguments: [try! BatchNormShape([1, 9, 64, 64]), try! BatchNormShape([2, 12, 64, 64]),
                      try! BatchNormShape([5, 3000]), try! BatchNormShape([2, 3, 1, 2100], layout: .channelsLast)])
    func nextItemPrefetchKeepsBits(shape: BatchNormShape) throws {
        let expected = try outputs(Float.self, shape: shape, executor: .serial)
        BatchNormFaultInjection.prefetchNextItems(true)
        defer { BatchNormFaultInjection.prefetchNextItems(nil) }
        for executor in someExecutors + [.dispatch(threads: 4)] {
            let asking = try outputs(Float.self, shape: shape, executor: executor)
            #expect(asking.map { $0.map(\.bitPattern) } == expected.map { $0.map(\.bitPattern) }, "\(executor)")
        }
    }
}
