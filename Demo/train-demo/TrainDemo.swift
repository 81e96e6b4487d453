import ArgumentParser
import BatchNormDifferentiation
import BatchNormKernels
import Foundation
import _Differentiation

/// Trains small networks with and without batch norm, written with the
/// package's differentiable API, and plots what batch norm does.
@main
struct TrainDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-demo",
        abstract: "Train small networks with and without batch norm, and plot what it changes.",
        discussion: """
            Four experiments, each written as an SVG plot to --output: (1) the deep linear chain \
            ŷ = x·w₁·…·w_l, final loss against the learning rate; (2) a perceptron on a badly scaled \
            classification problem, training loss against step for a sweep of learning rates, and test \
            accuracy against the learning rate; (3) final test loss against the initial weight scale; \
            (4) the time of a training step with and without batch norm, and batch norm's own share. \
            Data come from a fixed seed: every run gives the same figures but the times.
            """)

    @Option(help: "Where the SVG plots go.")
    var output: String = ".build/train-demo"

    @Flag(help: "A few seconds: fewer steps and sweep points (for CI).")
    var quick = false

    mutating func run() throws {
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let started = Date()
        print("train-demo: plots to \(output)\(quick ? " (quick)" : "")")
        try deepLinearChain()
        let data = makeProblem(train: quick ? 1024 : 4096, test: 1024, seed: 7)
        try learningRates(data)
        try initialScales(data)
        try stepTime()
        print(String(format: "train-demo: done in %.1f s", Date().timeIntervalSince(started)))
    }

    func write(_ svg: String, _ name: String) throws {
        let path = (output as NSString).appendingPathComponent(name)
        try svg.write(toFile: path, atomically: true, encoding: .utf8)
        print("  wrote \(path)")
    }

    static let without = "#1f77b4", with = "#d62728"

    /// 1. Only tiny learning rates train the deep linear chain; with batch
    /// norm on its last hidden layer a wide range does.
    func deepLinearChain() throws {
        let depth = 12, steps = quick ? 60 : 300, ceiling = 1e4
        let rates: [Float] = quick ? [1e-4, 1e-2, 1] : (0...12).map { Float(pow(10, -5 + 0.5 * Double($0))) }
        var plain: [(x: Double, y: Double)] = [], normalized = plain
        for rate in rates {
            plain.append((Double(rate), trainChain(depth: depth, normalized: false, rate: rate, steps: steps, seed: 1) ?? ceiling))
            normalized.append((Double(rate), trainChain(depth: depth, normalized: true, rate: rate, steps: steps, seed: 1) ?? ceiling))
        }
        print("1. deep linear chain (\(depth) layers, \(steps) steps): final loss by learning rate")
        for (p, n) in zip(plain, normalized) {
            print(String(format: "   rate %-8g without %-10.4g with batch norm %.4g", p.x, p.y, n.y))
        }
        try write(LineChart(
            title: "Deep linear chain ŷ = x·w₁·w₂·…·w₁₂: final loss against learning rate",
            subtitle: "\(steps) steps of gradient descent, 256 examples, target y = −2x + noise; weights start at 1.25",
            xLabel: "learning rate", yLabel: "final mean squared error", xLog: true, yLog: true,
            series: [Series(name: "without batch norm", color: Self.without, points: plain),
                     Series(name: "batch norm on h₁₁", color: Self.with, dashed: true, points: normalized)],
            ceiling: (ceiling, "diverged")).svg(), "1-deep-linear-chain.svg")
    }

    /// 2. Faster learning, higher learning rates, higher accuracy.
    func learningRates(_ data: (Dataset, Dataset)) throws {
        let steps = quick ? 40 : 600
        let rates: [Float] = quick ? [0.03, 0.3] : [0.01, 0.03, 0.1, 0.3, 1, 3]
        let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
        var curves: [Series] = [], accuracy: [Series] = [
            Series(name: "without batch norm", color: Self.without, points: []),
            Series(name: "with batch norm", color: Self.with, dashed: true, points: []),
        ]
        print("2. perceptron 16-64-64-4, \(steps) steps of batch 64: test accuracy by learning rate")
        for (i, rate) in rates.enumerated() {
            for normalized in [false, true] {
                let run = train(sizes: [16, 64, 64, 4], normalized: normalized, rate: rate, scale: 1, steps: steps,
                                batch: 64, data: data, seed: 3)
                curves.append(Series(name: String(format: "rate %g", rate), color: colors[i % colors.count],
                                     dashed: normalized, points: run.curve))
                accuracy[normalized ? 1 : 0].points.append((Double(rate), run.diverged ? 0 : 100 * run.testAccuracy))
                let early = run.curve.count > 4 ? run.curve[4].y : .nan
                print(String(format: "   rate %-5g %@ training loss %.3f at step %d and %.3f at the end; test accuracy "
                             + "%5.1f %%, test loss %.3f%@", rate, normalized ? "with   " : "without", early,
                             steps / 8, run.curve.last?.y ?? .nan, 100 * run.testAccuracy, run.testLoss,
                             run.diverged ? " (diverged)" : ""))
            }
        }
        // Losses above 10 (chance is ln 4 ≈ 1.4) are drawn at 10, the line where runs diverged.
        func panel(_ normalized: Bool) -> String {
            LineChart(
                title: normalized ? "With batch norm" : "Without batch norm",
                subtitle: "training loss against step, one line per learning rate",
                xLabel: "step", yLabel: "training cross-entropy (mean over 1/40 of the run)", yLog: true,
                series: curves.filter { $0.dashed == normalized }.map { series in
                    var clipped = series
                    clipped.points = series.points.map { ($0.x, min($0.y, 10)) }
                    return clipped
                },
                ceiling: (10, "10 and above: diverging"), yRange: 0.1...10, xStart: 0).svg()
        }
        try write(sideBySide([panel(false), panel(true)]), "2-learning-rate-curves.svg")
        try write(LineChart(
            title: "Test accuracy against learning rate",
            subtitle: "after \(steps) steps; a diverged run counts as 0 %",
            xLabel: "learning rate", yLabel: "test accuracy (%)", xLog: true, series: accuracy).svg(),
            "2-learning-rate-accuracy.svg")
    }

    /// 3. Batch norm works with much bigger initial weight scales.
    func initialScales(_ data: (Dataset, Dataset)) throws {
        let steps = quick ? 40 : 400, ceiling = 1e3
        let scales: [Float] = quick ? [0.1, 10] : [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100]
        var plain: [(x: Double, y: Double)] = [], normalized = plain
        print("3. initial weight scale (× He), rate 0.1, \(steps) steps: test loss")
        for scale in scales {
            let a = train(sizes: [16, 64, 64, 4], normalized: false, rate: 0.1, scale: scale, steps: steps, batch: 64,
                          data: data, seed: 5)
            let b = train(sizes: [16, 64, 64, 4], normalized: true, rate: 0.1, scale: scale, steps: steps, batch: 64,
                          data: data, seed: 5)
            plain.append((Double(scale), a.diverged ? ceiling : min(ceiling, a.testLoss)))
            normalized.append((Double(scale), b.diverged ? ceiling : min(ceiling, b.testLoss)))
            print(String(format: "   scale %-6g without %-10.4g with batch norm %.4g", scale, a.testLoss, b.testLoss))
        }
        try write(LineChart(
            title: "Final test loss against the initial weight scale",
            subtitle: "perceptron 16-64-64-4, weights He-normal × scale, learning rate 0.1, \(steps) steps",
            xLabel: "initial weight scale (× He initialization)", yLabel: "test cross-entropy", xLog: true, yLog: true,
            series: [Series(name: "without batch norm", color: Self.without, points: plain),
                     Series(name: "with batch norm", color: Self.with, dashed: true, points: normalized)],
            ceiling: (ceiling, "diverged")).svg(), "3-initial-scale.svg")
    }

    /// 4. The share of a training step spent in batch norm.
    func stepTime() throws {
        let batch = 256, width = 256, repetitions = quick ? 3 : 21
        let sizes = [64, width, width, 10]
        var random = Random(seed: 9)
        let x = (0..<(batch * sizes[0])).map { _ in random.normal() }
        let labels = (0..<batch).map { _ in Int(random.next() % 10) }
        var plainModel = Perceptron(sizes: sizes, normalized: false, scale: 1, seed: 11)
        var normalizedModel = Perceptron(sizes: sizes, normalized: true, scale: 1, seed: 11)
        func trainingStep(_ model: inout Perceptron) {
            let g = gradient(at: model) { model in crossEntropy(model(x, rows: batch), labels: labels) }
            model.descend(along: g, rate: 1e-3)
        }
        // Batch norm's own part: its two layers' forward and backward, alone, on the same shapes.
        let bn = try DifferentiableBatchNorm<Float>(featureCount: width, activation: .relu, executor: .serial)
        let h = (0..<(batch * width)).map { _ in random.normal() }
        func batchNormLayers() {
            for _ in 0..<2 {
                let (_, pullback) = valueWithPullback(at: bn, h) { bn, h in bn(h, shape: shape(batch, width)) }
                _ = pullback(.init(h))
            }
        }
        // Interleaved, call by call, so that a noisy moment touches all three alike.
        var times: [[Double]] = [[], [], []]
        for round in 0..<(repetitions + 2) {
            let figures = [milliseconds(1) { trainingStep(&plainModel) },
                           milliseconds(1) { trainingStep(&normalizedModel) },
                           milliseconds(1) { batchNormLayers() }]
            if round >= 2 { for i in 0..<3 { times[i].append(figures[i]) } }
        }
        let medians = times.map { $0.sorted()[$0.count / 2] }
        let (plain, normalized, alone) = (medians[0], medians[1], medians[2])
        let slowdown = normalized / plain - 1
        print(String(format: "4. training step, batch %d, %d-%d-%d-%d: %.2f ms without batch norm, %.2f ms with "
                     + "(%+.0f %%); batch norm's two layers alone %.3f ms, %.1f %% of the step", batch, sizes[0],
                     width, width, sizes[3], plain, normalized, 100 * slowdown, alone, 100 * alone / normalized))
        try write(BarChart(
            title: "One training step, with and without batch norm",
            subtitle: String(format: "forward, backward and update; batch %d, perceptron %d-%d-%d-%d, one thread, "
                             + "medians of %d", batch, sizes[0], width, width, sizes[3], repetitions),
            unit: "ms",
            bars: [
                ("without batch norm (ReLU)", [("rest of the step", plain, "#1f77b4")]),
                ("with batch norm + ReLU (fused)", [("batch norm", alone, "#d62728"),
                                                    ("rest of the step", max(0, normalized - alone), "#1f77b4")]),
            ],
            notes: [
                String(format: "red: batch norm's two layers, forward and backward, timed alone: %.3f ms, %.1f %% of the step",
                       alone, 100 * alone / normalized),
                String(format: "the step with batch norm takes %+.0f %% of the time without it", 100 * slowdown),
                "the matrix products are plain Swift loops: with a BLAS the rest of the step would be shorter",
            ]).svg(), "4-step-time.svg")
    }
}
