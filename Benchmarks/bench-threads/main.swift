// bench-threads: times the kernels thread count by thread count.
//
// This first form runs one shape (32×64×56×56 float, or the dimensions given
// as arguments) in each mode with every executor at 1...cores threads, and
// the pure-Swift reference once, and prints medians. The full benchmark
// (shape sets, bandwidth probe, JSON/SVG) is the next step.

import BatchNormKernels
import BatchNormReference
import Dispatch
import Foundation

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let dimensions = arguments.count >= 2 ? Array(arguments) : [32, 64, 56, 56]
let shape = try BatchNormShape(dimensions)
let cores = ProcessInfo.processInfo.activeProcessorCount
let repetitions = 7

func milliseconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

/// Median of `repetitions` timed runs after one warm-up.
func median(_ body: () throws -> Void) rethrows -> Double {
    try body()
    var times = [Double]()
    for _ in 0..<repetitions { times.append(try milliseconds(body)) }
    return times.sorted()[repetitions / 2]
}

print("bench-threads: shape \(shape) float, \(cores) cores, microkernels \(microkernelInstructionSet), OpenMP \(isOpenMPAvailable ? "compiled in" : "NOT compiled in (Dispatch only)")")
print("outputs are pre-allocated and written once before timing; median of \(repetitions) runs after a warm-up")

var x = [Float](repeating: 0, count: shape.count)
var rng = SystemRandomNumberGenerator()
for i in x.indices { x[i] = Float.random(in: -1...3, using: &rng) }
let dy = x.map { $0 * 0.5 - 0.25 }
var y = [Float](repeating: 1, count: shape.count)
var dx = [Float](repeating: 1, count: shape.count)
let channels = shape.channels
let runningMean = [Float](repeating: 0.5, count: channels), runningVariance = [Float](repeating: 2, count: channels)
var mean = [Double](repeating: 0, count: channels), invStd = [Double](repeating: 1, count: channels)
var dWeight = [Float](repeating: 0, count: channels), dBias = [Float](repeating: 0, count: channels)

var executors: [BatchNormExecutor] = [.serial]
for threads in 1...cores {
    if isOpenMPAvailable { executors.append(.openMP(threads: threads)) }
    executors.append(.dispatch(threads: threads))
}

func gigabytesPerSecond(passes: Double, ms: Double) -> Double {
    passes * Double(shape.count * MemoryLayout<Float>.size) / (ms * 1e6)
}

print("\n| mode | executor | median ms | GB/s |")
print("| --- | --- | ---: | ---: |")
x.withUnsafeBufferPointer { x in
    dy.withUnsafeBufferPointer { dy in
        y.withUnsafeMutableBufferPointer { y in
            dx.withUnsafeMutableBufferPointer { dx in
                for executor in executors {
                    let training = try! median {
                        try BatchNormalization.forwardTraining(input: x, output: y, shape: shape,
                                                               savedMean: nil, savedInvStd: nil, executor: executor)
                    }
                    print("| forward training | \(executor) | \(String(format: "%.3f", training)) | \(String(format: "%.1f", gigabytesPerSecond(passes: 3, ms: training))) |")
                    let inference = try! median {
                        try runningMean.withUnsafeBufferPointer { rm in
                            try runningVariance.withUnsafeBufferPointer { rv in
                                try BatchNormalization.forwardInference(input: x, output: y, shape: shape,
                                                                        runningMean: rm, runningVariance: rv,
                                                                        executor: executor)
                            }
                        }
                    }
                    print("| forward inference | \(executor) | \(String(format: "%.3f", inference)) | \(String(format: "%.1f", gigabytesPerSecond(passes: 2, ms: inference))) |")
                    let backward = try! median {
                        try mean.withUnsafeBufferPointer { mean in
                            try invStd.withUnsafeBufferPointer { invStd in
                                try dWeight.withUnsafeMutableBufferPointer { dWeight in
                                    try dBias.withUnsafeMutableBufferPointer { dBias in
                                        try BatchNormalization.backward(
                                            mode: .training, input: x, outputGradient: dy, shape: shape,
                                            mean: mean, invStd: invStd, inputGradient: dx,
                                            weightGradient: dWeight, biasGradient: dBias, executor: executor)
                                    }
                                }
                            }
                        }
                    }
                    print("| backward | \(executor) | \(String(format: "%.3f", backward)) | \(String(format: "%.1f", gigabytesPerSecond(passes: 5, ms: backward))) |")
                }
            }
        }
    }
}

// The reference on a sample of the batch (one image), so that it does not dominate the run.
var sampleDimensions = dimensions
sampleDimensions[0] = 2
let sample = Array(x.prefix(sampleDimensions.reduce(1, *))).map(Double.init)
let referenceMs = milliseconds { _ = ReferenceBatchNorm.forward(sample, shape: sampleDimensions, training: true) }
let scaled = referenceMs * Double(dimensions[0]) / 2
print("\nreference forward training (pure Swift, float64) on \(sampleDimensions): \(String(format: "%.1f", referenceMs)) ms, about \(String(format: "%.0f", scaled)) ms scaled to the full batch")
