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

    @Option(help: "Public paths, comma-separated: raw (buffers), arrays, arrays-into, layer, layer-into, autodiff (Float and Double). Paths other than raw run without epilogue, on the first of the executors (openmp, else dispatch, else serial) at the largest thread count.")
    var api: String = API.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Element types, comma-separated: float, double, float16, bfloat16 (the half formats with Float parameters; not with the separate epilogues).")
    var dtype: String = "float"

    @Option(help: "Epilogues, comma-separated: none, relu, add-relu (fused), relu-separate, add-relu-separate (our batch norm, then a separate elementwise pass on the same threads).")
    var activation: String = "none"

    @Option(help: "Memory layouts, comma-separated: channels-first, channels-last (rank 2 and one-channel shapes are the same memory in both, and run once).")
    var layout: String = BatchNormLayout.allCases.map(\.description).joined(separator: ",")

    @Option(help: "Cache states, comma-separated: warm (tensors as the previous call left them), cold (evicted before each call).")
    var cache: String = CacheState.allCases.map(\.rawValue).joined(separator: ",")

    @Option(name: .customLong("flush-mb"), help: "MiB written over before each cold call (default: twice the last-level cache, at least 64).")
    var flushMB: Int?

    @Option(help: "Input data: normal, subnormal (every x a float subnormal: shows their cost; no flush-to-zero), shifted (1e4 ± 2).")
    var data: String = "normal"

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
    }

    func run() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let layouts = try layout.split(separator: ",").map { item in
            guard let value = BatchNormLayout.allCases.first(where: { $0.description == item }) else {
                throw ValidationError("unknown layout '\(item)' (channels-first, channels-last)")
            }
            return value
        }
        let caches = try list(cache, CacheState.self)
        let epilogues = try list(activation, Epilogue.self)
        let named = try ShapeSets.parse(shapes ?? (quick ? "small" : "default"))
        // Each shape as N×C×H×W in every layout asked for; a layout that is the same memory runs once.
        var shapeList = [BatchNormShape]()
        for dimensions in named {
            for layout in layouts {
                let sameMemory = dimensions.count == 2 || dimensions[1] == 1
                if layout == .channelsLast && sameMemory && layouts.contains(.channelsFirst) { continue }
                let arranged = layout == .channelsFirst ? dimensions
                    : [dimensions[0]] + dimensions.dropFirst(2) + [dimensions[1]]
                shapeList.append(try BatchNormShape(arranged, layout: layout))
            }
        }
        let modeList = try list(modes, Mode.self)
        let apis = try list(api, API.self)
        let dtypes = try list(dtype, DType.self)
        if dtypes.contains(where: { $0.size == 2 }) && epilogues.contains(where: \.isSeparate) {
            throw ValidationError("the separate epilogues (relu-separate, add-relu-separate) are float and double only")
        }
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

        if let trainingLoop {
            let executor: BatchNormExecutor = isOpenMPAvailable ? .openMP(threads: threadList.max()!)
                                                                : .dispatch(threads: threadList.max()!)
            print("bench-threads --training-loop \(trainingLoop): resident memory (Linux /proc/self/status)")
            for shape in shapeList {
                MemoryLoop.measure(Float.self, shape: shape, apis: apis, steps: trainingLoop, executor: executor)
            }
            return
        }

        print("bench-threads: \(cores) cores, microkernels \(microkernelInstructionSet), OpenMP \(isOpenMPAvailable ? "compiled in" : "NOT compiled in (Dispatch only)")")
        print("inputs and outputs allocated and written once before timing (raw buffers, and the into: arrays); each figure is the median (min–max) of \(repeatCount) calls after 2 warm-ups")
        if dataKind != .normal { print("input data: \(dataKind.rawValue)") }
        print("GB/s by the anchors' convention (forward training 3 passes, inference 2, backward 5, \(dtypes.map { "\($0.size) bytes per \($0.rawValue)" }.joined(separator: ", ")))")
        let cacheBytes = lastLevelCacheBytes()
        let evictor = caches.contains(.cold) ? CacheEvictor(bytes: (flushMB ?? max(64, 2 * cacheBytes >> 20)) << 20) : nil
        if let evictor { print("cold figures: \(evictor.bytes >> 20) MiB written over before each call; last-level cache \(cacheBytes >> 20) MiB") }

        // The roof, measured first so that the tensors are not yet resident.
        var roofs = [Int: Bandwidth]()
        for t in threadList {
            log("bandwidth probe, \(t) thread(s)")
            roofs[t] = BandwidthProbe.measure(threads: t, elements: quick ? 8 << 20 : 64 << 20, cacheBytes: cacheBytes,
                                              repetitions: quick ? 3 : 5)
        }
        print("\nmemory bandwidth (STREAM-like, GB/s), and a copy that stays in the last-level cache:")
        print("| threads | copy | copy, non-temporal stores | read | copy in cache (\(roofs[threadList[0]]!.cacheCopyBytes >> 20) MiB) |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for t in threadList {
            let b = roofs[t]!
            print("| \(t) | \(f1(b.copy)) | \(f1(b.copyNonTemporal)) | \(f1(b.read)) | \(f1(b.cacheCopy)) |")
        }

        let executorRuns = kinds.filter { $0 == .openmp || $0 == .dispatch }.count * threadList.count
            + (kinds.contains(.serial) ? 1 : 0)
        let otherAPIRuns = kinds.contains(where: { $0 != .reference }) ? 1 : 0
        let otherAPIFigures = epilogues.contains(.none) ? apis.filter { $0 != .raw }.reduce(0) { total, api in
            total + modeList.filter(api.times).count * caches.count * otherAPIRuns
        } : 0
        let perShape = caches.count * modeList.count * epilogues.count * (apis.contains(.raw) ? executorRuns : 0)
            + otherAPIFigures + (kinds.contains(.reference) ? modeList.count : 0)
        var progress = Progress(total: perShape * shapeList.count * dtypes.count)
        var figures = [Figure]()
        var quiet = OpenMPQuiet()
        // Shape by shape, every element type of a shape back to back: their ratios come from
        // neighbouring moments of a noisy machine.
        for shape in shapeList {
            for dtype in dtypes {
                let shapeFigures: [Figure]
                switch dtype {
                case .float:
                    shapeFigures = measure(Float.self, dtype, shape, dataKind, modeList, apis, epilogues, kinds, threadList,
                                           caches, evictor, cacheBytes, repeatCount, roofs, &progress, &quiet)
                case .double:
                    shapeFigures = measure(Double.self, dtype, shape, dataKind, modeList, apis, epilogues, kinds, threadList,
                                           caches, evictor, cacheBytes, repeatCount, roofs, &progress, &quiet)
                case .float16:
                    shapeFigures = measure(Float16.self, dtype, shape, dataKind, modeList, apis, epilogues, kinds, threadList,
                                           caches, evictor, cacheBytes, repeatCount, roofs, &progress, &quiet)
                case .bfloat16:
                    shapeFigures = measure(BFloat16.self, dtype, shape, dataKind, modeList, apis, epilogues, kinds,
                                           threadList, caches, evictor, cacheBytes, repeatCount, roofs, &progress,
                                           &quiet)
                }
                Report.printTable(shapeFigures, shape: shape, dtype: dtype)
                figures += shapeFigures
            }
        }
        Report.printSummary(figures)
        Report.printAPISummary(figures)
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

    func measure<S: BenchElement>(
        _: S.Type, _ dtype: DType, _ shape: BatchNormShape, _ data: DataKind, _ modes: [Mode], _ apis: [API],
        _ epilogues: [Epilogue], _ kinds: [ExecutorKind],
        _ threads: [Int], _ caches: [CacheState], _ evictor: CacheEvictor?, _ cacheBytes: Int, _ repetitions: Int,
        _ roofs: [Int: Bandwidth], _ progress: inout Progress, _ quiet: inout OpenMPQuiet
    ) -> [Figure] {
        log("preparing \(shape) \(dtype.rawValue)")
        let workload = Workload<S>(shape: shape, data: data)
        let arrays = apis.contains(where: { $0 != .raw }) ? APIWorkload(workload) : nil
        let primaryKind = [ExecutorKind.openmp, .dispatch, .serial].first(where: kinds.contains)
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
                                      cache: .warm, timing: scaled, bytes: mode.passes * bytesPerPass,
                                      roof: roofs[1]?.copy, note: "pure-Swift float64 on \(sample.dimensions.map(String.init).joined(separator: "x")), time scaled to the full tensor"))
            }
            var runs: [(ExecutorKind, Int, BatchNormExecutor)] = []
            for kind in [ExecutorKind.openmp, .dispatch] where kinds.contains(kind) {
                for t in threads { runs.append((kind, t, kind == .openmp ? .openMP(threads: t) : .dispatch(threads: t))) }
            }
            if kinds.contains(.serial) { runs.append((.serial, 1, .serial)) }
            // The distinct bytes a call touches: x and y, or x, dy and dx (and y).
            let resident = (mode == .backward ? 3 : mode == .forwardBackward ? 4 : 2) * bytesPerPass
            for epilogue in epilogues {
            if mode == .backward && epilogue != .none { workload.prepare(epilogue) }
            for cache in caches {
                var oneThread = [ExecutorKind: Double]()
                for (kind, t, executor) in runs {
                    // The other public paths: no epilogue, on the first executor asked for (OpenMP,
                    // else Dispatch, else serial) at the largest thread count.
                    let others = epilogue == .none && kind == primaryKind && (t == threads.max() || kind == .serial)
                    for api in apis where api == .raw || (others && api.times(mode)
                                                          && (api != .autodiff || arrays?.autodiff != nil)) {
                        var label = epilogue == .none ? mode.rawValue : "\(mode.rawValue) \(epilogue.rawValue)"
                        if api != .raw { label += " \(api.rawValue)" }
                        progress.step("\(shape) \(dtype.rawValue) \(label) \(executor) \(cache.rawValue)")
                        quiet.before(openMP: kind == .openmp)
                        let timing = Timing.measure(repetitions: repetitions, prepare: { if cache == .cold { evictor?.evict() } }) {
                            if api == .raw {
                                workload.run(mode, epilogue: epilogue, executor: executor)
                            } else {
                                arrays!.run(api, mode, executor: executor)
                            }
                        }
                        if t == 1 && api == .raw { oneThread[kind] = timing.median }
                        var figure = Figure(shape: shape, mode: mode, executor: kind, threads: t, dtype: dtype, cache: cache,
                                            timing: timing, bytes: mode.passes * bytesPerPass, roof: roofs[t]?.copy)
                        figure.activation = epilogue.rawValue
                        figure.api = api.rawValue
                        if cache == .warm, resident <= Double(cacheBytes), let roof = roofs[t] {
                            figure.cacheRoofGbps = roof.cacheCopy
                            figure.cacheRoofFraction = figure.gbps / roof.cacheCopy
                        }
                        if let base = oneThread[kind], api == .raw { figure.speedupVsOneThread = base / timing.median }
                        if let referenceMs, cache == .warm, epilogue == .none, api == .raw {
                            figure.ratioToReference = referenceMs / timing.median
                        }
                        figures.append(figure)
                    }
                }
            }
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
