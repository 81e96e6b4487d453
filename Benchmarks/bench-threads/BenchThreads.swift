import ArgumentParser
import BatchNormKernels
import Foundation

@main
struct BenchThreads: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-threads",
        abstract: "Time the batch-norm kernels thread count by thread count, against the pure-Swift reference and the memory bandwidth.",
        discussion: """
            Each figure: two warm-up calls, then the median (and min, max) of --repeat timed calls. \
            Inputs and outputs are allocated and written once before any timing. GB/s follow the \
            anchors' byte convention (forward training 3 passes over the tensor, inference 2, \
            backward 5), so a kernel that keeps a channel in cache between passes can pass the \
            memory roof. The roof is a STREAM-like copy measured in the same run at each thread count.
            """)

    @Option(help: "Shape sets (default, resnet50, small) or shapes like 32x64x112x112, comma-separated.")
    var shapes: String?

    @Option(help: "Modes, comma-separated: forward-training, forward-inference, backward.")
    var modes: String = Mode.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Thread counts, comma-separated (default: 1 up to the number of cores).")
    var threads: String?

    @Option(help: "Executors, comma-separated: openmp, dispatch, serial, reference.")
    var executors: String = ExecutorKind.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Element types, comma-separated: float, double.")
    var dtype: String = "float"

    @Option(help: "Input data: normal, subnormal (every x a float subnormal: shows their cost; no flush-to-zero), shifted (1e4 ± 2).")
    var data: String = "normal"

    @Option(name: .customLong("repeat"), help: "Timed calls per figure.")
    var repetitions: Int?

    @Flag(help: "A few seconds: the small shapes, 3 repetitions, a smaller bandwidth probe (for CI).")
    var quick = false

    @Option(help: "Write one JSON record per figure to this file.")
    var json: String?

    @Option(help: "Draw GB/s against threads, per shape and mode, with the bandwidth roof, to this SVG file.")
    var svg: String?

    func validate() throws {
        if let repetitions, repetitions < 1 { throw ValidationError("--repeat must be at least 1") }
    }

    func run() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let shapeList = try ShapeSets.parse(shapes ?? (quick ? "small" : "default")).map { try BatchNormShape($0) }
        let modeList = try list(modes, Mode.self)
        let dtypes = try list(dtype, DType.self)
        var kinds = try list(executors, ExecutorKind.self)
        let threadList = try threads.map { text in
            try text.split(separator: ",").map { item -> Int in
                guard let t = Int(item), t >= 1 else { throw ValidationError("bad thread count '\(item)'") }
                return t
            }
        } ?? Array(1...cores)
        let repeatCount = repetitions ?? (quick ? 3 : 7)
        guard let dataKind = DataKind(rawValue: data) else { throw ValidationError("unknown --data '\(data)'") }
        if kinds.contains(.openmp) && !isOpenMPAvailable {
            kinds.removeAll { $0 == .openmp }
            log("OpenMP is not compiled in: skipping the openmp executor")
        }

        print("bench-threads: \(cores) cores, microkernels \(microkernelInstructionSet), OpenMP \(isOpenMPAvailable ? "compiled in" : "NOT compiled in (Dispatch only)")")
        print("inputs and outputs allocated and written once before timing; each figure is the median (min–max) of \(repeatCount) calls after 2 warm-ups")
        if dataKind != .normal { print("input data: \(dataKind.rawValue)") }
        print("GB/s by the anchors' convention (forward training 3 passes, inference 2, backward 5, \(dtypes.map { "\($0.size) bytes per \($0.rawValue)" }.joined(separator: ", ")))")

        // The roof, measured first so that the tensors are not yet resident.
        var roofs = [Int: Bandwidth]()
        for t in threadList {
            log("bandwidth probe, \(t) thread(s)")
            roofs[t] = BandwidthProbe.measure(threads: t, elements: quick ? 8 << 20 : 64 << 20,
                                              repetitions: quick ? 3 : 5)
        }
        print("\nmemory bandwidth (STREAM-like, GB/s):")
        print("| threads | copy | copy, non-temporal stores | read |")
        print("| ---: | ---: | ---: | ---: |")
        for t in threadList {
            let b = roofs[t]!
            print("| \(t) | \(f1(b.copy)) | \(f1(b.copyNonTemporal)) | \(f1(b.read)) |")
        }

        let perShape = modeList.count * (kinds.filter { $0 == .openmp || $0 == .dispatch }.count * threadList.count
            + (kinds.contains(.serial) ? 1 : 0) + (kinds.contains(.reference) ? 1 : 0))
        var progress = Progress(total: perShape * shapeList.count * dtypes.count)
        var figures = [Figure]()
        var quiet = OpenMPQuiet()
        for dtype in dtypes {
            for shape in shapeList {
                let shapeFigures: [Figure]
                switch dtype {
                case .float:
                    shapeFigures = measure(Float.self, dtype, shape, dataKind, modeList, kinds, threadList, repeatCount, roofs, &progress, &quiet)
                case .double:
                    shapeFigures = measure(Double.self, dtype, shape, dataKind, modeList, kinds, threadList, repeatCount, roofs, &progress, &quiet)
                }
                Report.printTable(shapeFigures, shape: shape, dtype: dtype)
                figures += shapeFigures
            }
        }
        Report.printSummary(figures)
        if let json {
            try Report.writeJSON(figures, roofs: threadList.map { roofs[$0]! }, to: json)
            log("wrote \(json)")
        }
        if let svg {
            try Report.writeSVG(figures, roofs: threadList.map { roofs[$0]! }, to: svg)
            log("wrote \(svg)")
        }
    }

    func list<T: RawRepresentable>(_ text: String, _: T.Type) throws -> [T] where T.RawValue == String {
        try text.split(separator: ",").map { item in
            guard let value = T(rawValue: item.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown value '\(item)'")
            }
            return value
        }
    }

    func measure<S: BatchNormScalar>(
        _: S.Type, _ dtype: DType, _ shape: BatchNormShape, _ data: DataKind, _ modes: [Mode], _ kinds: [ExecutorKind],
        _ threads: [Int], _ repetitions: Int, _ roofs: [Int: Bandwidth],
        _ progress: inout Progress, _ quiet: inout OpenMPQuiet
    ) -> [Figure] {
        log("preparing \(shape) \(dtype.rawValue)")
        let workload = Workload<S>(shape: shape, data: data)
        let sample = kinds.contains(.reference) ? ReferenceSample(shape: shape) : nil
        let bytesPerPass = Double(shape.count * dtype.size)
        var figures = [Figure]()
        for mode in modes {
            var referenceMs: Double?
            if let sample {
                progress.step("\(shape) \(dtype.rawValue) \(mode.rawValue) reference (sample \(sample.dimensions.map(String.init).joined(separator: "x")))")
                quiet.before(openMP: false)
                let t = Timing.measure(repetitions: max(1, repetitions / 2), warmups: 1) { sample.run(mode) }
                let scale = Double(shape.count) / Double(sample.count)
                let scaled = Timing(median: t.median * scale, min: t.min * scale, max: t.max * scale)
                referenceMs = scaled.median
                figures.append(Figure(shape: shape, mode: mode, executor: .reference, threads: 1, dtype: dtype,
                                      timing: scaled, bytes: mode.passes * bytesPerPass, roof: roofs[1]?.copy,
                                      note: "pure-Swift float64 on \(sample.dimensions.map(String.init).joined(separator: "x")), time scaled to the full tensor"))
            }
            var runs: [(ExecutorKind, Int, BatchNormExecutor)] = []
            for kind in [ExecutorKind.openmp, .dispatch] where kinds.contains(kind) {
                for t in threads { runs.append((kind, t, kind == .openmp ? .openMP(threads: t) : .dispatch(threads: t))) }
            }
            if kinds.contains(.serial) { runs.append((.serial, 1, .serial)) }
            var oneThread = [ExecutorKind: Double]()
            for (kind, t, executor) in runs {
                progress.step("\(shape) \(dtype.rawValue) \(mode.rawValue) \(executor)")
                quiet.before(openMP: kind == .openmp)
                let timing = Timing.measure(repetitions: repetitions) { workload.run(mode, executor: executor) }
                if t == 1 { oneThread[kind] = timing.median }
                var figure = Figure(shape: shape, mode: mode, executor: kind, threads: t, dtype: dtype, timing: timing,
                                    bytes: mode.passes * bytesPerPass, roof: roofs[t]?.copy)
                if let base = oneThread[kind] { figure.speedupVsOneThread = base / timing.median }
                if let referenceMs { figure.ratioToReference = referenceMs / timing.median }
                figures.append(figure)
            }
        }
        return figures
    }
}

/// Progress on stderr: which case, how many left.
struct Progress {
    let total: Int
    var done = 0
    mutating func step(_ what: String) {
        done += 1
        log("[\(done)/\(total)] \(what)")
    }
}

func log(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

func f1(_ x: Double) -> String { String(format: "%.1f", x) }
