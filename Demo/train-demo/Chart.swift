import Foundation

/// One line of a chart: its points, drawn in order, and how it looks.
struct Series {
    var name: String
    var color: String
    var dashed = false
    var points: [(x: Double, y: Double)]
}

/// A line chart written as SVG: axes with ticks (decades on a log axis),
/// axis labels, a title, a subtitle and a legend, readable without the text
/// around it. Points that are not finite, or not positive on a log axis, are
/// left out.
struct LineChart {
    var title: String
    var subtitle = ""
    var xLabel: String
    var yLabel: String
    var xLog = false
    var yLog = false
    var series: [Series]
    /// A horizontal band at the top for values the caller clipped, e.g. "diverged".
    var ceiling: (value: Double, label: String)? = nil
    /// The y range, when it should not follow the data.
    var yRange: ClosedRange<Double>? = nil
    /// Where the x axis starts, when it should not follow the data.
    var xStart: Double? = nil

    private let width = 760.0, height = 480.0
    private let left = 80.0, right = 210.0, top = 64.0, bottom = 60.0

    func svg() -> String {
        let usable = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite && (!xLog || $0.x > 0) && (!yLog || $0.y > 0) }
        let xs = Axis(values: usable.map(\.x) + (xStart.map { [$0] } ?? []), log: xLog, padded: xStart == nil)
        let ys = Axis(values: yRange.map { [$0.lowerBound, $0.upperBound] }
                          ?? usable.map(\.y) + (ceiling.map { [$0.value] } ?? []), log: yLog, padded: yRange == nil)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        func px(_ x: Double) -> Double { left + xs.fraction(x) * plotWidth }
        func py(_ y: Double) -> Double { top + (1 - ys.fraction(y)) * plotHeight }
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="24" font-size="16" font-weight="bold">\(escape(title))</text>
            <text x="\(left)" y="44" fill="#444">\(escape(subtitle))</text>

