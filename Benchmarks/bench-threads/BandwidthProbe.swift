import CBenchSupport
import Dispatch

/// STREAM-like memory bandwidth at one thread count, GB/s: copy counts the
/// bytes read and written, read the bytes read. `cacheCopy` is the same copy
/// over arrays that stay in the last-level cache: the roof of a warm figure
/// whose tensors fit there.
struct Bandwidth: Codable {
    var threads: Int
    var copy: Double
    var copyNonTemporal: Double
    var read: Double
    var cacheCopy: Double
    /// The bytes cacheCopy's two arrays hold together.
    var cacheCopyBytes: Int
}

enum BandwidthProbe {
    /// 2 × 64 Mi floats (512 MiB in all): far larger than any cache.
    static func measure(threads: Int, elements: Int = 64 << 20, cacheBytes: Int, repetitions: Int) -> Bandwidth {
        let source = UnsafeMutableBufferPointer<Float>.allocate(capacity: elements)
        let destination = UnsafeMutableBufferPointer<Float>.allocate(capacity: elements)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        source.initialize(repeating: 1)
        destination.initialize(repeating: 0)
        nonisolated(unsafe) let src = source.baseAddress!, dst = destination.baseAddress!
        let bytes = Double(elements * MemoryLayout<Float>.size)

        func parallel(_ body: @Sendable (Int, Int) -> Void) {
            DispatchQueue.concurrentPerform(iterations: threads) { worker in
                let start = elements * worker / threads, end = elements * (worker + 1) / threads
                body(start, end - start)
            }
        }
        let copy = Timing.measure(repetitions: repetitions, warmups: 1) {
            parallel { start, count in cbench_copy(dst + start, src + start, Int64(count)) }
        }
        let copyNonTemporal = Timing.measure(repetitions: repetitions, warmups: 1) {
            parallel { start, count in cbench_copy_nontemporal(dst + start, src + start, Int64(count)) }
        }
        let read = Timing.measure(repetitions: repetitions, warmups: 1) {
            parallel { start, count in _ = cbench_read(src + start, Int64(count)) }
        }
        // The cache-resident copy: half the last-level cache in two arrays, copied
        // over and over so that a timed call moves about 256 MB.
        let cacheElements = max(1024, cacheBytes / 4 / MemoryLayout<Float>.size)
        let passes = max(1, (256 << 20) / (2 * cacheElements * MemoryLayout<Float>.size))
        let cacheCopy = Timing.measure(repetitions: repetitions, warmups: 1) {
            DispatchQueue.concurrentPerform(iterations: threads) { worker in
                let start = cacheElements * worker / threads, end = cacheElements * (worker + 1) / threads
                for _ in 0..<passes { cbench_copy(dst + start, src + start, Int64(end - start)) }
            }
        }
        let cacheCopied = Double(2 * cacheElements * MemoryLayout<Float>.size * passes)
        return Bandwidth(threads: threads, copy: 2 * bytes / (copy.median * 1e6),
                         copyNonTemporal: 2 * bytes / (copyNonTemporal.median * 1e6),
                         read: bytes / (read.median * 1e6), cacheCopy: cacheCopied / (cacheCopy.median * 1e6),
                         cacheCopyBytes: 2 * cacheElements * MemoryLayout<Float>.size)
    }
}
