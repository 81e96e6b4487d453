import BatchNormKernels
import Foundation

/// One timed figure; the JSON record.
struct Figure: Codable {
    /// N×C×H×W as given, whatever the layout.
    var shape: String
    /// channels-first or channels-last.
    var layout: String
    /// warm or cold.
    var cache: String
    var mode: String
    /// none, relu, add-relu (fused), relu-separate, add-relu-separate. Bytes
    /// follow the plain batch-norm convention whatever the epilogue, so that
    /// GB/s compare as times do.
    var activation = "none"
    /// The public path timed: raw, arrays, arrays-into, layer, layer-into, autodiff.
    var api = "raw"
    /// How the outputs were written: rule (the kernels' own) or streamed (every output non-temporal).
    var stores = "rule"
    /// What the timed region holds after the call: none, or read (the next layer's read of the output).
    var nextLayer = "none"
    var executor: String
    var threads: Int
    var dtype: String
    var medianMs: Double
    var minMs: Double
    var maxMs: Double
    /// Bytes by the convention / median time.
    var gbps: Double
    /// The copy bandwidth measured at this thread count in the same run.
    var roofGbps: Double?
    var roofFraction: Double?
    /// Warm figures whose tensors fit in the last-level cache: the in-cache
    /// copy bandwidth measured in the same run, and the fraction of it reached.
    var cacheRoofGbps: Double?
    var cacheRoofFraction: Double?
    var speedupVsOneThread: Double?
    var ratioToReference: Double?
    var note: String?

    init(shape: BatchNormShape, mode: Mode, executor: ExecutorKind, threads: Int, dtype: DType, cache: CacheState,
         timing: Timing, bytes: Double, roof: Double?, note: String? = nil) {
        let d = shape.dimensions
        let nchw = shape.layout == .channelsFirst ? d : [d[0], d[d.count - 1]] + d.dropFirst().dropLast()
        self.shape = nchw.map(String.init).joined(separator: "x")
        layout = shape.layout.description
        self.cache = cache.rawValue
        self.mode = mode.rawValue
        self.executor = executor.rawValue
        self.threads = threads
        self.dtype = dtype.rawValue
        medianMs = timing.median
        minMs = timing.min
        maxMs = timing.max
        gbps = bytes / (timing.median * 1e6)
        roofGbps = roof
        roofFraction = roof.map { gbps / $0 }
        self.note = note
    }
}

enum Report {
    static func printTable(_ figures: [Figure], shape: BatchNormShape, dtype: DType) {
        print("\n\(shape) \(dtype.rawValue)")
        print("| mode | cache | executor | threads | median ms (min–max) | GB/s | % copy roof | % in-cache copy | speed-up vs 1 thread | × reference |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for f in figures {
            let range = String(format: "%.3f (%.3f–%.3f)", f.medianMs, f.minMs, f.maxMs)
            let roof = f.roofFraction.map { String(format: "%.0f%%", $0 * 100) } ?? "–"
            let cacheRoof = f.cacheRoofFraction.map { String(format: "%.0f%%", $0 * 100) } ?? "–"
            let speedup = f.speedupVsOneThread.map { String(format: "%.2f", $0) } ?? "–"
            let reference = f.ratioToReference.map { String(format: "%.1f", $0) } ?? "–"
            let executor = f.executor == "reference" ? "reference (sampled)" : f.executor
            var mode = f.activation == "none" ? f.mode : "\(f.mode) \(f.activation)"
            if f.api != "raw" { mode += " · \(f.api)" }
            if f.stores != "rule" { mode += " · \(f.stores)" }
            if f.nextLayer != "none" { mode += " + \(f.nextLayer)" }
            print("| \(mode) | \(f.cache) | \(executor) | \(f.threads) | \(range) | \(f1(f.gbps)) | \(roof) | \(cacheRoof) | \(speedup) | \(reference) |")
        }
    }

