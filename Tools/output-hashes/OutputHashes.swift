// Hashes every output of a fixed sweep of calls: each element type, layout,
// epilogue and executor, every kind of call (forward training and inference,
// backward in both modes with and without dx, dz alone, and the synchronized
// split calls), over shapes that reach every walk and path of the core
// (runs shorter than 16, short planes, long runs, unfused parts, one
// channel, channels last with rows of more than 1024 channels, streaming
// stores). A change that must not change results, such as a reorganization
// of the core, leaves every hash as it was: `Scripts/output-hashes.sh`
// compares them with the recorded ones.
//
// One line per (type, shape, layout, epilogue): the hash of each call's
// outputs. The executors (serial, OpenMP and Dispatch with 3 threads) must
// give the same bits; a line that differs between them says so.
import BatchNormKernels
import Foundation

/// FNV-1a over 64-bit words (the bytes of a tensor, zero-padded to a word).
struct OutputHash {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add<T>(_ buffer: UnsafeBufferPointer<T>) {
        let bytes = UnsafeRawBufferPointer(buffer)
        var i = 0
        while i + 8 <= bytes.count {
            value = (value ^ bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x0000_0100_0000_01b3
            i += 8
        }
        var last: UInt64 = 0
        for j in i..<bytes.count { last |= UInt64(bytes[j]) << (8 * UInt64(j - i)) }
        value = (value ^ last ^ UInt64(bytes.count)) &* 0x0000_0100_0000_01b3
    }

    mutating func add<T>(_ buffer: UnsafeMutableBufferPointer<T>) { add(UnsafeBufferPointer(buffer)) }
}

/// The element types, made from a Double.
protocol SweepElement: BatchNormElement {
    static func make(_ value: Double) -> Self
    static var name: String { get }
}
extension Float: SweepElement {
    static func make(_ value: Double) -> Float { Float(value) }
    static var name: String { "f32" }
}
extension Double: SweepElement {
    static func make(_ value: Double) -> Double { value }
    static var name: String { "f64" }
}
extension Float16: SweepElement {
    static func make(_ value: Double) -> Float16 { Float16(value) }
    static var name: String { "f16" }
}
extension BFloat16: SweepElement {
    static func make(_ value: Double) -> BFloat16 { BFloat16(value) }
    static var name: String { "bf16" }
}

/// Deterministic data: SplitMix64, uniform in center ± spread.
func values<E: SweepElement>(_ count: Int, center: Double, spread: Double, seed: UInt64) -> UnsafeMutableBufferPointer<E> {
    var state = seed
    let buffer = UnsafeMutableBufferPointer<E>.allocate(capacity: count)
    for i in 0..<count {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        buffer[i] = E.make(center + spread * (Double(z >> 11) * 0x1p-53 * 2 - 1))
    }
    return buffer
}

func parameters<P: BatchNormScalar>(_ count: Int, center: Double, spread: Double, seed: UInt64) -> UnsafeMutableBufferPointer<P> {
    let made: UnsafeMutableBufferPointer<Double> = values(count, center: center, spread: spread, seed: seed)
    defer { made.deallocate() }
    let buffer = UnsafeMutableBufferPointer<P>.allocate(capacity: count)
    for i in 0..<count { buffer[i] = P(made[i]) }
    return buffer
}

func filled<T>(_ count: Int, _ value: T) -> UnsafeMutableBufferPointer<T> {
    let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: count)
    buffer.initialize(repeating: value)
    return buffer
}

enum Epilogue: String, CaseIterable {
    case none, relu, add = "add", addRelu = "add-relu"
    var activation: BatchNormActivation { self == .relu || self == .addRelu ? .relu : .identity }
    var residual: Bool { self == .add || self == .addRelu }
}

