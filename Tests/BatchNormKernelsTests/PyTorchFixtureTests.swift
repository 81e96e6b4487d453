import BatchNormKernels
import BatchNormReference
import Foundation
import Testing

/// Results recorded from PyTorch's `nn.BatchNorm{1,2,3}d` and autograd by
/// Scripts/record_pytorch_fixtures.py, replayed through the `BatchNorm` layer:
/// channels-first tensors, and channels-last ones (`memory_format=
/// torch.channels_last` / `channels_last_3d`, and NLC for rank 3).
@Suite struct PyTorchFixtureTests {
    struct Fixture: Decodable, CustomTestStringConvertible {
        struct Call: Decodable {
            var x, dy, y, dx: [Double]
            /// The residual and its gradient, for "add-relu".
            var z, dz: [Double]?
            var dweight, dbias: [Double]?
            var running_mean_after, running_var_after: [Double]
            var batches_tracked_after: Int
        }
        var name: String
        /// `[N, C, …]`, or `[N, …, C]` for channels last.
        var shape: [Int]
        /// "channels-last", or absent (channels first).
        var layout: String?
        /// "relu" (relu(bn(x))), "add-relu" (relu(bn(x) + z)), or absent.
        var epilogue: String?
        var dtype: String
        var training, affine: Bool
        var momentum: Double?
        var epsilon: Double
        var weight, bias: [Double]?
        var running_mean_before, running_var_before: [Double]
        var calls: [Call]
        var testDescription: String { name }
    }

    static let fixtures: [Fixture] = {
        let directory = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
        let urls = try! FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
        return urls.filter { $0.pathExtension == "json" }.sorted { $0.path < $1.path }.map { url in
            try! JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        }
    }()

    static let halfFormats: Set<String> = ["bfloat16", "float16"]

    @Test("all fixtures are present") func fixturesPresent() {
        #expect(Self.fixtures.count == 21)
        #expect(Self.fixtures.filter { Self.halfFormats.contains($0.dtype) }.count == 5)
        #expect(Self.fixtures.filter { $0.layout == "channels-last" }.count == 7)
        #expect(Self.fixtures.filter { $0.epilogue != nil }.count == 4)
    }

