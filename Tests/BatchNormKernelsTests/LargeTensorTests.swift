import BatchNormKernels
import Foundation
import Testing

/// A tensor past 2³¹ elements: every offset in the core is 64-bit. Needs about
/// 8.6 GB of memory, so it runs only when BATCHNORM_LARGE_TESTS=1 (CI sets it).
@Suite struct LargeTensorTests {
    @Test("a channel of 2³¹ + 36 values normalizes correctly past index 2³¹",
          .enabled(if: largeTestsEnabled))
    func pastInt32Indexing() throws {
        let spatial = (1 << 30) + 18
        let shape = try BatchNormShape([2, 1, spatial])           // m = 2³¹ + 36 values in one channel
        let count = shape.count
        #expect(count > Int(Int32.max))
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        // The channel [2, 0, 2, 4] repeated: μ = 2, σ² = 2 exactly. Filled by doubling copies.
        let pattern: [Float] = [2, 0, 2, 4]
        _ = buffer.initialize(from: pattern)
        var filled = pattern.count
        let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
        while filled < count {
            let chunk = min(filled, count - filled)
            (raw + filled * 4).copyMemory(from: raw, byteCount: chunk * 4)
            filled += chunk
        }
        var mean = [Double](repeating: 0, count: 1), invStd = mean
        try mean.withUnsafeMutableBufferPointer { mean throws(BatchNormError) in
            try invStd.withUnsafeMutableBufferPointer { invStd throws(BatchNormError) in
                try BatchNormalization.forwardTraining(input: UnsafeBufferPointer(buffer), output: buffer, shape: shape,
                                                       epsilon: 0, savedMean: mean, savedInvStd: invStd)
            }
        }
        #expect(abs(mean[0] - 2) <= 1e-12)
        #expect(abs(invStd[0] - 1 / 2.0.squareRoot()) <= 1e-12)
        let root2 = Float(2.0.squareRoot())
        let expected: [Float] = [0, -root2, 0, root2]
        let checked = Array(0..<4096) + Array((Int(Int32.max) - 4096)..<count)   // the start, and across 2³¹ to the end
        let wrong = checked.filter { abs(buffer[$0] - expected[$0 % 4]) > 1e-6 }
        #expect(wrong.isEmpty, "\(wrong.count) wrong values, first at \(wrong.first ?? -1)")
    }
}
