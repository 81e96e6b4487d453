@_spi(Testing) import BatchNormKernels

/// What every figure of one run shares: the options, parsed once, and what
/// the run measured of the machine before timing anything.
struct RunSettings {
    var modes: [Mode]
    var apis: [API]
    var epilogues: [Epilogue]
    /// How the raw path writes its outputs, and what reads them next (raw path only).
    var stores: [OutputStores]
    var nextLayers: [NextLayer]
    var kinds: [ExecutorKind]
    var threads: [Int]
    var caches: [CacheState]
    var data: DataKind
    /// Where each tensor starts: this many bytes past a 4 KiB boundary; nil: where the allocator puts it.
    var tensorOffset: Int?
    var repetitions: Int
    /// Writes over the last-level cache before each cold call; nil without cold figures.
    var evictor: CacheEvictor?
    var cacheBytes: Int
    /// The copy bandwidth at each thread count.
    var roofs: [Int: Bandwidth]

    /// The executors a raw-path figure runs on: OpenMP, then Dispatch, at
    /// each thread count, then serial.
    var executorRuns: [(kind: ExecutorKind, threads: Int, executor: BatchNormExecutor)] {
        var runs: [(ExecutorKind, Int, BatchNormExecutor)] = []
        for kind in [ExecutorKind.openmp, .dispatch] where kinds.contains(kind) {
            for t in threads { runs.append((kind, t, kind == .openmp ? .openMP(threads: t) : .dispatch(threads: t))) }
        }
        if kinds.contains(.serial) { runs.append((.serial, 1, .serial)) }
        return runs
    }

    /// The table of one mode's timed figures, in the order they run: for each
    /// epilogue and cache state, each executor run on the raw buffers. The
    /// other public paths run with each fused epilogue (the separate ones are
    /// the raw kernels' comparison), on the first executor asked for (OpenMP,
    /// else Dispatch, else serial) at the largest thread count; autodiff only
    /// for a differentiable element type, and never alone in backward (it has
    /// no backward without its forward).
    func cases(_ mode: Mode, differentiable: Bool) -> [BenchCase] {
        let primary = [ExecutorKind.openmp, .dispatch, .serial].first(where: kinds.contains)
        var table = [BenchCase]()
        for epilogue in epilogues {
            for cache in caches {
                for run in executorRuns {
                    let others = !epilogue.isSeparate && run.kind == primary
                        && (run.threads == threads.max() || run.kind == .serial)
                    for api in apis where api == .raw || (others && api.times(mode)
                                                          && (api != .autodiff || differentiable)) {
                        for (store, next) in api == .raw ? rawVariants : [(.rule, .none)] {
                            table.append(BenchCase(mode: mode, epilogue: epilogue, cache: cache, kind: run.kind,
                                                   threads: run.threads, executor: run.executor, api: api,
                                                   stores: store, nextLayer: next))
                        }
                    }
                }
            }
        }
        return table
    }

    /// The raw path's store rules and next layers, every pair, side by side.
    private var rawVariants: [(OutputStores, NextLayer)] {
        stores.flatMap { store in nextLayers.map { (store, $0) } }
    }

    /// Every step one shape and element type takes: the table of each mode,
    /// and the reference's figure of each mode when it is asked for.
    func stepCount(differentiable: Bool) -> Int {
        modes.reduce(0) { total, mode in
            total + cases(mode, differentiable: differentiable).count + (kinds.contains(.reference) ? 1 : 0)
        }
    }
}

/// One timed figure of a shape: which call, through which public path, on
/// which executor, from which cache state.
struct BenchCase {
    let mode: Mode
    let epilogue: Epilogue
    let cache: CacheState
    let kind: ExecutorKind
    let threads: Int
    let executor: BatchNormExecutor
    let api: API
    let stores: OutputStores
    let nextLayer: NextLayer

    /// As the progress lines print it: the mode, then the epilogue, the path,
    /// the stores and the next layer when they are not the defaults.
    var label: String {
        var label = epilogue == .none ? mode.rawValue : "\(mode.rawValue) \(epilogue.rawValue)"
        if api != .raw { label += " \(api.rawValue)" }
        if stores != .rule { label += " \(stores.rawValue)" }
        if nextLayer != .none { label += " +\(nextLayer.rawValue)" }
        return label
    }
}

