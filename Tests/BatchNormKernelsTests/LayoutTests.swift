import BatchNormKernels
import Foundation
import Testing

/// A channels-last call computes, in the same order, what the channels-first
/// call computes on the transposed tensor: every output the same bits.
@Suite struct LayoutTests {
    /// Shapes `[N, C, S…]` that reach every part of both walks: runs shorter
    /// than 16 (tails only), with lanes and a tail (S = 49, 196), runs split
    /// by statistics blocks (S = 3136, 12544 > 2048), several parts per
    /// channel, fused and unfused items, a ragged second channel block of the
    /// columns walk (C = 1100), unfused columns items whose elementwise pass
    /// takes whole rows of more than one channel block (16×1100×17) or rows in
    /// blocks (16×2100×17), one channel (the same memory in both layouts) and
    /// rank 2 (likewise).
    static let shapes: [[Int]] = [
        [4, 3, 5], [2, 70, 7, 7], [3, 130, 14, 14], [2, 5, 56, 56], [1, 3, 112, 112], [64, 40, 7, 7],
        [5, 17, 3, 2, 3], [40, 9, 33], [6, 1, 49], [300, 20], [2, 200, 17], [2, 1100, 17],
        [16, 1100, 17], [16, 2100, 17],
    ]

    /// Every output of forward (training and inference) and backward (both
    /// modes), in NCHW order, as bit patterns.
    func outputs<S: BatchNormScalar>(
        _: S.Type, nchw: [Int], layout: BatchNormLayout, executor: BatchNormExecutor
    ) throws -> [Data] {
        let count = nchw.reduce(1, *), channels = nchw[1]
        let shape = dimensions(nchw, in: layout)
        let x: [S] = arranged(randomValues(count, center: 3, spread: 2, seed: 41), nchw: nchw, in: layout)
        let dy: [S] = arranged(randomValues(count, seed: 42), nchw: nchw, in: layout)
        var layer = try BatchNorm<S>(featureCount: channels, executor: executor)
        layer.weight = randomValues(channels, center: 1, spread: 0.5, seed: 43)
        layer.bias = randomValues(channels, seed: 44)
        let forward = try layer.forward(x, shape: shape, layout: layout)
        let gradients = try layer.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                           statistics: forward.statistics)
        layer.mode = .inference
        let inference = try layer.forward(x, shape: shape, layout: layout)
        let inferenceGradients = try layer.backward(outputGradient: dy, input: x, shape: shape, layout: layout,
                                                    statistics: inference.statistics)
        func tensor(_ values: [S]) -> Data { bytes(arranged(values, nchw: nchw, in: layout, inverse: true)) }
        return [
            tensor(forward.output), bytes(forward.statistics.mean), bytes(forward.statistics.invStd),
            bytes(layer.runningMean!), bytes(layer.runningVariance!),
            tensor(gradients.input!), bytes(gradients.weight!), bytes(gradients.bias!),
            tensor(inference.output), tensor(inferenceGradients.input!), bytes(inferenceGradients.weight!),
            bytes(inferenceGradients.bias!),
        ]
    }

    @Test("channels-last outputs equal the channels-first outputs of the transposed tensor, bit for bit",
          arguments: shapes)
    func channelsLastEqualsTransposedChannelsFirst(nchw: [Int]) throws {
        for executor in someExecutors {
            #expect(try outputs(Float.self, nchw: nchw, layout: .channelsLast, executor: executor)
                        == outputs(Float.self, nchw: nchw, layout: .channelsFirst, executor: .serial),
                    "Float \(nchw) \(executor)")
            #expect(try outputs(Double.self, nchw: nchw, layout: .channelsLast, executor: executor)
                        == outputs(Double.self, nchw: nchw, layout: .channelsFirst, executor: .serial),
                    "Double \(nchw) \(executor)")
        }
    }
}
