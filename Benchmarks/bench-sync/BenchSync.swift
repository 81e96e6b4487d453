import ArgumentParser
import BatchNormKernels
import BatchNormMPI
import Dispatch
import Foundation

/// The cost of synchronized over local batch norm, per call.
@main
struct BenchSync: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-sync",
        abstract: "Time synchronized batch norm (MPIReducer) against local batch norm on the same slice.",
        discussion: """
            Run under mpirun, e.g. `mpirun -np 2 .build/release/bench-sync`: the R ranks share each \
            global batch of N images, rank r holding N/R of them (its slice), and every figure is timed \
            on the same slice twice, locally (each rank its own statistics) and synchronized (the whole \
            batch's), interleaved call by call. A call's time runs from a barrier to a barrier after it, \
            so it is the slowest rank's, as in a data-parallel step; figures are medians over --repeat \
            calls. Forward is training mode \
            (the only mode that exchanges), backward its training backward. The exchange alone (the \
            agreement's summary and 3 doubles per channel, each an all-reduce over the reducer's tree) \
            is timed too. With --simulate R1,R2,… a single process also times the synchronized call \
            against a stand-in reducer that plays rank 0 of the tree, each exchange a copy of what it \
            sends: the merges and copies of R ranks without the network, for rank counts the machine \
            cannot hold.
            """)

    @Option(help: "Global shapes N×C×H×W (or N×C), comma-separated; each rank holds N/R images.")
    var shapes: String = "32x64x112x112,32x256x56x56,32x512x28x28,32x1024x14x14,32x2048x7x7,256x1x64x64,1024x4096"

    @Option(name: .customLong("repeat"), help: "Timed calls per figure.")
    var repetitions: Int = 15

    @Option(help: "Threads per rank (default: the cores divided among the ranks on this machine, at least 1).")
    var threads: Int?

    @Option(help: "Rank counts to simulate in one process, comma-separated, e.g. 64,1024 (no mpirun needed).")
    var simulate: String?

    mutating func run() throws {
        let shapes = try self.shapes.split(separator: ",").map { text in
            let dimensions = text.split(separator: "x").compactMap { Int($0) }
            guard dimensions.count >= 2, dimensions.allSatisfy({ $0 >= 1 }) else {
                throw ValidationError("not a shape: \(text)")
            }
            return dimensions
        }
        if let simulate {
            let counts = simulate.split(separator: ",").compactMap { Int($0) }
            return try simulateRanks(counts, shapes: shapes)
        }
        guard MPIReducer.isAvailable else {
            throw ValidationError("built without Open MPI: install libopenmpi-dev, or use --simulate")
        }
        let reducer = try MPIReducer()
        defer { MPIReducer.finalize() }
        let threads = self.threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / reducer.rankCount)
        let executor: BatchNormExecutor = isOpenMPAvailable ? .openMP(threads: threads) : .dispatch(threads: threads)
        if reducer.rank == 0 {
            print("bench-sync: \(reducer.rankCount) ranks, \(executor) per rank, medians of \(repetitions) calls, "
                  + "float, the slowest rank's time per call")
            print("| global shape | per rank | forward local | forward synchronized | overhead "
                  + "| backward local | backward synchronized | overhead | exchange alone |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        }
        for shape in shapes {
            try figure(shape: shape, reducer: reducer, executor: executor)
        }
    }

    /// Times one global shape on this rank's slice.
    func figure(shape global: [Int], reducer: MPIReducer, executor: BatchNormExecutor) throws {
        var shape = global
        shape[0] = max(1, global[0] / reducer.rankCount)
        let slice = try Slice(shape: shape, executor: executor)
        let barrier = { _ = try? reducer.allGather([0]) }
        /// The time from a barrier until every rank has finished `body` (a
        /// barrier after it too), as in a data-parallel step, where the next
        /// exchange waits for the slowest rank: the slowest rank's time.
        func slowest(_ body: () throws -> Void) throws -> Double {
            barrier()
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            barrier()
            let own = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            return try reducer.allGather([own]).max()!
        }
        var times: [String: [Double]] = [:]
        let partials = [Double](repeating: 1, count: 3 * global[1])
        for call in 0..<(repetitions + 2) {
            let local = try slowest { try slice.forward(reducer: nil) }
            let synchronized = try slowest { try slice.forward(reducer: reducer) }
            let localBackward = try slowest { try slice.backward(reducer: nil) }
            let synchronizedBackward = try slowest { try slice.backward(reducer: reducer) }
            let exchange = try slowest {
                _ = try reducer.sum([Double](repeating: 0, count: Exchanges.summaryLength))
                _ = try reducer.sum(partials)
            }
            guard call >= 2 else { continue }   // warm-up
            for (name, value) in [("fl", local), ("fs", synchronized), ("bl", localBackward),
                                  ("bs", synchronizedBackward), ("x", exchange)] {
                times[name, default: []].append(value)
            }
        }
        guard reducer.rank == 0 else { return }
        let median = times.mapValues { $0.sorted()[$0.count / 2] }
        func ms(_ key: String) -> String { String(format: "%.3f ms", median[key]!) }
        func overhead(_ synchronized: String, _ local: String) -> String {
            String(format: "%+.0f%%", 100 * (median[synchronized]! / median[local]! - 1))
        }
        let name = global.map(String.init).joined(separator: "×")
        print("| \(name) | \(shape[0]) images | \(ms("fl")) | \(ms("fs")) | \(overhead("fs", "fl")) "
              + "| \(ms("bl")) | \(ms("bs")) | \(overhead("bs", "bl")) "
              + String(format: "| %.0f µs |", 1000 * median["x"]!))
    }

    /// Synchronized against local on one process, with a stand-in reducer
    /// that plays `rankCount` ranks holding the same slice.
    func simulateRanks(_ counts: [Int], shapes: [[Int]]) throws {
        let threads = self.threads ?? ProcessInfo.processInfo.activeProcessorCount
        let executor: BatchNormExecutor = isOpenMPAvailable ? .openMP(threads: threads) : .dispatch(threads: threads)
        print("bench-sync --simulate: one process, \(executor), medians of \(repetitions) calls, float; "
              + "the stand-in reducer plays rank 0 of the tree, each exchange a copy (no network)")
        print("| shape (one rank's slice) | ranks R | messages per pass | bytes received per pass | forward local "
              + "| forward synchronized | overhead | backward local | backward synchronized | overhead |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for shape in shapes {
            let slice = try Slice(shape: shape, executor: executor)
            for rankCount in counts {
                let reducer = StandIn(rankCount: rankCount)
                var times: [[Double]] = [[], [], [], []]
                for call in 0..<(repetitions + 2) {
                    let figures = try [
                        time { try slice.forward(reducer: nil) }, time { try slice.forward(reducer: reducer) },
                        time { try slice.backward(reducer: nil) }, time { try slice.backward(reducer: reducer) },
                    ]
                    if call >= 2 { for i in 0..<4 { times[i].append(figures[i]) } }
                }
                let m = times.map { $0.sorted()[$0.count / 2] }
                let steps = Exchanges.perAllReduce(rankCount: rankCount)
                let bytes = steps * (3 * shape[1] + Exchanges.summaryLength) * 8
                let name = shape.map(String.init).joined(separator: "×")
                print(String(format: "| %@ | %d | %d | %@ | %.3f ms | %.3f ms | %+.0f%% | %.3f ms | %.3f ms | %+.0f%% |",
                             name, rankCount, 2 * steps, formatBytes(bytes), m[0], m[1], 100 * (m[1] / m[0] - 1),
                             m[2], m[3], 100 * (m[3] / m[2] - 1)))
            }
        }
    }
}

