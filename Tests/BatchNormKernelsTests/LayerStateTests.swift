import _Differentiation
import BatchNormDifferentiation
import BatchNormKernels
import BatchNormReference
import Foundation
import Testing

/// The layers' state as a checkpoint holds it (Codable), reset, inference on
/// a `let` layer, and the differentiable layer without γ and β or without
/// running statistics, against the `BatchNorm` layer.
@Suite struct LayerStateTests {
    /// A layer after a few training steps, so that every field differs from its default.
    func trained<E: BatchNormElement>(
        _: E.Type, momentum: Double?, affine: Bool, tracks: Bool, values: (Int, UInt64) -> [E]
    ) throws -> (BatchNorm<E>, input: [E], shape: [Int]) where E.Parameter: BatchNormScalar {
        let shape = [3, 5, 4, 6]
        var layer = try BatchNorm<E>(featureCount: 5, epsilon: 1e-3, momentum: momentum, affine: affine,
                                     tracksRunningStatistics: tracks, activation: .relu)
        if affine {
            layer.weight = randomValues(5, center: 1, spread: 0.5, seed: 3)
            layer.bias = randomValues(5, seed: 4)
        }
        for step in 0..<3 { _ = try layer.forward(values(360, UInt64(10 + step)), shape: shape) }
        return (layer, values(360, 20), shape)
    }

