import BatchNormKernels

/// What a figure times.
enum Mode: String, CaseIterable, Codable {
    case forwardTraining = "forward-training"
    case forwardInference = "forward-inference"
    case backward
    /// A training step's batch norm: forward training, then backward with its
    /// statistics (for autodiff, `valueWithPullback` and the pullback).
    case forwardBackward = "forward-backward"

    /// Passes over the tensor by the anchors' byte convention: forward training
    /// reads x twice and writes y, inference reads x and writes y, backward reads
    /// x and dy twice and writes dx.
    var passes: Double {
        switch self {
        case .forwardTraining: 3
        case .forwardInference: 2
        case .backward: 5
        case .forwardBackward: 8
        }
    }
}

/// What runs after each timed call of the raw path, inside the timed region.
enum NextLayer: String, CaseIterable, Codable {
    /// Nothing: the call alone.
    case none
    /// A read of the call's output (y, or dx in backward) on the same executor
    /// and threads, as the next layer's first use of it: the figure then
    /// shows what the way the output was written costs its reader.
    case read
}

/// How the raw path's calls write their outputs.
enum OutputStores: String, CaseIterable, Codable {
    /// The kernels' own rule: non-temporal stores only where a call's tensors
    /// outgrow the last-level cache.
    case rule
    /// Non-temporal stores for every output, as oneDNN writes its float
    /// outputs (the package's test hook `streamOutputs(from: 0)`).
    case streamed
}

/// Who runs a figure: the package's executors, or the pure-Swift reference.
enum ExecutorKind: String, CaseIterable, Codable {
    case openmp, dispatch, serial, reference
}

/// The element types, by their command-line names.
enum DType: String, CaseIterable, Codable {
    case float, double, float16, bfloat16

    /// The Swift type the figures time.
    var elementType: any BenchElement.Type {
        switch self {
        case .float: Float.self
        case .double: Double.self
        case .float16: Float16.self
        case .bfloat16: BFloat16.self
        }
    }

    /// Bytes per tensor element: GB/s count the element's own size.
    var size: Int { elementType.byteSize }
}

/// What the benchmark needs of an element type: its data from a Double, and
/// its differentiable calls where it has them.
protocol BenchElement: BatchNormElement {
    init(benchValue: Double)
    /// Whether `DifferentiableBatchNorm` takes this type (Float and Double).
    static var isDifferentiable: Bool { get }
    /// `DifferentiableBatchNorm`'s calls over this data (Float and Double), or nil.
    static func autodiffCalls(
        x: [Self], dy: [Self], z: [Self], shape: BatchNormShape, weight: [Parameter], bias: [Parameter]
    ) -> ((Mode, Epilogue, BatchNormExecutor) -> Void)?
}
extension Float: BenchElement {
    init(benchValue: Double) { self.init(benchValue) }
    static var isDifferentiable: Bool { true }
    static func autodiffCalls(
        x: [Float], dy: [Float], z: [Float], shape: BatchNormShape, weight: [Float], bias: [Float]
    ) -> ((Mode, Epilogue, BatchNormExecutor) -> Void)? {
        differentiableCalls(x: x, dy: dy, z: z, shape: shape, weight: weight, bias: bias)
    }
}
extension Double: BenchElement {
    init(benchValue: Double) { self.init(benchValue) }
    static var isDifferentiable: Bool { true }
    static func autodiffCalls(
        x: [Double], dy: [Double], z: [Double], shape: BatchNormShape, weight: [Double], bias: [Double]
    ) -> ((Mode, Epilogue, BatchNormExecutor) -> Void)? {
        differentiableCalls(x: x, dy: dy, z: z, shape: shape, weight: weight, bias: bias)
    }
}
extension Float16: BenchElement {
    init(benchValue: Double) { self.init(benchValue) }
    static var isDifferentiable: Bool { false }
}
extension BFloat16: BenchElement {
    init(benchValue: Double) { self.init(benchValue) }
    static var isDifferentiable: Bool { false }
}

extension BenchElement {
    /// Bytes of one element.
    static var byteSize: Int { MemoryLayout<Self>.size }
}

/// Named shape sets and explicit `NxCxHxW` lists.
enum ShapeSets {
    static let resnet50: [[Int]] = [
        [32, 64, 112, 112], [32, 256, 56, 56], [32, 512, 28, 28], [32, 1024, 14, 14], [32, 2048, 7, 7],
    ]
    static let named: [String: [[Int]]] = [
        "resnet50": resnet50,
        "default": resnet50 + [[256, 1, 64, 64], [1024, 4096]],
        "small": [[8, 64, 28, 28], [16, 1, 64, 64], [256, 512], [4, 32, 4, 8, 8]],
    ]

    /// "default", "resnet50", "small", or a comma-separated list of shapes
    /// written `32x64x112x112` (rank 2 to 5).
    static func parse(_ text: String) throws -> [[Int]] {
        var shapes = [[Int]]()
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if let set = named[item] {
                shapes += set
                continue
            }
            let dimensions = item.split(whereSeparator: { $0 == "x" || $0 == "×" }).map { Int($0) }
            guard dimensions.allSatisfy({ $0 != nil }), (2...5).contains(dimensions.count) else {
                throw BenchError("'\(item)' is neither a shape set (\(named.keys.sorted().joined(separator: ", "))) nor a shape like 32x64x56x56")
            }
            shapes.append(dimensions.map { $0! })
        }
        return shapes
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

import Foundation
