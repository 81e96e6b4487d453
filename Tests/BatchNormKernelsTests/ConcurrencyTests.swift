@_spi(Testing) import BatchNormKernels
import Dispatch
import Foundation
import Testing

/// Many calls at once, from Swift tasks and from threads, each on its own
/// tensors: every result equals the one computed alone. Thread counts are per
/// call, so nothing one call sets leaks into another.
@Suite struct ConcurrencyTests {
    struct Case: Sendable {
        let shape: [Int]
        let x, dy: [Float]
        let executor: BatchNormExecutor
        let expected: [[Float]]

        init(index: Int) throws {
            let shapes: [[Int]] = [[4, 3, 5, 5], [8, 40, 7, 7], [64, 100], [2, 1, 300, 301], [3, 16, 17, 19]]
            shape = shapes[index % shapes.count]
            let count = shape.reduce(1, *)
            x = randomValues(count, center: Double(index), spread: 2, seed: UInt64(100 + index))
            dy = randomValues(count, seed: UInt64(200 + index))
            var executors: [BatchNormExecutor] = [.serial, .dispatch(threads: 2), .dispatch(threads: 3)]
            if isOpenMPAvailable { executors += [.openMP(threads: 2), .openMP(threads: 1)] }
            executor = executors[index % executors.count]
            expected = try Self.run(shape: shape, x: x, dy: dy, executor: .serial)
        }

        static func run(shape: [Int], x: [Float], dy: [Float], executor: BatchNormExecutor) throws -> [[Float]] {
            var layer = try BatchNorm<Float>(featureCount: shape[1], executor: executor)
            let forward = try layer.forward(x, shape: shape)
            let gradients = try layer.backward(outputGradient: dy, input: x, shape: shape,
                                               statistics: forward.statistics)
            return [forward.output, layer.runningMean!, layer.runningVariance!, gradients.input!,
                    gradients.weight!, gradients.bias!]
        }

        func run() throws -> [[Float]] { try Self.run(shape: shape, x: x, dy: dy, executor: executor) }
    }

    @Test("64 concurrent tasks, mixed executors: each result equals the serial one")
    func concurrentTasks() async throws {
        let cases = try (0..<64).map { try Case(index: $0) }
        let results = try await withThrowingTaskGroup(of: (Int, [[Float]]).self) { group in
            for (i, c) in cases.enumerated() { group.addTask { (i, try c.run()) } }
            var results = [Int: [[Float]]]()
            for try await (i, r) in group { results[i] = r }
            return results
        }
        for (i, c) in cases.enumerated() {
            #expect(results[i]! == c.expected, "case \(i): \(c.shape) \(c.executor)")
        }
    }

    @Test("calls from 8 threads at once (concurrentPerform), each with OpenMP or Dispatch inside")
    func concurrentThreads() throws {
        let cases = try (0..<16).map { try Case(index: $0 + 7) }
        nonisolated(unsafe) var failures = [Int](repeating: 0, count: cases.count)
        failures.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let failed = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: cases.count) { i in
                let ok = (try? cases[i].run()) == cases[i].expected
                failed[i] = ok ? 0 : 1
            }
        }
        #expect(failures.allSatisfy { $0 == 0 }, "\(failures)")
    }

    @Test("Dispatch helpers that linger serve later calls, and leave after a pause: every result equals the serial one")
    func lingeringHelpers() throws {
        let cases = try (0..<5).map { try Case(index: $0) }
        for round in 0..<60 {
            let c = cases[round % cases.count]
            // Calls back to back find the helpers of the one before; after a
            // pause longer than their 20 ms linger, a call starts new ones.
            if round % 20 == 19 { Thread.sleep(forTimeInterval: 0.03) }
            let threads = 2 + round % 3
            #expect(try Case.run(shape: c.shape, x: c.x, dy: c.dy, executor: .dispatch(threads: threads)) == c.expected,
                    "round \(round): \(c.shape) on \(threads) threads")
        }
    }

    @Test("more Dispatch helpers asked for at once than may be alive (64): calls run with fewer, and right")
    func moreHelpersThanMayBeAlive() throws {
        // 12 threads at once, each asking for 15 helpers on a 4 MiB tensor (enough items for 16 workers).
        let shape = [16, 64, 32, 32]
        let count = shape.reduce(1, *)
        let x: [Float] = randomValues(count, center: 1, spread: 2, seed: 31)
        let dy: [Float] = randomValues(count, seed: 32)
        let expected = try Case.run(shape: shape, x: x, dy: dy, executor: .serial)
        let callers = 12
        nonisolated(unsafe) var failures = [Int](repeating: 0, count: callers)
        let group = DispatchGroup()
        let queue = DispatchQueue(label: "callers", attributes: .concurrent)   // a thread per caller
        failures.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let failed = buffer.baseAddress!
            for i in 0..<callers {
                queue.async(group: group) {
                    let ok = (try? Case.run(shape: shape, x: x, dy: dy, executor: .dispatch(threads: 16))) == expected
                    failed[i] = ok ? 0 : 1
                }
            }
            group.wait()
        }
        #expect(failures.allSatisfy { $0 == 0 }, "\(failures)")
        #expect(BatchNormFaultInjection.mostDispatchHelpersAlive <= 64)
    }

    @Test("the layer is a Sendable value: a copy sent to a task evolves on its own")
    func layerIsSendable() async throws {
        var layer = try BatchNorm<Double>(featureCount: 3)
        let copy = layer
        let x: [Double] = randomValues(60, center: 4, seed: 9)
        let sent = try await Task.detached { [copy] in
            var mine = copy
            _ = try mine.forward(x, shape: [4, 3, 5])
            return mine
        }.value
        _ = try layer.forward(x, shape: [4, 3, 5])
        #expect(sent.runningMean == layer.runningMean)
        #expect(copy.runningMean == [0, 0, 0] && copy.batchesTracked == 0)
    }
}