            """
        // grid and ticks
        for tick in xs.ticks() {
            let x = px(tick)
            out += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(top + plotHeight)\" stroke=\"#e4e4e4\"/>\n"
            out += "<text x=\"\(x)\" y=\"\(top + plotHeight + 18)\" text-anchor=\"middle\">\(xs.label(tick))</text>\n"
        }
        for tick in ys.ticks() {
            let y = py(tick)
            out += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#e4e4e4\"/>\n"
            out += "<text x=\"\(left - 8)\" y=\"\(y + 4)\" text-anchor=\"end\">\(ys.label(tick))</text>\n"
        }
        if let ceiling {
            let y = py(ceiling.value)
            out += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#c00\" stroke-dasharray=\"2 3\"/>\n"
            out += "<text x=\"\(left + plotWidth - 4)\" y=\"\(y - 5)\" text-anchor=\"end\" fill=\"#c00\">\(escape(ceiling.label))</text>\n"
        }
        out += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#333\"/>\n"
        out += "<text x=\"\(left + plotWidth / 2)\" y=\"\(height - 16)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        out += "<text transform=\"translate(20 \(top + plotHeight / 2)) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        // lines and markers
        for s in series {
            let points = s.points.filter { $0.x.isFinite && $0.y.isFinite && (!xLog || $0.x > 0) && (!yLog || $0.y > 0) }
            let path = points.map { "\(px($0.x)),\(py($0.y))" }.joined(separator: " ")
            let dash = s.dashed ? " stroke-dasharray=\"7 4\"" : ""
            out += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(dash)/>\n"
            if points.count <= 16 {
                for p in points { out += "<circle cx=\"\(px(p.x))\" cy=\"\(py(p.y))\" r=\"3\" fill=\"\(s.color)\"/>\n" }
            }
        }
        // legend
        for (i, s) in series.enumerated() {
            let y = top + 10 + Double(i) * 20, x = left + plotWidth + 14
            let dash = s.dashed ? " stroke-dasharray=\"7 4\"" : ""
            out += "<line x1=\"\(x)\" y1=\"\(y)\" x2=\"\(x + 26)\" y2=\"\(y)\" stroke=\"\(s.color)\" stroke-width=\"2\"\(dash)/>\n"
            out += "<text x=\"\(x + 32)\" y=\"\(y + 4)\">\(escape(s.name))</text>\n"
        }
        return out + "</svg>\n"
    }
}

/// Charts side by side in one SVG, each a nested `<svg>`.
func sideBySide(_ panels: [String], width: Int = 760, height: Int = 480) -> String {
    var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width * panels.count)\" height=\"\(height)\" "
        + "viewBox=\"0 0 \(width * panels.count) \(height)\">\n"
    for (i, panel) in panels.enumerated() {
        out += panel.replacingOccurrences(of: "<svg xmlns=\"http://www.w3.org/2000/svg\"",
                                          with: "<svg x=\"\(i * width)\" y=\"0\"")
    }
    return out + "</svg>\n"
}

/// Horizontal bars, each split into labelled segments (e.g. a training
/// step's time: batch norm, the rest), with their values written on them.
struct BarChart {
    var title: String
    var subtitle = ""
    var unit: String
    var bars: [(label: String, segments: [(name: String, value: Double, color: String)])]
    /// Lines under the bars (for segments too thin to label).
    var notes: [String] = []

    func svg() -> String {
        let width = 760.0, left = 210.0, right = 110.0, top = 70.0, barHeight = 34.0, gap = 22.0
        let height = top + Double(bars.count) * (barHeight + gap) + 20 + 20 * Double(notes.count)
        let most = bars.map { $0.segments.reduce(0) { $0 + $1.value } }.max() ?? 1
        let scale = (width - left - right) / most
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="20" y="24" font-size="16" font-weight="bold">\(escape(title))</text>
            <text x="20" y="44" fill="#444">\(escape(subtitle))</text>

            """
        for (i, bar) in bars.enumerated() {
            let y = top + Double(i) * (barHeight + gap)
            out += "<text x=\"\(left - 10)\" y=\"\(y + barHeight / 2 + 4)\" text-anchor=\"end\">\(escape(bar.label))</text>\n"
            var x = left
            for segment in bar.segments {
                let w = segment.value * scale
                out += "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(w)\" height=\"\(barHeight)\" fill=\"\(segment.color)\"/>\n"
                if w > 60 {
                    out += "<text x=\"\(x + w / 2)\" y=\"\(y + barHeight / 2 + 4)\" text-anchor=\"middle\" fill=\"white\">"
                        + "\(escape(segment.name)) \(String(format: "%.2f", segment.value)) \(unit)</text>\n"
                }
                x += w
            }
            let total = bar.segments.reduce(0) { $0 + $1.value }
            out += "<text x=\"\(x + 6)\" y=\"\(y + barHeight / 2 + 4)\">\(String(format: "%.2f", total)) \(unit)</text>\n"
        }
        let bottom = top + Double(bars.count) * (barHeight + gap)
        out += "<line x1=\"\(left)\" y1=\"\(top - 8)\" x2=\"\(left)\" y2=\"\(bottom - gap + 8)\" stroke=\"#333\"/>\n"
        for (i, note) in notes.enumerated() {
            out += "<text x=\"20\" y=\"\(bottom + 12 + 20 * Double(i))\">\(escape(note))</text>\n"
        }
        return out + "</svg>\n"
    }
}

/// An axis's range and ticks, linear or logarithmic.
private struct Axis {
    let low: Double, high: Double, log: Bool

    init(values: [Double], log: Bool, padded: Bool = true) {
        self.log = log
        var low = values.min() ?? 0, high = values.max() ?? 1
        if log {
            // (a tolerance, for values that were Floats: Float(0.01) lies just below 0.01)
            low = pow(10, Foundation.floor(log10(low > 0 ? low : 1e-3) + 1e-6))
            high = pow(10, Foundation.ceil(log10(high > 0 ? high : 1) - 1e-6))
            if high <= low { high = low * 10 }
        } else {
            if high <= low { high = low + 1 }
            let pad = padded ? (high - low) * 0.05 : 0
            low -= pad
            high += pad
        }
        (self.low, self.high) = (low, high)
    }

    func fraction(_ value: Double) -> Double {
        log ? (log10(value) - log10(low)) / (log10(high) - log10(low)) : (value - low) / (high - low)
    }

    func ticks() -> [Double] {
        if log {
            let first = Int(log10(low).rounded()), last = Int(log10(high).rounded())
            let stride = max(1, (last - first) / 8)
            return Swift.stride(from: first, through: last, by: stride).map { pow(10, Double($0)) }
        }
        let raw = (high - low) / 6, magnitude = pow(10, Foundation.floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        return Swift.stride(from: Foundation.ceil(low / step) * step, through: high, by: step).map { $0 }
    }

    func label(_ value: Double) -> String {
        if log {
            let exponent = Int(log10(value).rounded())
            return (-2...3).contains(exponent) ? String(format: "%g", value) : "1e\(exponent)"
        }
        return String(format: "%g", (value * 1e6).rounded() / 1e6 + 0)   // + 0: −0 prints as 0
    }
}

private func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;")
}
