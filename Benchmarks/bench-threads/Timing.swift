import Dispatch
import Foundation

/// Median, minimum and maximum of repeated runs, in milliseconds.
struct Timing: Codable {
    var median: Double
    var min: Double
    var max: Double

    /// Runs `body` `warmups` times untimed, then `repetitions` times timed.
    static func measure(repetitions: Int, warmups: Int = 2, _ body: () -> Void) -> Timing {
        for _ in 0..<warmups { body() }
        var times = [Double]()
        for _ in 0..<Swift.max(1, repetitions) {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        times.sort()
        return Timing(median: times[times.count / 2], min: times.first!, max: times.last!)
    }
}

/// OpenMP's workers keep spinning for up to 200 ms after a parallel region
/// (KMP_BLOCKTIME), taking cores from whatever runs next. Timing anything else
/// right after an OpenMP figure waits that out first.
struct OpenMPQuiet {
    private var lastWasOpenMP = false
    mutating func before(openMP: Bool) {
        if lastWasOpenMP && !openMP { Thread.sleep(forTimeInterval: 0.25) }
        lastWasOpenMP = openMP
    }
}