/// The hashes of one (type, shape, layout, epilogue) with one executor, by call.
func sweep<E: SweepElement>(_: E.Type, shape: BatchNormShape, epilogue: Epilogue,
                            executor: BatchNormExecutor) throws -> [(String, UInt64)] {
    let count = shape.count, channels = shape.channels
    let x: UnsafeMutableBufferPointer<E> = values(count, center: 0.5, spread: 2, seed: 1)
    let dy: UnsafeMutableBufferPointer<E> = values(count, center: 0, spread: 1, seed: 2)
    let z: UnsafeMutableBufferPointer<E>? = epilogue.residual ? values(count, center: 0, spread: 1, seed: 3) : nil
    let weight: UnsafeMutableBufferPointer<E.Parameter> = parameters(channels, center: 1, spread: 0.5, seed: 4)
    let bias: UnsafeMutableBufferPointer<E.Parameter> = parameters(channels, center: 0, spread: 1, seed: 5)
    let runningMean: UnsafeMutableBufferPointer<E.Parameter> = parameters(channels, center: 0, spread: 1, seed: 6)
    let runningVariance: UnsafeMutableBufferPointer<E.Parameter> = parameters(channels, center: 1.5, spread: 1, seed: 7)
    let y = filled(count, E.zero), dx = filled(count, E.zero), dz = filled(count, E.zero)
    let savedMean = filled(channels, 0.0), savedInvStd = filled(channels, 0.0)
    let dWeight = filled(channels, E.Parameter.zero), dBias = filled(channels, E.Parameter.zero)
    defer {
        for buffer in [x, dy, y, dx, dz] { buffer.deallocate() }
        z?.deallocate()
        for buffer in [weight, bias, runningMean, runningVariance, dWeight, dBias] { buffer.deallocate() }
        savedMean.deallocate()
        savedInvStd.deallocate()
    }
    let (activation, residual) = (epilogue.activation, z.map(UnsafeBufferPointer.init))
    let relu = activation == .relu
    var results: [(String, UInt64)] = []
    func record(_ name: String, _ fill: (inout OutputHash) -> Void) {
        var hash = OutputHash()
        fill(&hash)
        results.append((name, hash.value))
    }

    // Forward training: y, the saved and the running statistics.
    let trainingMean = filled(channels, E.Parameter.zero), trainingVariance = filled(channels, E.Parameter.zero)
    defer { trainingMean.deallocate(); trainingVariance.deallocate() }
    _ = trainingMean.update(fromContentsOf: runningMean)
    _ = trainingVariance.update(fromContentsOf: runningVariance)
    try BatchNormalization.forwardTraining(
        input: UnsafeBufferPointer(x), output: y, shape: shape, weight: UnsafeBufferPointer(weight),
        bias: UnsafeBufferPointer(bias), residual: residual, activation: activation, runningMean: trainingMean,
        runningVariance: trainingVariance, momentum: 0.1, savedMean: savedMean, savedInvStd: savedInvStd,
        executor: executor)
    record("train") { $0.add(y); $0.add(savedMean); $0.add(savedInvStd); $0.add(trainingMean); $0.add(trainingVariance) }
    let mean = UnsafeBufferPointer(savedMean), invStd = UnsafeBufferPointer(savedInvStd)
    let forwardOutput = relu ? UnsafeBufferPointer(y) : nil

    // Backward training: dx, dγ, dβ (and dz); then dγ and dβ alone; then dz alone.
    try BatchNormalization.backward(
        mode: .training, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy), shape: shape,
        mean: mean, invStd: invStd, weight: UnsafeBufferPointer(weight), inputGradient: dx, weightGradient: dWeight,
        biasGradient: dBias, activation: activation, forwardOutput: forwardOutput,
        residualGradient: z == nil ? nil : dz, executor: executor)
    record("back") { $0.add(dx); $0.add(dWeight); $0.add(dBias); if z != nil { $0.add(dz) } }
    try BatchNormalization.backward(
        mode: .training, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy), shape: shape,
        mean: mean, invStd: invStd, weight: UnsafeBufferPointer(weight), weightGradient: dWeight,
        biasGradient: dBias, activation: activation, forwardOutput: forwardOutput, executor: executor)
    record("back-params") { $0.add(dWeight); $0.add(dBias) }
    if z != nil {
        dz.update(repeating: E.zero)
        try BatchNormalization.backward(
            mode: .training, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy), shape: shape,
            mean: mean, invStd: invStd, activation: activation, forwardOutput: forwardOutput, residualGradient: dz,
            executor: executor)
        record("back-dz") { $0.add(dz) }
    }

    // Forward training without γ, β or running statistics.
    try BatchNormalization.forwardTraining(
        input: UnsafeBufferPointer(x), output: y, shape: shape, residual: residual, activation: activation,
        executor: executor)
    record("train-plain") { $0.add(y) }

    // Inference: y, then backward with dx, dγ, dβ (one pass) and with dx alone.
    try BatchNormalization.forwardInference(
        input: UnsafeBufferPointer(x), output: y, shape: shape, runningMean: UnsafeBufferPointer(runningMean),
        runningVariance: UnsafeBufferPointer(runningVariance), weight: UnsafeBufferPointer(weight),
        bias: UnsafeBufferPointer(bias), residual: residual, activation: activation, executor: executor)
    record("infer") { $0.add(y) }
    let statistics = try BatchNormalization.inferenceStatistics(
        runningMean: Array(runningMean), runningVariance: Array(runningVariance))
    try statistics.mean.withUnsafeBufferPointer { mean in
        try statistics.invStd.withUnsafeBufferPointer { invStd in
            try BatchNormalization.backward(
                mode: .inference, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy),
                shape: shape, mean: mean, invStd: invStd, weight: UnsafeBufferPointer(weight), inputGradient: dx,
                weightGradient: dWeight, biasGradient: dBias, activation: activation, forwardOutput: forwardOutput,
                residualGradient: z == nil ? nil : dz, executor: executor)
            record("infer-back") { $0.add(dx); $0.add(dWeight); $0.add(dBias); if z != nil { $0.add(dz) } }
            try BatchNormalization.backward(
                mode: .inference, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy),
                shape: shape, mean: mean, invStd: invStd, weight: UnsafeBufferPointer(weight), inputGradient: dx,
                activation: activation, forwardOutput: forwardOutput, executor: executor)
            record("infer-back-dx") { $0.add(dx) }
        }
    }

    // Synchronized over one rank: the split calls (this slice's partials, then the whole batch's).
    let reducer = try InProcessReducer.makeGroup(rankCount: 1)[0]
    try BatchNormalization.forwardTraining(
        input: UnsafeBufferPointer(x), output: y, shape: shape, weight: UnsafeBufferPointer(weight),
        bias: UnsafeBufferPointer(bias), residual: residual, activation: activation, savedMean: savedMean,
        savedInvStd: savedInvStd, executor: executor, reducer: reducer)
    record("sync-train") { $0.add(y); $0.add(savedMean); $0.add(savedInvStd) }
    try BatchNormalization.backward(
        mode: .training, input: UnsafeBufferPointer(x), outputGradient: UnsafeBufferPointer(dy), shape: shape,
        mean: mean, invStd: invStd, weight: UnsafeBufferPointer(weight), inputGradient: dx, weightGradient: dWeight,
        biasGradient: dBias, activation: activation, forwardOutput: relu ? UnsafeBufferPointer(y) : nil,
        residualGradient: z == nil ? nil : dz, executor: executor, reducer: reducer)
    record("sync-back") { $0.add(dx); $0.add(dWeight); $0.add(dBias); if z != nil { $0.add(dz) } }
    return results
}