    func roundTrip<T: Codable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
    }

    func expectSameState<E: BatchNormElement>(_ a: BatchNorm<E>, _ b: BatchNorm<E>) where E.Parameter: BatchNormScalar {
        func bits(_ values: [E.Parameter]?) -> [UInt64]? { values?.map(bitPattern) }
        #expect(a.featureCount == b.featureCount && a.epsilon.bitPattern == b.epsilon.bitPattern)
        #expect(a.momentum?.bitPattern == b.momentum?.bitPattern && a.batchesTracked == b.batchesTracked)
        #expect(bits(a.weight) == bits(b.weight) && bits(a.bias) == bits(b.bias))
        #expect(bits(a.runningMean) == bits(b.runningMean) && bits(a.runningVariance) == bits(b.runningVariance))
        #expect(a.mode == b.mode && a.activation == b.activation)
    }

    @Test(arguments: [(0.1 as Double?, true, true), (nil, true, true), (0.3, false, true), (0.1, true, false)])
    func aLayerRestoredFromJSONIsTheSameBitForBit(momentum: Double?, affine: Bool, tracks: Bool) throws {
        let (float, x, shape) = try trained(Float.self, momentum: momentum, affine: affine, tracks: tracks) {
            randomValues($0, center: 1, spread: 2, seed: $1)
        }
        var restored = try roundTrip(float)
        expectSameState(float, restored)
        #expect(restored.executor == .automatic)
        // The next step gives the same bits from either.
        var original = float
        let a = try original.forward(x, shape: shape), b = try restored.forward(x, shape: shape)
        #expect(a.output.map(bitPattern) == b.output.map(bitPattern))
        expectSameState(original, restored)

        let (double, _, _) = try trained(Double.self, momentum: momentum, affine: affine, tracks: tracks) {
            randomValues($0, center: 1, spread: 2, seed: $1)
        }
        expectSameState(double, try roundTrip(double))
        let (half, _, _) = try trained(Float16.self, momentum: momentum, affine: affine, tracks: tracks) {
            (randomValues($0, center: 1, spread: 2, seed: $1) as [Float]).map(Float16.init)
        }
        expectSameState(half, try roundTrip(half))
    }

    @Test func decodingAStateTheChecksRejectThrowsTheirError() throws {
        let layer = try BatchNorm<Float>(featureCount: 4)
        var json = try #require(String(data: JSONEncoder().encode(layer), encoding: .utf8))
        json = json.replacingOccurrences(of: "\"featureCount\":4", with: "\"featureCount\":5")
        #expect(json.contains("\"featureCount\":5"))
        do {
            _ = try JSONDecoder().decode(BatchNorm<Float>.self, from: Data(json.utf8))
            Issue.record("decoded a layer of 5 channels with 4 weights")
        } catch DecodingError.dataCorrupted(let context) {
            let error = try #require(context.underlyingError as? BatchNormError)
            #expect(error.code == .countMismatch && error.argument == "weight")
        }
        let epsilon = try String(data: JSONEncoder().encode(layer), encoding: .utf8)!
            .replacingOccurrences(of: "\"epsilon\":1.0e-05", with: "\"epsilon\":-1")
            .replacingOccurrences(of: "\"epsilon\":1e-05", with: "\"epsilon\":-1")
        #expect(epsilon.contains("\"epsilon\":-1"))
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(BatchNorm<Float>.self, from: Data(epsilon.utf8)) }
    }

    @Test func aBatchCountAtEitherEndIsCheckedNotTrapped() throws {
        var layer = try BatchNorm<Float>(featureCount: 2, momentum: nil)
        let x: [Float] = randomValues(8, center: 1, spread: 2, seed: 5)
        layer.batchesTracked = .max
        _ = try layer.forward(x, shape: [4, 2])                   // the factor 1/(k+1) in double, no overflow
        #expect(layer.batchesTracked == .max)
        layer.batchesTracked = -1
        let before = layer.runningMean
        expectThrows(.invalidDimension, argument: "batchesTracked") { () throws(BatchNormError) in
            _ = try layer.forward(x, shape: [4, 2])
        }
        #expect(layer.runningMean == before && layer.batchesTracked == -1)
    }

    @Test func resetGivesTheStateOfANewLayer() throws {
        let fresh = try BatchNorm<Float>(featureCount: 5, epsilon: 1e-3, activation: .relu)
        var (layer, _, _) = try trained(Float.self, momentum: 0.1, affine: true, tracks: true) {
            randomValues($0, center: 1, spread: 2, seed: $1)
        }
        layer.resetRunningStatistics()
        #expect(layer.runningMean == fresh.runningMean && layer.runningVariance == fresh.runningVariance)
        #expect(layer.batchesTracked == 0 && layer.weight != fresh.weight)
        layer.resetParameters()
        expectSameState(layer, fresh)
    }

    @Test(arguments: [true, false])
    func inferenceOnALetLayerIsForwardInInferenceMode(tracks: Bool) throws {
        let (trainedLayer, x, shape) = try trained(Float.self, momentum: 0.1, affine: true, tracks: tracks) {
            randomValues($0, center: 1, spread: 2, seed: $1)
        }
        let layer = trainedLayer                                    // a let, in training mode
        let got = try layer.inference(x, shape: shape)
        var byMode = layer
        byMode.mode = .inference
        let want = try byMode.forward(x, shape: shape)
        #expect(got.output.map(bitPattern) == want.output.map(bitPattern))
        #expect(got.statistics == want.statistics)
        expectSameState(byMode, { var l = layer; l.mode = .inference; return l }())
        var into = [Float](repeating: 7, count: 3)
        let statistics = try layer.inference(x, into: &into, shape: shape)
        #expect(into.map(bitPattern) == want.output.map(bitPattern) && statistics == want.statistics)
        // Without running statistics, inference normalizes with the batch's, as PyTorch does.
        if !tracks { #expect(got.statistics.mode == .training) }
    }

    /// The layer's buffer forward in place (output is the input's memory):
    /// the bits of the array forward, and the same running statistics.
    @Test(arguments: [BatchNormMode.training, .inference])
    func theLayerNormalizesInPlace(mode: BatchNormMode) throws {
        var (layer, x, shape) = try trained(Float.self, momentum: 0.1, affine: true, tracks: true) {
            randomValues($0, center: 1, spread: 2, seed: $1)
        }
        layer.mode = mode
        var copy = layer
        let want = try copy.forward(x, shape: shape)
        let shapeValue = try BatchNormShape(shape)
        var buffer = x
        let statistics = try buffer.withUnsafeMutableBufferPointer { buffer in
            try layer.forward(input: UnsafeBufferPointer(buffer), output: buffer, shape: shapeValue)
        }
        #expect(buffer.map(bitPattern) == want.output.map(bitPattern) && statistics == want.statistics)
        expectSameState(layer, copy)
    }

    @Test func aTensorInTheOtherLayoutGetsAnErrorThatSaysSo() throws {
        var layer = try BatchNorm<Float>(featureCount: 8)
        let x = [Float](repeating: 1, count: 2 * 4 * 4 * 8)
        do {
            _ = try layer.forward(x, shape: [2, 4, 4, 8])
            Issue.record("a channels-last tensor passed as channels first did not throw")
        } catch {
            #expect(error.code == .countMismatch && error.argument == "shape[1]")
            #expect(error.actual.contains("layout: .channelsLast"), "\(error)")
        }
        do {
            _ = try BatchNormalization.forwardTraining(x, shape: [2, 8, 4, 4], layout: .channelsLast,
                                                       weight: [Float](repeating: 1, count: 8))
            Issue.record("a channels-first tensor passed as channels last did not throw")
        } catch {
            #expect(error.code == .countMismatch && error.argument == "weight")
            #expect(error.actual.contains("layout: .channelsFirst"), "\(error)")
        }
        // Where the other layout would not fit either, no hint.
        do {
            _ = try layer.forward(x, shape: [2, 16, 4, 4])
        } catch {
            #expect(error.code == .countMismatch && !error.actual.contains("layout:"), "\(error)")
        }
    }

    @Test func theDefaultThreadCountIsTheOneAutomaticUses() throws {
        defer { try? BatchNormExecutor.setDefaultThreadCount(nil) }
        let environment = BatchNormExecutor.defaultThreadCount
        #expect(environment >= 1 && BatchNormExecutor.automatic.threads == environment)
        try BatchNormExecutor.setDefaultThreadCount(3)
        #expect(BatchNormExecutor.defaultThreadCount == 3 && BatchNormExecutor.automatic.threads == 3)
        expectThrows(.invalidThreadCount, argument: "threads") { () throws(BatchNormError) in
            try BatchNormExecutor.setDefaultThreadCount(0)
        }
        #expect(BatchNormExecutor.defaultThreadCount == 3)
        try BatchNormExecutor.setDefaultThreadCount(nil)
        #expect(BatchNormExecutor.defaultThreadCount == environment)
    }

    @Test(arguments: [BatchNormLayout.channelsFirst, .channelsLast], [BatchNormMode.training, .inference])
    func aDifferentiableLayerWithoutAffineOrRunningStatisticsIsTheLayer(
        layout: BatchNormLayout, mode: BatchNormMode
    ) throws {
        let shape = try BatchNormShape(dimensions([4, 3, 5, 5], in: layout), layout: layout)
        let x: [Double] = randomValues(shape.count, center: 2, spread: 3, seed: 31)
        let dy: [Double] = randomValues(shape.count, seed: 32)
        for (affine, tracks) in [(false, true), (true, false), (false, false)] {
            let layer = try DifferentiableBatchNorm<Double>(featureCount: 3, affine: affine,
                                                            tracksRunningStatistics: tracks, mode: mode)
            var reference = try BatchNorm<Double>(featureCount: 3, affine: affine, tracksRunningStatistics: tracks,
                                                  mode: mode)
            let (y, pullback) = valueWithPullback(at: layer, x) { layer, x in layer(x, shape: shape) }
            let (dLayer, dx) = pullback(.init(dy))
            let forward = try reference.forward(x, shape: shape.dimensions, layout: layout)
            let want = try reference.backward(outputGradient: dy, input: x, shape: shape.dimensions, layout: layout,
                                              statistics: forward.statistics)
            let context = "affine \(affine), tracks \(tracks), \(mode), \(layout)"
            #expect(y.map(\.bitPattern) == forward.output.map(\.bitPattern), "\(context)")
            #expect(dx.base.map(\.bitPattern) == want.input!.map(\.bitPattern), "\(context)")
            #expect(dLayer.weight.base.count == (affine ? 3 : 0) && layer.weight.count == (affine ? 3 : 0))
            if affine { #expect(dLayer.weight.base.map(\.bitPattern) == want.weight!.map(\.bitPattern)) }
            #expect(layer.runningStatistics?.mean == reference.runningMean, "\(context)")
            #expect(layer.runningStatistics?.batchesTracked ?? 0 == reference.batchesTracked, "\(context)")
        }
    }

    @Test func aDifferentiableLayerRestoredFromJSONIsTheSameBitForBit() throws {
        let shape = try BatchNormShape([4, 3, 5, 5])
        var layer = try DifferentiableBatchNorm<Float>(featureCount: 3, epsilon: 1e-4, momentum: nil,
                                                       activation: .relu)
        layer.weight = randomValues(3, center: 1, spread: 0.5, seed: 41)
        layer.bias = randomValues(3, seed: 42)
        for step in 0..<3 { _ = layer(randomValues(shape.count, center: 1, spread: 2, seed: UInt64(43 + step)), shape: shape) }
        var restored = try JSONDecoder().decode(DifferentiableBatchNorm<Float>.self,
                                                from: JSONEncoder().encode(layer))
        let statistics = try #require(layer.runningStatistics), copy = try #require(restored.runningStatistics)
        #expect(copy !== statistics, "a decoded layer has running statistics of its own")
        #expect(copy.mean.map(\.bitPattern) == statistics.mean.map(\.bitPattern))
        #expect(copy.variance.map(\.bitPattern) == statistics.variance.map(\.bitPattern))
        #expect(copy.batchesTracked == 3 && copy.momentum == nil)
        #expect(restored.weight.map(\.bitPattern) == layer.weight.map(\.bitPattern))
        #expect(restored.bias.map(\.bitPattern) == layer.bias.map(\.bitPattern))
        #expect(restored.epsilon == 1e-4 && restored.activation == .relu && restored.mode == .training)
        layer.mode = .inference
        restored.mode = .inference
        let x: [Float] = randomValues(shape.count, center: 1, spread: 2, seed: 50)
        #expect(restored(x, shape: shape).map(\.bitPattern) == layer(x, shape: shape).map(\.bitPattern))
        layer.resetRunningStatistics()
        #expect(statistics.batchesTracked == 0 && statistics.mean == [0, 0, 0] && copy.batchesTracked == 3)

        let plain = try DifferentiableBatchNorm<Double>(featureCount: 2, affine: false, tracksRunningStatistics: false)
        let plainCopy = try JSONDecoder().decode(DifferentiableBatchNorm<Double>.self,
                                                 from: JSONEncoder().encode(plain))
        #expect(!plainCopy.isAffine && plainCopy.runningStatistics == nil && plainCopy.featureCount == 2)
    }
}

/// Checkpoints are input from outside the program: random corruptions of a
/// valid one (numbers changed, arrays cut or grown, keys dropped, values of
/// the wrong type) decode to a layer that passes every check of a call, or
/// throw; never a layer that crashes or writes out of bounds later.
@Suite struct CheckpointCorruptionTests {
    /// A corrupted copy of `object` (a JSON value), changed at one random place.
    func corrupt(_ object: Any, using rng: inout SplitMix64) -> Any {
        if var dictionary = object as? [String: Any], !dictionary.isEmpty {
            let key = dictionary.keys.sorted()[Int.random(in: 0..<dictionary.count, using: &rng)]
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: dictionary[key] = nil
            case 1: dictionary[key] = "text"
            default: dictionary[key] = corrupt(dictionary[key]!, using: &rng)
            }
            return dictionary
        }
        if var array = object as? [Any] {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: if !array.isEmpty { array.removeLast() }
            case 1: array.append(0.5)
            default:
                if !array.isEmpty {
                    let i = Int.random(in: 0..<array.count, using: &rng)
                    array[i] = corrupt(array[i], using: &rng)
                }
            }
            return array
        }
        let values: [Any] = [0, -1, 1, 2, 3, 1e300, -1e-300, 0.5, Int.max, Int.min, 1_000_000, "nan", NSNull()]
        return values[Int.random(in: 0..<values.count, using: &rng)]
    }

    @Test func aCorruptedCheckpointDecodesToAUsableLayerOrThrows() throws {
        var layer = try BatchNorm<Float>(featureCount: 3, momentum: nil, activation: .relu)
        _ = try layer.forward(randomValues(24, center: 1, spread: 2, seed: 1), shape: [2, 3, 4])
        let valid = try JSONSerialization.jsonObject(with: JSONEncoder().encode(layer))
        var differentiable = try DifferentiableBatchNorm<Float>(featureCount: 3)
        differentiable.weight = [2, 3, 4]
        let validDifferentiable = try JSONSerialization.jsonObject(with: JSONEncoder().encode(differentiable))
        var rng = SplitMix64(seed: 77)
        var decoded = 0, rejected = 0
        let x: [Float] = randomValues(24, center: 1, spread: 2, seed: 2)
        for _ in 0..<400 {
            var object = valid
            for _ in 0..<Int.random(in: 1...3, using: &rng) { object = corrupt(object, using: &rng) }
            let data = try JSONSerialization.data(withJSONObject: object)
            guard var restored = try? JSONDecoder().decode(BatchNorm<Float>.self, from: data) else {
                rejected += 1
                continue
            }
            decoded += 1
            // A decoded layer is one the checks accept: each call runs or throws a BatchNormError.
            let shape = [2, restored.featureCount, 24 / (2 * max(1, restored.featureCount))]
            if shape.reduce(1, *) == 24 {
                _ = try? restored.forward(x, shape: shape)
                _ = try? restored.inference(x, shape: shape)
            }
            #expect(restored.weight?.count ?? restored.featureCount == restored.featureCount)
            #expect(restored.runningMean?.count ?? restored.featureCount == restored.featureCount)

            var objectD = validDifferentiable
            for _ in 0..<Int.random(in: 1...3, using: &rng) { objectD = corrupt(objectD, using: &rng) }
            let dataD = try JSONSerialization.data(withJSONObject: objectD)
            if let restoredD = try? JSONDecoder().decode(DifferentiableBatchNorm<Float>.self, from: dataD) {
                #expect(restoredD.weight.count == (restoredD.isAffine ? restoredD.featureCount : 0))
                #expect(restoredD.runningStatistics.map { $0.mean.count == restoredD.featureCount } ?? true)
                if restoredD.featureCount == 3 {
                    let y = restoredD(x, shape: try BatchNormShape([2, 3, 4]))
                    #expect(y.count == 24)
                }
            }
        }
        #expect(decoded > 20 && rejected > 20, "decoded \(decoded), rejected \(rejected)")
    }
}
