@_spi(Testing) import BatchNormKernels
import Testing

/// The core cannot allocate its scratch space: every entry point throws
/// `outOfMemory` and changes nothing, as for any other error.
@Suite struct FaultInjectionTests {
    @Test(arguments: [BatchNormExecutor.serial, .dispatch(threads: 2)])
    func anAllocationFailureThrowsOutOfMemoryAndWritesNothing(executor: BatchNormExecutor) throws {
        defer { BatchNormFaultInjection.failJobCreation(after: nil) }
        let x: [Float] = randomValues(24, center: 1, spread: 2, seed: 3)
        var layer = try BatchNorm<Float>(featureCount: 3, executor: executor)
        var y = [Float](repeating: 7, count: 24)
        BatchNormFaultInjection.failJobCreation(after: 0)
        #expect { try layer.forward(x, into: &y, shape: [2, 3, 4]) } throws: {
            ($0 as? BatchNormError)?.code == .outOfMemory
        }
        #expect(y.allSatisfy { $0 == 7 } && layer.batchesTracked == 0 && layer.runningMean == [0, 0, 0])

        let statistics = try layer.forward(x, into: &y, shape: [2, 3, 4])
        var gradients = BatchNormGradients<Float>(input: [Float](repeating: 7, count: 24))
        BatchNormFaultInjection.failJobCreation(after: 0)
        #expect {
            try layer.backward(outputGradient: x, input: x, shape: [2, 3, 4], statistics: statistics, into: &gradients)
        } throws: { ($0 as? BatchNormError)?.code == .outOfMemory }
        #expect(gradients.input!.allSatisfy { $0 == 7 })

        layer.mode = .inference
        var z = [Float](repeating: 7, count: 24)
        BatchNormFaultInjection.failJobCreation(after: 0)
        #expect { try layer.forward(x, into: &z, shape: [2, 3, 4]) } throws: {
            ($0 as? BatchNormError)?.code == .outOfMemory
        }
        #expect(z.allSatisfy { $0 == 7 })
        // The hook fires once: the next call succeeds.
        _ = try layer.forward(x, into: &z, shape: [2, 3, 4])
        #expect(z.allSatisfy { $0 != 7 })
    }
}