/// Times one shape and element type: its reference figure (when asked for)
/// and its table of cases, mode by mode.
func measure<S: BenchElement>(
    _: S.Type, _ dtype: DType, _ shape: BatchNormShape, _ settings: RunSettings,
    progress: inout Progress, quiet: inout ExecutorQuiet
) -> [Figure] {
    log("preparing \(shape) \(dtype.rawValue)")
    let workload = Workload<S>(shape: shape, data: settings.data, tensorOffset: settings.tensorOffset)
    let arrays = settings.apis.contains(where: { $0 != .raw }) ? APIWorkload(workload) : nil
    let sample = settings.kinds.contains(.reference) ? ReferenceSample(shape: shape) : nil
    let bytesPerPass = Double(shape.count * dtype.size)
    var figures = [Figure]()
    for mode in settings.modes {
        var referenceMs: Double?
        if let sample {
            let figure = measureReference(sample, mode, dtype, shape, settings, bytes: mode.passes * bytesPerPass,
                                          progress: &progress, quiet: &quiet)
            referenceMs = figure.medianMs
            figures.append(figure)
        }
        // The distinct bytes a call touches: x and y, or x, dy and dx (and y).
        let resident = (mode == .backward ? 3 : mode == .forwardBackward ? 4 : 2) * bytesPerPass
        var prepared: Epilogue?
        var oneThread = [String: Double]()   // the one-thread median of each epilogue, cache and executor
        for c in settings.cases(mode, differentiable: S.isDifferentiable) {
            if mode == .backward && c.epilogue != .none && c.epilogue != prepared {
                workload.prepare(c.epilogue)
                prepared = c.epilogue
            }
            progress.step("\(shape) \(dtype.rawValue) \(c.label) \(c.executor) \(c.cache.rawValue)")
            quiet.before(c.kind)
            BatchNormFaultInjection.streamOutputs(from: c.stores == .streamed ? 0 : nil)
            let timing = Timing.measure(repetitions: settings.repetitions,
                                        prepare: { if c.cache == .cold { settings.evictor?.evict() } }) {
                if c.api == .raw {
                    workload.run(mode, epilogue: c.epilogue, executor: c.executor)
                    if c.nextLayer == .read { workload.readOutput(of: mode, executor: c.executor) }
                } else {
                    arrays!.run(c.api, mode, epilogue: c.epilogue, executor: c.executor)
                }
            }
            BatchNormFaultInjection.streamOutputs(from: nil)
            var figure = Figure(shape: shape, mode: mode, executor: c.kind, threads: c.threads, dtype: dtype,
                                cache: c.cache, timing: timing, bytes: mode.passes * bytesPerPass,
                                roof: settings.roofs[c.threads]?.copy)
            figure.activation = c.epilogue.rawValue
            figure.api = c.api.rawValue
            figure.stores = c.stores.rawValue
            figure.nextLayer = c.nextLayer.rawValue
            if c.cache == .warm, resident <= Double(settings.cacheBytes), let roof = settings.roofs[c.threads] {
                figure.cacheRoofGbps = roof.cacheCopy
                figure.cacheRoofFraction = figure.gbps / roof.cacheCopy
            }
            if c.api == .raw {
                let key = "\(c.epilogue) \(c.cache) \(c.kind) \(c.stores) \(c.nextLayer)"
                if c.threads == 1 { oneThread[key] = timing.median }
                if let base = oneThread[key] { figure.speedupVsOneThread = base / timing.median }
                if let referenceMs, c.cache == .warm, c.epilogue == .none, c.stores == .rule, c.nextLayer == .none {
                    figure.ratioToReference = referenceMs / timing.median
                }
            }
            figures.append(figure)
        }
    }
    return figures
}

/// The pure-Swift float64 reference on a sample of the shape, its time
/// scaled to the whole tensor.
private func measureReference(
    _ sample: ReferenceSample, _ mode: Mode, _ dtype: DType, _ shape: BatchNormShape, _ settings: RunSettings,
    bytes: Double, progress: inout Progress, quiet: inout ExecutorQuiet
) -> Figure {
    let dimensions = sample.dimensions.map(String.init).joined(separator: "x")
    progress.step("\(shape) \(dtype.rawValue) \(mode.rawValue) reference (sample \(dimensions))")
    quiet.before(.reference)
    let t = Timing.measure(repetitions: max(1, settings.repetitions / 2), warmups: 1) { sample.run(mode) }
    let scale = Double(shape.count) / Double(sample.count)
    return Figure(shape: shape, mode: mode, executor: .reference, threads: 1, dtype: dtype, cache: .warm,
                  timing: Timing(median: t.median * scale, min: t.min * scale, max: t.max * scale),
                  bytes: bytes, roof: settings.roofs[1]?.copy,
                  note: "pure-Swift float64 on \(dimensions), time scaled to the full tensor")
}
