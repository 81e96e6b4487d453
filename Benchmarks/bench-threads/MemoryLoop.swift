import BatchNormKernels
import Foundation

/// The resident memory a training loop through each public path holds: the
/// process's peak (VmHWM, reset before each path through
/// /proc/self/clear_refs) and its resident set after the loop, over the
/// resident set before it, in MiB and in tensors of the shape.
enum MemoryLoop {
    struct Reading {
        var residentBefore = 0, peak = 0, residentAfter = 0
    }

    /// "VmRSS" or "VmHWM" from /proc/self/status, in bytes.
    static func status(_ field: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return 0
    }

    /// Resets the peak to the current resident set; false where the kernel does not allow it.
    static func resetPeak() -> Bool {
        guard let file = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? file.close() }
        return (try? file.write(contentsOf: Data("5".utf8))) != nil
    }

    static func measure<S: BenchElement>(
        _: S.Type, shape: BatchNormShape, apis: [API], steps: Int, executor: BatchNormExecutor
    ) {
        let workload = Workload<S>(shape: shape)
        let arrays = APIWorkload(workload)
        let tensor = Double(shape.count * MemoryLayout<S>.stride)
        print("\n\(shape) \(S.self), \(steps) training steps (forward training, then backward with y alive) per path, \(executor)")
        print("| api | resident before (MiB) | peak over it (MiB) | peak over it (tensors) | after over before (MiB) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for api in apis where api != .autodiff || arrays.autodiff != nil {
            guard resetPeak() else {
                print("(/proc/self/clear_refs is not writable here: no peak readings)")
                return
            }
            var reading = Reading(residentBefore: status("VmRSS"))
            for _ in 0..<steps {
                if api == .raw {
                    workload.run(.forwardBackward, executor: executor)
                } else {
                    arrays.run(api, .forwardBackward, epilogue: .none, executor: executor)
                }
            }
            reading.peak = status("VmHWM")
            reading.residentAfter = status("VmRSS")
            let mib = { (bytes: Int) in String(format: "%.1f", Double(bytes) / 1048576) }
            let over = reading.peak - reading.residentBefore
            print("| \(api.rawValue) | \(mib(reading.residentBefore)) | \(mib(over)) | \(String(format: "%.2f", Double(over) / tensor)) | \(mib(reading.residentAfter - reading.residentBefore)) |")
        }
    }
}
