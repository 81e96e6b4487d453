import BatchNormKernels
import BatchNormReference
import Testing

/// Outputs of 48 MiB and more are written with non-temporal stores after a
/// scalar prologue that aligns them; these shapes reach that path in both
/// layouts, with run lengths that leave every kind of remainder.
@Suite struct StreamingStoreTests {
    @Test("streamed outputs match the float64 reference",
          arguments: [[1, 2, 2500, 2601], [12_301, 1030]])
    func streamedOutputs(shape: [Int]) throws {
        let count = shape.reduce(1, *), channels = shape[1]
        #expect(count * MemoryLayout<Float>.size >= 48 << 20)
        let x: [Float] = randomValues(count, center: 1, spread: 3, seed: 61)
        let dy: [Float] = randomValues(count, seed: 62)
        let weight: [Float] = randomValues(channels, center: 1, spread: 0.5, seed: 63)
        let want = ReferenceBatchNorm.forward(doubles(x), shape: shape, training: true, weight: doubles(weight))
        let wantBack = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                   training: true, mean: want.mean, invStd: want.invStd,
                                                   weight: doubles(weight))
        let wantInference = ReferenceBatchNorm.backward(doubles(x), outputGradient: doubles(dy), shape: shape,
                                                        training: false, mean: want.mean, invStd: want.invStd,
                                                        weight: doubles(weight))
        for executor in someExecutors {
            let forward = try BatchNormalization.forwardTraining(x, shape: shape, weight: weight, executor: executor)
            #expect(normwiseError(forward.output, want.output) <= Bound.forward(Float.self))
            let gradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                            statistics: forward.statistics, weight: weight,
                                                            executor: executor)
            #expect(normwiseError(gradients.input!, wantBack.inputGradient) <= Bound.backward(Float.self))
            var inference = forward.statistics
            inference.mode = .inference
            let inferenceGradients = try BatchNormalization.backward(outputGradient: dy, input: x, shape: shape,
                                                                     statistics: inference, weight: weight,
                                                                     executor: executor)
            #expect(normwiseError(inferenceGradients.input!, wantInference.inputGradient) <= Bound.backward(Float.self))
        }
    }
}