/// `[N, C, spatial…]`, placed in each layout.
let shapes: [[Int]] = [
    [4, 3, 5],            // runs shorter than 16: every value in the tail
    [3, 150, 3, 3],       // planes shorter than 16 of many channels: copied as rows
    [12, 40, 2],
    [2, 70, 7, 7],        // short planes, several channels per run
    [3, 130, 14, 14],
    [2, 5, 56, 56],       // long runs
    [300, 20],            // spatial 1: the columns walk in either layout
    [40, 9, 33],
    [2, 1100, 17],        // rows of more than 1024 channels
    [64, 40, 7, 7],
    [3, 1, 100],          // one channel
    [8, 4, 256, 256],     // channels split into parts, finalized apart
    [512, 4096],          // rows in blocks
    [4, 16, 448, 448],    // streaming stores (float and double)
]

func dimensions(_ nchw: [Int], _ layout: BatchNormLayout) -> [Int] {
    layout == .channelsFirst ? nchw : [nchw[0]] + nchw.dropFirst(2) + [nchw[1]]
}

let executors: [BatchNormExecutor] = [.serial, .openMP(threads: 3), .dispatch(threads: 3)]

func run<E: SweepElement>(_: E.Type) throws {
    for nchw in shapes {
        for layout in [BatchNormLayout.channelsFirst, .channelsLast] {
            let shape = try BatchNormShape(dimensions(nchw, layout), layout: layout)
            for epilogue in Epilogue.allCases {
                let available = executors.filter { if case .openMP = $0 { return isOpenMPAvailable }; return true }
                let all = try available.map { try sweep(E.self, shape: shape, epilogue: epilogue, executor: $0) }
                let line = all[0].map { "\($0.0)=\(String($0.1, radix: 16))" }.joined(separator: " ")
                let label = "\(E.name) \(nchw.map(String.init).joined(separator: "x")) "
                    + "\(layout == .channelsFirst ? "cf" : "cl") \(epilogue.rawValue)"
                if all.dropFirst().allSatisfy({ $0.map(\.1) == all[0].map(\.1) }) {
                    print("\(label) | \(line)")
                } else {
                    print("\(label) | EXECUTORS DIFFER: \(all.map { $0.map { String($0.1, radix: 16) } })")
                }
            }
        }
    }
}

print("# output hashes, microkernels: \(microkernelInstructionSet)")
try run(Float.self)
try run(Double.self)
try run(Float16.self)
try run(BFloat16.self)
