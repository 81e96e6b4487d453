import Dispatch
import Foundation

/// Median, minimum and maximum of repeated runs, in milliseconds.
struct Timing: Codable {
    var median: Double
    var min: Double
    var max: Double

    /// Runs `body` `warmups` times untimed, then `repetitions` times timed;
    /// `prepare` runs before each call, outside the timed region.
    static func measure(repetitions: Int, warmups: Int = 2, prepare: () -> Void = {}, _ body: () -> Void) -> Timing {
        for _ in 0..<warmups {
            prepare()
            body()
        }
        var times = [Double]()
        for _ in 0..<Swift.max(1, repetitions) {
            prepare()
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        times.sort()
        return Timing(median: times[times.count / 2], min: times.first!, max: times.last!)
    }
}

/// Both parallel executors keep their threads spinning after a call, ready
/// for the next: OpenMP's workers for up to 200 ms (KMP_BLOCKTIME), the
/// Dispatch executor's helpers for up to 20 ms. Spinning, they take cores
/// from whatever runs next, so timing another executor right after one of
/// them waits that out first.
struct ExecutorQuiet {
    private var last: ExecutorKind?
    mutating func before(_ kind: ExecutorKind) {
        if let last, last != kind {
            switch last {
            case .openmp: Thread.sleep(forTimeInterval: 0.25)
            case .dispatch: Thread.sleep(forTimeInterval: 0.05)
            case .serial, .reference: break
            }
        }
        last = kind
    }
}

/// Whether a figure's tensors may be in the cache when the call starts.
enum CacheState: String, CaseIterable, Codable {
    /// The previous call touched the same tensors: in a network, the layer
    /// before has usually just written them.
    case warm
    /// Before each call (untimed), a buffer larger than the last-level cache
    /// is written over, so the tensors come from memory.
    case cold
}

/// Evicts the caches by writing over a buffer of `bytes`.
final class CacheEvictor {
    private let buffer: UnsafeMutableBufferPointer<Float>
    var bytes: Int { buffer.count * MemoryLayout<Float>.size }

    init(bytes: Int) {
        buffer = .allocate(capacity: Swift.max(1, bytes / MemoryLayout<Float>.size))
        buffer.initialize(repeating: 0)
    }

    deinit { buffer.deallocate() }

    func evict() {
        for i in stride(from: 0, to: buffer.count, by: 16) { buffer[i] += 1 }
    }
}

