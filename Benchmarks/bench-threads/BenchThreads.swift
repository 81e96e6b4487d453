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
            memory roof. The roof is a STREAM-like copy measured in the same run at each thread count; \
            warm figures whose tensors fit in the last-level cache are also set against a copy that \
            stays there. Shapes are named N×C×H×W in both layouts; --layout says how they lie in memory. \
            Cold figures write over a buffer larger than the last-level cache before each call, \
            outside the timed region.
            """)

    @Option(help: "Shape sets (default, resnet50, small) or shapes like 32x64x112x112, comma-separated.")
    var shapes: String?

    @Option(help: "Modes, comma-separated: forward-training, forward-inference, backward, forward-backward (a training step: forward training, then backward).")
    var modes: String = Mode.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Thread counts, comma-separated (default: 1 up to the number of cores).")
    var threads: String?

    @Option(help: "Executors, comma-separated: openmp, dispatch, serial, reference.")
    var executors: String = ExecutorKind.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Public paths, comma-separated: raw (buffers), arrays, arrays-into, layer, layer-into, autodiff (Float and Double). Paths other than raw run each fused epilogue of --activation (not the separate ones), on the first of the executors (openmp, else dispatch, else serial) at the largest thread count.")
    var api: String = API.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Element types, comma-separated: float, double, float16, bfloat16 (the half formats with Float parameters; not with the separate epilogues).")
    var dtype: String = "float"

    @Option(help: "Epilogues, comma-separated: none, relu, add-relu (fused), relu-separate, add-relu-separate (our batch norm, then a separate elementwise pass on the same threads).")
    var activation: String = "none"

    @Option(help: "Output stores of the raw path, comma-separated: rule (the kernels' own: non-temporal stores only where a call's tensors outgrow the last-level cache), streamed (every output with non-temporal stores, as oneDNN writes its float outputs).")
    var stores: String = "rule"

    @Option(name: .customLong("next-layer"), help: "What follows each timed call of the raw path, inside the timed region, comma-separated: none, read (the next layer's read of the output, y or dx, on the same executor and threads).")
    var nextLayer: String = "none"

    @Option(help: "Memory layouts, comma-separated: channels-first, channels-last (rank 2 and one-channel shapes are the same memory in both, and run once).")
    var layout: String = BatchNormLayout.allCases.map(\.description).joined(separator: ",")

    @Option(help: "Cache states, comma-separated: warm (tensors as the previous call left them), cold (evicted before each call).")
    var cache: String = CacheState.allCases.map(\.rawValue).joined(separator: ",")

    @Option(name: .customLong("flush-mb"), help: "MiB written over before each cold call (default: twice the last-level cache, at least 64).")
    var flushMB: Int?

    @Option(help: "Input data: normal, subnormal (every x a float subnormal: shows their cost; no flush-to-zero), shifted (1e4 ± 2).")
    var data: String = "normal"

    @Option(name: .customLong("tensor-offset"), help: "Place each tensor of the raw path this many bytes past a 4 KiB boundary (a multiple of the element size, below 4096), to see what alignment costs (default: where the allocator puts it).")
    var tensorOffset: Int?

    @Option(name: .customLong("repeat"), help: "Timed calls per figure.")
    var repetitions: Int?

    @Flag(help: "About 15 s on 2 cores: the small shapes, 3 repetitions, a smaller bandwidth probe (for CI).")
    var quick = false

    @Option(name: .customLong("training-loop"), help: "Instead of timing: run this many training steps (forward training, then backward) through each --api path, float, at the largest thread count, and print the resident memory each loop holds.")
    var trainingLoop: Int?

    @Option(help: "Write one JSON record per figure to this file.")
    var json: String?

    @Option(help: "Draw GB/s against threads, per shape and mode, with the bandwidth roof, to this SVG file.")
    var svg: String?

    func validate() throws {
        if let repetitions, repetitions < 1 { throw ValidationError("--repeat must be at least 1") }
        if let trainingLoop, trainingLoop < 1 { throw ValidationError("--training-loop must be at least 1") }
        if let flushMB, flushMB < 1 { throw ValidationError("--flush-mb must be at least 1") }
        if let tensorOffset, !(0..<4096).contains(tensorOffset) {
            throw ValidationError("--tensor-offset must be in 0..<4096")
        }
    }

    func run() throws {
        let shapeList = try parseShapes()
        let dtypes = try list(dtype, DType.self)
        var settings = try parseSettings()
        if let tensorOffset, let dtype = dtypes.first(where: { tensorOffset % $0.size != 0 }) {
            throw ValidationError("--tensor-offset \(tensorOffset) is not a multiple of \(dtype.rawValue)'s \(dtype.size) bytes")
        }
        if dtypes.contains(where: { $0.size == 2 }) && settings.epilogues.contains(where: \.isSeparate) {
            throw ValidationError("the separate epilogues (relu-separate, add-relu-separate) are float and double only")
        }
        if let trainingLoop {
            let t = settings.threads.max()!
            let executor: BatchNormExecutor = isOpenMPAvailable ? .openMP(threads: t) : .dispatch(threads: t)
            print("bench-threads --training-loop \(trainingLoop): resident memory (Linux /proc/self/status)")
            for shape in shapeList {
                MemoryLoop.measure(Float.self, shape: shape, apis: settings.apis, steps: trainingLoop,
                                   executor: executor)
            }
            return
        }

        print("bench-threads: \(ProcessInfo.processInfo.activeProcessorCount) cores, microkernels \(microkernelInstructionSet), OpenMP \(isOpenMPAvailable ? "compiled in" : "NOT compiled in (Dispatch only)")")
        print("inputs and outputs allocated and written once before timing (raw buffers, and the into: arrays); each figure is the median (min–max) of \(settings.repetitions) calls after 2 warm-ups")
        if settings.data != .normal { print("input data: \(settings.data.rawValue)") }
        print("GB/s by the anchors' convention (forward training 3 passes, inference 2, backward 5, \(dtypes.map { "\($0.size) bytes per \($0.rawValue)" }.joined(separator: ", ")))")
        if let evictor = settings.evictor {
            print("cold figures: \(evictor.bytes >> 20) MiB written over before each call; last-level cache \(settings.cacheBytes >> 20) MiB")
        }
        let roofs = measureRoofs(&settings)

        var progress = Progress(total: shapeList.count * dtypes.reduce(0) { total, dtype in
            total + settings.stepCount(differentiable: dtype.elementType.isDifferentiable)
        })
        var figures = [Figure]()
        var quiet = ExecutorQuiet()
        // Shape by shape, every element type of a shape back to back: their ratios come from
        // neighbouring moments of a noisy machine.
        for shape in shapeList {
            for dtype in dtypes {
                let shapeFigures = measure(dtype.elementType, dtype, shape, settings, progress: &progress,
                                           quiet: &quiet)
                Report.printTable(shapeFigures, shape: shape, dtype: dtype)
                figures += shapeFigures
            }
        }
        Report.printSummary(figures)
        Report.printAPISummary(figures)
        if let json {
            try Report.writeJSON(figures, roofs: roofs, to: json)
            log("wrote \(json)")
        }
        if let svg {
            try Report.writeSVG(figures, roofs: roofs, to: svg)
            log("wrote \(svg)")
        }
    }

    /// Each shape as N×C×H×W in every layout asked for; a layout that is the same memory runs once.
    func parseShapes() throws -> [BatchNormShape] {
        let layouts = try layout.split(separator: ",").map { item in
            guard let value = BatchNormLayout.allCases.first(where: { $0.description == item }) else {
                throw ValidationError("unknown layout '\(item)' (channels-first, channels-last)")
            }
            return value
        }
        var shapeList = [BatchNormShape]()
        for dimensions in try ShapeSets.parse(shapes ?? (quick ? "small" : "default")) {
            for layout in layouts {
                let sameMemory = dimensions.count == 2 || dimensions[1] == 1
                if layout == .channelsLast && sameMemory && layouts.contains(.channelsFirst) { continue }
                let arranged = layout == .channelsFirst ? dimensions
                    : [dimensions[0]] + dimensions.dropFirst(2) + [dimensions[1]]
                shapeList.append(try BatchNormShape(arranged, layout: layout))
            }
        }
        return shapeList
    }

    /// The options every figure shares; the roofs are measured later.
    func parseSettings() throws -> RunSettings {
        var kinds = try list(executors, ExecutorKind.self)
        if kinds.contains(.openmp) && !isOpenMPAvailable {
            kinds.removeAll { $0 == .openmp }
            log("OpenMP is not compiled in: skipping the openmp executor")
        }
        let threadList = try threads.map { text in
            try text.split(separator: ",").map { item -> Int in
                guard let t = Int(item), t >= 1 else { throw ValidationError("bad thread count '\(item)'") }
                return t
            }
        } ?? Array(1...ProcessInfo.processInfo.activeProcessorCount)
        guard let dataKind = DataKind(rawValue: data) else { throw ValidationError("unknown --data '\(data)'") }
        let caches = try list(cache, CacheState.self)
        let cacheBytes = lastLevelCacheBytes   // as the kernels see it
        let evictor = caches.contains(.cold)
            ? CacheEvictor(bytes: (flushMB ?? max(64, 2 * cacheBytes >> 20)) << 20) : nil
        return RunSettings(
            modes: try list(modes, Mode.self), apis: try list(api, API.self),
            epilogues: try list(activation, Epilogue.self), stores: try list(stores, OutputStores.self),
            nextLayers: try list(nextLayer, NextLayer.self), kinds: kinds, threads: threadList, caches: caches,
            data: dataKind, tensorOffset: tensorOffset, repetitions: repetitions ?? (quick ? 3 : 7), evictor: evictor, cacheBytes: cacheBytes,
            roofs: [:])
    }

    /// The roof at each thread count, measured before any tensor is made so
    /// that none is resident; printed, and returned in thread order.
    func measureRoofs(_ settings: inout RunSettings) -> [Bandwidth] {
        for t in settings.threads {
            log("bandwidth probe, \(t) thread(s)")
            settings.roofs[t] = BandwidthProbe.measure(threads: t, elements: quick ? 8 << 20 : 64 << 20,
                                                       cacheBytes: settings.cacheBytes, repetitions: quick ? 3 : 5)
        }
        let roofs = settings.threads.map { settings.roofs[$0]! }
        print("\nmemory bandwidth (STREAM-like, GB/s), and a copy that stays in the last-level cache:")
        print("| threads | copy | copy, non-temporal stores | read | copy in cache (\(roofs[0].cacheCopyBytes >> 20) MiB) |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for (t, b) in zip(settings.threads, roofs) {
            print("| \(t) | \(f1(b.copy)) | \(f1(b.copyNonTemporal)) | \(f1(b.read)) | \(f1(b.cacheCopy)) |")
        }
        return roofs
    }

    func list<T: RawRepresentable>(_ text: String, _: T.Type) throws -> [T] where T.RawValue == String {
        try text.split(separator: ",").map { item in
            guard let value = T(rawValue: item.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown value '\(item)'")
            }
            return value
        }
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
