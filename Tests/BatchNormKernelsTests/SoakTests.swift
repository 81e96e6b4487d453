import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import Foundation
import Testing

/// Thousands of calls with varying shapes and executors: resident memory
/// stays flat once the first calls have warmed up the allocator and threads.
/// Resident memory is the whole process's, so the test runs only when it has
/// the process to itself: CI runs `BATCHNORM_SOAK=1 swift test --filter SoakTests`.
@Suite(.serialized) struct SoakTests {
    /// Resident set size in bytes, from /proc/self/statm.
    func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let pages = Int(text.split(separator: " ")[1]) ?? 0
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test("5000 calls, varying shapes and executors: resident memory grows by less than 4 MiB",
          .enabled(if: ProcessInfo.processInfo.environment["BATCHNORM_SOAK"] == "1"))
    func residentMemoryStaysFlat() throws {
        let shapes: [[Int]] = [[4, 3, 5, 5], [8, 40, 7, 7], [64, 100], [2, 1, 100, 101], [300, 7], [1, 2, 3, 4, 5]]
        var executors: [BatchNormExecutor] = [.serial, .dispatch(threads: 2), .dispatch(threads: 4)]
        if isOpenMPAvailable { executors += [.openMP(threads: 2), .openMP(threads: 3)] }
        let inputs = shapes.map { shape -> [Double] in randomValues(shape.reduce(1, *), center: 1, seed: 5) }
        func round(_ i: Int) throws {
            let s = i % shapes.count, shape = shapes[s]
            var layer = try BatchNorm<Double>(featureCount: shape[1], executor: executors[i % executors.count])
            let forward = try layer.forward(inputs[s], shape: shape)
            _ = try layer.backward(outputGradient: inputs[s], input: inputs[s], shape: shape,
                                   statistics: forward.statistics)
            // and an error path, which allocates nothing in the core
            _ = try? layer.forward(inputs[s], shape: [shape[0] + 1] + shape.dropFirst())
        }
        for i in 0..<300 { try round(i) }
        let before = residentBytes()
        for i in 0..<5000 { try round(i) }
        let grown = residentBytes() - before
        #expect(before > 0)
        #expect(grown < 4 << 20, "resident memory grew by \(grown) bytes")
    }

    @Test("100 training steps on 40 MB tensors through new arrays (huge pages asked), into: arrays and autodiff: resident memory afterwards within 8 MiB of a step's",
          .enabled(if: ProcessInfo.processInfo.environment["BATCHNORM_SOAK"] == "1"))
    func largeTensorStepsHoldNoMemory() throws {
        let dimensions = [16, 64, 100, 100]   // 10.24 M floats, 41 MB: a fresh mapping per new array
        let shape = try BatchNormShape(dimensions)
        let x = [Float](repeating: 1, count: shape.count).enumerated().map { Float($0.offset % 7) }
        var bn = try BatchNorm<Float>(featureCount: 64)
        let layer = try DifferentiableBatchNorm<Float>(featureCount: 64)
        var y = [Float](), gradients = BatchNormGradients<Float>()
        func step() throws {
            let forward = try bn.forward(x, shape: dimensions)
            let g = try bn.backward(outputGradient: x, input: x, shape: dimensions, statistics: forward.statistics)
            withExtendedLifetime((forward, g)) {}
            let statistics = try bn.forward(x, into: &y, shape: dimensions)
            try bn.backward(outputGradient: x, input: x, shape: dimensions, statistics: statistics, into: &gradients)
            let (value, pullback) = valueWithPullback(at: x) { x in layer(x, shape: shape) }
            withExtendedLifetime((value, pullback(.init(x)))) {}
        }
        for _ in 0..<3 { try step() }
        let before = residentBytes()
        for _ in 0..<100 { try step() }
        let grown = residentBytes() - before
        #expect(before > 0)
        #expect(grown < 8 << 20, "resident memory grew by \(grown) bytes")
    }
}