    func replay<S: BatchNormScalar>(_ fixture: Fixture, as _: S.Type) throws {
        // PyTorch's float32 results carry their own rounding error, so the float bound is
        // both kernels' errors together (seen: at most 1.5e-7). Double agrees to ~1e-15.
        let bound = S.self == Float.self ? 1e-6 : 1e-14
        let layout: BatchNormLayout = fixture.layout == "channels-last" ? .channelsLast : .channelsFirst
        let shape = try BatchNormShape(fixture.shape, layout: layout)
        var layer = try BatchNorm<S>(featureCount: shape.channels, epsilon: fixture.epsilon,
                                     momentum: fixture.momentum, affine: fixture.affine,
                                     mode: fixture.training ? .training : .inference,
                                     activation: fixture.epilogue == nil ? .identity : .relu)
        layer.weight = fixture.weight?.map { S($0) }
        layer.bias = fixture.bias?.map { S($0) }
        layer.runningMean = fixture.running_mean_before.map { S($0) }
        layer.runningVariance = fixture.running_var_before.map { S($0) }
        for call in fixture.calls {
            let x = call.x.map { S($0) }
            let z = call.z?.map { S($0) }
            let forward = try layer.forward(x, shape: fixture.shape, layout: layout, residual: z)
            #expect(normwiseError(forward.output, call.y) <= bound, "y")
            let gradients = try layer.backward(outputGradient: call.dy.map { S($0) }, input: x,
                                               shape: fixture.shape, layout: layout,
                                               statistics: forward.statistics, forwardOutput: forward.output,
                                               wantsResidualGradient: z != nil)
            #expect(normwiseError(gradients.input!, call.dx) <= bound, "dx")
            if let dz = call.dz { #expect(normwiseError(gradients.residual!, dz) <= bound, "dz") }
            if let dweight = call.dweight, let dbias = call.dbias {
                #expect(normwiseError(gradients.weight!, dweight) <= bound, "dγ")
                #expect(normwiseError(gradients.bias!, dbias) <= bound, "dβ")
            } else {
                #expect(gradients.weight == nil && gradients.bias == nil)
            }
            #expect(normwiseError(layer.runningMean!, call.running_mean_after) <= bound, "running mean")
            #expect(normwiseError(layer.runningVariance!, call.running_var_after) <= bound, "running variance")
            #expect(layer.batchesTracked == call.batches_tracked_after)
        }
    }

    @Test("matches PyTorch: y, dx, dγ, dβ, running statistics",
          arguments: fixtures.filter { !halfFormats.contains($0.dtype) })
    func matchesPyTorch(fixture: Fixture) throws {
        if fixture.dtype == "float" {
            try replay(fixture, as: Float.self)
        } else {
            try replay(fixture, as: Double.self)
        }
    }

    /// The half formats: ours within one ulp of the float64 result rounded to
    /// the format (PyTorch's mixed kernel's distance reported beside it), and
    /// the Float parameter gradients and statistics within float's bounds of
    /// the float64 reference.
    func replayHalf<H: HalfFormat>(_ fixture: Fixture, as _: H.Type) throws {
        let layout: BatchNormLayout = fixture.layout == "channels-last" ? .channelsLast : .channelsFirst
        let shape = try BatchNormShape(fixture.shape, layout: layout)
        var layer = try BatchNorm<H>(featureCount: shape.channels, epsilon: fixture.epsilon,
                                     momentum: fixture.momentum, affine: fixture.affine,
                                     mode: fixture.training ? .training : .inference)
        layer.weight = fixture.weight?.map { Float($0) }
        layer.bias = fixture.bias?.map { Float($0) }
        layer.runningMean = fixture.running_mean_before.map { Float($0) }
        layer.runningVariance = fixture.running_var_before.map { Float($0) }
        for call in fixture.calls {
            let before = (layer.runningMean!.map(Double.init), layer.runningVariance!.map(Double.init))
            let x = call.x.map { H(roundingOnce: $0) }   // exact: the values are the format's
            let forward = try layer.forward(x, shape: fixture.shape, layout: layout)
            let gradients = try layer.backward(outputGradient: call.dy.map { H(roundingOnce: $0) }, input: x,
                                               shape: fixture.shape, layout: layout, statistics: forward.statistics)
            let truth = ReferenceBatchNorm.forward(
                call.x, shape: fixture.shape, channelsLast: layout == .channelsLast, training: fixture.training,
                weight: fixture.weight, bias: fixture.bias, runningMean: before.0, runningVariance: before.1,
                momentum: fixture.momentum ?? 0.1, epsilon: fixture.epsilon)
            let truthBackward = ReferenceBatchNorm.backward(
                call.x, outputGradient: call.dy, shape: fixture.shape, channelsLast: layout == .channelsLast,
                training: fixture.training, mean: truth.mean, invStd: truth.invStd, weight: fixture.weight)
            for (name, ours, torch, exact) in [("y", forward.output, call.y, truth.output),
                                               ("dx", gradients.input!, call.dx, truthBackward.inputGradient)] {
                let ourDistance = HalfPrecisionTests.worstUlps(ours, exact)
                let torchDistance = HalfPrecisionTests.worstUlps(torch.map { H(roundingOnce: $0) }, exact)
                // PyTorch's distance is reported, not asserted: it is PyTorch's accuracy, not ours.
                #expect(ourDistance <= 1,
                        "\(fixture.name) \(name): ours \(ourDistance) ulps from float64 (PyTorch's \(torchDistance))")
            }
            // The Float outputs against the float64 reference, within the float kernels' bounds:
            // dγ and dβ accumulate in double and are rounded to Float once, the running
            // statistics are one Float rounding of their update.
            #expect(normwiseError(gradients.weight!, truthBackward.weightGradient) <= Bound.backward(Float.self), "dγ")
            #expect(normwiseError(gradients.bias!, truthBackward.biasGradient) <= Bound.backward(Float.self), "dβ")
            #expect(normwiseError(layer.runningMean!, truth.runningMean!) <= Bound.forward(Float.self), "running mean")
            #expect(normwiseError(layer.runningVariance!, truth.runningVariance!) <= Bound.forward(Float.self),
                    "running variance")
            // And PyTorch's recorded running variance, which is the same Float update.
            #expect(normwiseError(layer.runningVariance!, call.running_var_after) <= 1e-6, "PyTorch's running variance")
        }
    }

    @Test("half formats: within one ulp of float64, on PyTorch's recorded inputs",
          arguments: fixtures.filter { halfFormats.contains($0.dtype) })
    func halfFormatsMatchTruthAndPyTorch(fixture: Fixture) throws {
        if fixture.dtype == "bfloat16" {
            try replayHalf(fixture, as: BFloat16.self)
        } else {
            try replayHalf(fixture, as: Float16.self)
        }
    }
}