    /// Dispatch against OpenMP at each thread count, where both ran.
    static func printSummary(_ figures: [Figure]) {
        let openmp = figures.filter { $0.executor == "openmp" && $0.api == "raw" }
        let pairs = openmp.compactMap { o -> (Figure, Figure)? in
            guard let d = figures.first(where: {
                $0.executor == "dispatch" && $0.api == "raw" && $0.shape == o.shape && $0.mode == o.mode && $0.threads == o.threads
                    && $0.dtype == o.dtype && $0.layout == o.layout && $0.cache == o.cache
                    && $0.activation == o.activation && $0.stores == o.stores && $0.nextLayer == o.nextLayer
            }) else { return nil }
            return (o, d)
        }
        guard !pairs.isEmpty else { return }
        let ratios = pairs.map { $0.1.medianMs / $0.0.medianMs }.sorted()
        print("\nDispatch time / OpenMP time over \(ratios.count) figures: median \(String(format: "%.2f", ratios[ratios.count / 2])), worst \(String(format: "%.2f", ratios.last!))")
    }

    /// Each public path's time over the raw buffers' in the same
    /// configuration (shape, layout, dtype, mode, epilogue, cache, executor,
    /// threads).
    static func printAPISummary(_ figures: [Figure]) {
        let others = Set(figures.map(\.api)).subtracting(["raw"])
        guard !others.isEmpty else { return }
        let epilogues = Epilogue.allCases.map(\.rawValue).filter { e in figures.contains { $0.activation == e } }
        print("\npublic path time / raw buffers time (same shape, layout, dtype, mode, epilogue, cache, executor and threads):")
        print("| api | mode | epilogue | figures | median | best | worst |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
        for api in API.allCases.map(\.rawValue) where others.contains(api) {
            for mode in Mode.allCases.map(\.rawValue) {
                for epilogue in epilogues {
                    let ratios = figures.filter { $0.api == api && $0.mode == mode && $0.activation == epilogue }
                        .compactMap { f -> Double? in
                            // Autodiff's forward-backward is set against the raw forward training plus backward.
                            guard let raw = figures.first(where: {
                                $0.api == "raw" && $0.shape == f.shape && $0.layout == f.layout && $0.dtype == f.dtype
                                    && $0.mode == f.mode && $0.cache == f.cache && $0.executor == f.executor
                                    && $0.threads == f.threads && $0.activation == f.activation
                                    && $0.stores == "rule" && $0.nextLayer == "none"
                            }) else { return nil }
                            return f.medianMs / raw.medianMs
                        }.sorted()
                    guard !ratios.isEmpty else { continue }
                    print("| \(api) | \(mode) | \(epilogue) | \(ratios.count) | \(String(format: "%.2f", ratios[ratios.count / 2])) | \(String(format: "%.2f", ratios.first!)) | \(String(format: "%.2f", ratios.last!)) |")
                }
            }
        }
    }

    static func writeJSON(_ figures: [Figure], roofs: [Bandwidth], to path: String) throws {
        struct Document: Codable {
            var microkernels: String
            var openmp: Bool
            var bandwidth: [Bandwidth]
            var figures: [Figure]
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let document = Document(microkernels: microkernelInstructionSet, openmp: isOpenMPAvailable,
                                bandwidth: roofs, figures: figures)
        try encoder.encode(document).write(to: URL(fileURLWithPath: path))
    }

    /// A grid of small charts, a row per shape and dtype and a column per mode:
    /// GB/s against threads for each executor, the copy roof as a dashed line.
    static func writeSVG(_ figures: [Figure], roofs: [Bandwidth], to path: String) throws {
        let rows = uniqued(figures.map { "\($0.shape) \($0.layout) \($0.dtype)" })
        let columns = uniqued(figures.map(\.mode))
        let maxThreads = max(2, figures.map(\.threads).max() ?? 2)
        let panelWidth = 300.0, panelHeight = 190.0, left = 50.0, top = 60.0
        let width = left + Double(columns.count) * panelWidth + 20
        let height = top + Double(rows.count) * panelHeight + 20
        let colors = ["openmp": "#1f77b4", "dispatch": "#ff7f0e", "serial": "#555555"]
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="20" font-size="15">bench-threads: GB/s (anchors' byte convention) against threads</text>
            <text x="\(left)" y="40" fill="#1f77b4">■ OpenMP</text><text x="\(left + 80)" y="40" fill="#ff7f0e">■ Dispatch</text><text x="\(left + 170)" y="40" fill="#555555">● serial</text><text x="\(left + 240)" y="40" fill="#d62728">- - copy bandwidth · · · copy, non-temporal stores</text><text x="\(left + 500)" y="40">filled: warm · hollow, dashed: cold</text>

            """
        for (r, row) in rows.enumerated() {
            for (c, mode) in columns.enumerated() {
                let panel = figures.filter {
                    "\($0.shape) \($0.layout) \($0.dtype)" == row && $0.mode == mode && $0.executor != "reference" && $0.api == "raw"
                }
                let x0 = left + Double(c) * panelWidth, y0 = top + Double(r) * panelHeight
                let plotW = panelWidth - 60, plotH = panelHeight - 60
                let yMax = max(1, (panel.map(\.gbps) + roofs.map(\.copyNonTemporal)).max()! * 1.1)
                func px(_ t: Int) -> Double { x0 + 30 + plotW * Double(t - 1) / Double(maxThreads - 1) }
                func py(_ g: Double) -> Double { y0 + 25 + plotH * (1 - g / yMax) }
                svg += "<text x=\"\(x0 + 30)\" y=\"\(y0 + 15)\" font-size=\"12\">\(row) · \(mode)</text>\n"
                svg += "<rect x=\"\(x0 + 30)\" y=\"\(y0 + 25)\" width=\"\(plotW)\" height=\"\(plotH)\" fill=\"none\" stroke=\"#ccc\"/>\n"
                for tick in [0, 0.5, 1.0] {
                    let g = yMax * tick
                    svg += "<text x=\"\(x0 + 26)\" y=\"\(py(g) + 4)\" text-anchor=\"end\">\(Int(g.rounded()))</text>\n"
                }
                for t in 1...maxThreads {
                    svg += "<text x=\"\(px(t))\" y=\"\(y0 + 25 + plotH + 14)\" text-anchor=\"middle\">\(t)</text>\n"
                }
                svg += polyline(roofs.map { (px($0.threads), py($0.copy)) }, color: "#d62728", dash: "6,4")
                svg += polyline(roofs.map { (px($0.threads), py($0.copyNonTemporal)) }, color: "#d62728", dash: "2,3")
                for executor in ["openmp", "dispatch", "serial"] {
                    for cache in ["warm", "cold"] {
                        let points = panel.filter { $0.executor == executor && $0.cache == cache }
                            .sorted { $0.threads < $1.threads }.map { (px($0.threads), py($0.gbps)) }
                        let color = colors[executor]!, fill = cache == "warm" ? color : "white"
                        if points.count > 1 { svg += polyline(points, color: color, dash: cache == "warm" ? nil : "4,2") }
                        for (x, y) in points {
                            svg += "<circle cx=\"\(x)\" cy=\"\(y)\" r=\"3\" fill=\"\(fill)\" stroke=\"\(color)\"/>\n"
                        }
                    }
                }
            }
        }
        svg += "<text x=\"\(left)\" y=\"\(height - 5)\" fill=\"#777\">x: threads · y: GB/s · microkernels \(microkernelInstructionSet)</text>\n</svg>\n"
        try svg.write(toFile: path, atomically: true, encoding: .utf8)
    }

    private static func polyline(_ points: [(Double, Double)], color: String, dash: String?) -> String {
        let list = points.map { String(format: "%.1f,%.1f", $0.0, $0.1) }.joined(separator: " ")
        let dashes = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
        return "<polyline points=\"\(list)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\"\(dashes)/>\n"
    }

    private static func uniqued(_ items: [String]) -> [String] {
        var seen = Set<String>()
        return items.filter { seen.insert($0).inserted }
    }
}