/// One rank's tensors, allocated and written once.
struct Slice {
    let shape: BatchNormShape
    let executor: BatchNormExecutor
    let x: [Float], dy: [Float]
    let output: UnsafeMutableBufferPointer<Float>, dx: UnsafeMutableBufferPointer<Float>
    let mean: UnsafeMutableBufferPointer<Double>, invStd: UnsafeMutableBufferPointer<Double>
    let dWeight: UnsafeMutableBufferPointer<Float>, dBias: UnsafeMutableBufferPointer<Float>

    init(shape dimensions: [Int], executor: BatchNormExecutor) throws {
        shape = try BatchNormShape(dimensions)
        self.executor = executor
        x = (0..<shape.count).map { Float($0 % 251) / 50 - 2 }
        dy = (0..<shape.count).map { Float($0 % 127) / 60 - 1 }
        output = .allocate(capacity: shape.count)
        dx = .allocate(capacity: shape.count)
        output.initialize(repeating: 0)
        dx.initialize(repeating: 0)
        mean = .allocate(capacity: shape.channels)
        invStd = .allocate(capacity: shape.channels)
        dWeight = .allocate(capacity: shape.channels)
        dBias = .allocate(capacity: shape.channels)
        mean.initialize(repeating: 0)
        invStd.initialize(repeating: 1)
        dWeight.initialize(repeating: 0)
        dBias.initialize(repeating: 0)
    }

    func forward(reducer: (any BatchNormReducer)?) throws {
        try x.withUnsafeBufferPointer { x in
            try BatchNormalization.forwardTraining(
                input: x, output: output, shape: shape, savedMean: mean, savedInvStd: invStd, executor: executor,
                reducer: reducer)
        }
    }

    func backward(reducer: (any BatchNormReducer)?) throws {
        try x.withUnsafeBufferPointer { x in
            try dy.withUnsafeBufferPointer { dy in
                try BatchNormalization.backward(
                    mode: .training, input: x, outputGradient: dy, shape: shape, mean: UnsafeBufferPointer(mean),
                    invStd: UnsafeBufferPointer(invStd), inputGradient: dx, weightGradient: dWeight,
                    biasGradient: dBias, executor: executor, reducer: reducer)
            }
        }
    }
}

/// A reducer that plays rank 0 of R ranks holding the same values: each
/// exchange receives a copy of what it sends, into new memory as a transport's
/// receive would. Rank 0 makes as many exchanges as any rank of the tree.
struct StandIn: BatchNormReducer {
    let rankCount: Int
    var rank: Int { 0 }
    func exchange(_ values: [Double], with partner: Int) throws -> [Double] {
        [Double](unsafeUninitializedCapacity: values.count) { buffer, count in
            _ = buffer.initialize(from: values)
            count = values.count
        }
    }
}

/// What one rank sends and receives per synchronized pass: the agreement's
/// summary, then 3 doubles per channel, each over the reducer's tree.
enum Exchanges {
    /// The agreement summary's length: 2 + 4 per field (version and 13 header fields).
    static let summaryLength = 58

    /// The exchanges rank 0 makes in one all-reduce over R ranks: log₂ P with
    /// P the largest power of two ≤ R, and two more when R > P.
    static func perAllReduce(rankCount: Int) -> Int {
        var powerOfTwo = 1, steps = 0
        while powerOfTwo * 2 <= rankCount { powerOfTwo *= 2; steps += 1 }
        return steps + (rankCount > powerOfTwo ? 2 : 0)
    }
}

func time(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

func formatBytes(_ bytes: Int) -> String {
    bytes >= 1 << 20 ? String(format: "%.1f MiB", Double(bytes) / Double(1 << 20))
        : String(format: "%.1f KiB", Double(bytes) / 1024)
}
