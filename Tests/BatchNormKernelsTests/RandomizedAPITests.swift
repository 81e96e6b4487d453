import BatchNormKernels
import BatchNormReference
import Testing

/// Random shapes, wrong buffer sizes, wrong parameter lengths and bad scalars
/// thrown at the public API. Each call either succeeds and matches the float64
/// reference, or throws one of the errors its arguments deserve and leaves
/// every buffer as it was. Both layouts are drawn.
@Suite struct RandomizedAPITests {
    static let sentinel: Float = -777

    /// A buffer of `count` sentinels, or nil for "not passed".
    static func buffer(_ count: Int?) -> UnsafeMutableBufferPointer<Float>? {
        guard let count else { return nil }
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 0))
        b.initialize(repeating: sentinel)
        return b
    }

    @Test("400 random training calls: success matches the reference, failure changes nothing")
    func randomCalls() throws {
        var rng = SplitMix64(seed: 2026)
        var succeeded = 0, failed = 0
        for _ in 0..<400 {
            // Each argument is wrong now and then (about one call in eight per argument).
            func rare() -> Bool { Int.random(in: 0..<8, using: &rng) == 0 }
            let rank = rare() ? [1, 6].randomElement(using: &rng)! : Int.random(in: 2...5, using: &rng)
            let dimensions = (0..<rank).map { _ in Int.random(in: 0..<30, using: &rng) == 0 ? Int.random(in: -2...0, using: &rng) : Int.random(in: 1...6, using: &rng) }
            let layout: BatchNormLayout = Bool.random(using: &rng) ? .channelsLast : .channelsFirst
            let shapeOK = (2...5).contains(rank) && dimensions.allSatisfy { $0 >= 1 }
            let count = shapeOK ? dimensions.reduce(1, *) : 8
            let channels = shapeOK ? dimensions[layout == .channelsFirst ? 1 : rank - 1] : 2
            func perturbed(_ n: Int) -> Int { Int.random(in: 0..<16, using: &rng) == 0 ? max(0, n + [-1, 1, 3].randomElement(using: &rng)!) : n }
            let inputCount = perturbed(count), outputCount = perturbed(count)
            let weightCount: Int? = Bool.random(using: &rng) ? perturbed(channels) : nil
            let runningCount: Int? = Bool.random(using: &rng) ? perturbed(channels) : nil
            let loneRunning = runningCount != nil && rare()
            let epsilon = rare() ? [-1e-5, .nan, .infinity].randomElement(using: &rng)! : [1e-5, 1e-3, 0].randomElement(using: &rng)!
            let momentum = rare() ? [-0.1, 1.5, .nan].randomElement(using: &rng)! : [0.1, 0, 1].randomElement(using: &rng)!
            var executors: [BatchNormExecutor] = [.serial, .dispatch(threads: 2)]
            if isOpenMPAvailable { executors.append(.openMP(threads: 3)) }
            let executor = rare() ? .dispatch(threads: 0) : executors.randomElement(using: &rng)!

            // What the arguments deserve.
            var deserved = Set<BatchNormError.Code>()
            if !(2...5).contains(rank) { deserved.insert(.invalidRank) }
            else if !dimensions.allSatisfy({ $0 >= 1 }) { deserved.insert(.invalidDimension) }
            if executor.threads < 1 { deserved.insert(.invalidThreadCount) }
            if !(epsilon >= 0 && epsilon.isFinite) { deserved.insert(.invalidEpsilon) }
            if !(momentum >= 0 && momentum <= 1) { deserved.insert(.invalidMomentum) }
            if inputCount != count || outputCount != count || (weightCount.map { $0 != channels } ?? false)
                || (runningCount.map { $0 != channels } ?? false) { deserved.insert(.countMismatch) }
            if loneRunning { deserved.insert(.missingArgument) }
            if shapeOK && count / channels < 2 { deserved.insert(.tooFewValuesPerChannel) }

            let x = Self.buffer(inputCount)!, y = Self.buffer(outputCount)!
            let weight = Self.buffer(weightCount), runningMean = Self.buffer(runningCount)
            let runningVariance = loneRunning ? nil : Self.buffer(runningCount)
            let saved = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * channels)
            saved.initialize(repeating: 7)
            defer {
                for b in [x, y, weight, runningMean, runningVariance] { b?.deallocate() }
                saved.deallocate()
            }
            let data: [Float] = randomValues(inputCount, center: 0.5, spread: 2, seed: rng.next())
            for i in 0..<inputCount { x[i] = data[i] }
            if let weight { for i in 0..<weight.count { weight[i] = 1 + Float(i) / 10 } }
            if let runningMean { for i in 0..<runningMean.count { runningMean[i] = 0 } }
            if let runningVariance { for i in 0..<runningVariance.count { runningVariance[i] = 1 } }
            let savedMean = UnsafeMutableBufferPointer(rebasing: saved[0..<channels])
            let savedInvStd = UnsafeMutableBufferPointer(rebasing: saved[channels...])

            do throws(BatchNormError) {
                let shape = try BatchNormShape(dimensions, layout: layout)
                try BatchNormalization.forwardTraining(
                    input: UnsafeBufferPointer(x), output: y, shape: shape,
                    weight: weight.map(UnsafeBufferPointer.init), runningMean: runningMean,
                    runningVariance: runningVariance, momentum: momentum, epsilon: epsilon,
                    savedMean: savedMean, savedInvStd: savedInvStd, executor: executor)
                #expect(deserved.isEmpty, "succeeded although it deserved \(deserved): \(dimensions)")
                succeeded += 1
                let want = ReferenceBatchNorm.forward(
                    data.map(Double.init), shape: dimensions, channelsLast: layout == .channelsLast, training: true,
                    weight: weight.map { Array($0).map(Double.init) },
                    runningMean: runningMean.map { _ in Array(repeating: 0, count: channels) },
                    runningVariance: runningVariance.map { _ in Array(repeating: 1, count: channels) },
                    momentum: momentum, epsilon: epsilon)
                #expect(normwiseError(Array(y), want.output) <= Bound.forward(Float.self))
                if let runningVariance {
                    #expect(normwiseError(Array(runningVariance), want.runningVariance!) <= 1e-6)
                }
            } catch {
                failed += 1
                #expect(deserved.contains(error.code), "threw \(error) but deserved \(deserved)")
                #expect(Array(y).allSatisfy { $0 == Self.sentinel }, "output written by a failing call")
                #expect(saved.allSatisfy { $0 == 7 }, "saved statistics written by a failing call")
                #expect(runningMean.map { Array($0).allSatisfy { $0 == 0 } } ?? true)
                #expect(runningVariance.map { Array($0).allSatisfy { $0 == 1 } } ?? true)
            }
        }
        // The generator must exercise both outcomes.
        #expect(succeeded > 40 && failed > 40, "succeeded \(succeeded), failed \(failed)")
        print("randomized API calls: \(succeeded) succeeded, \(failed) threw")
    }

    @Test("300 random into: calls over arrays of random counts and capacities: the allocating call's bits, or nothing changed")
    func randomIntoCalls() throws {
        var rng = SplitMix64(seed: 2027)
        var succeeded = 0, failed = 0
        for _ in 0..<300 {
            func rare() -> Bool { Int.random(in: 0..<8, using: &rng) == 0 }
            let rank = Int.random(in: 2...5, using: &rng)
            let dimensions = (0..<rank).map { _ in Int.random(in: 1...6, using: &rng) }
            let layout: BatchNormLayout = Bool.random(using: &rng) ? .channelsLast : .channelsFirst
            let count = dimensions.reduce(1, *)
            let channels = dimensions[layout == .channelsFirst ? 1 : rank - 1]
            let x: [Float] = randomValues(count, center: 0.5, spread: 2, seed: rng.next())
            let dy: [Float] = randomValues(count, seed: rng.next())
            let weight: [Float] = (0..<(rare() ? channels + 1 : channels)).map { 1 + Float($0) / 10 }
            let residual: [Float]? = Bool.random(using: &rng) ? randomValues(count + (rare() ? 1 : 0), seed: rng.next()) : nil
            let activation: BatchNormActivation = Bool.random(using: &rng) ? .relu : .identity
            let executor: BatchNormExecutor = [.serial, .dispatch(threads: 2)].randomElement(using: &rng)!
            // The output array: of a random count, and now and then with room to grow.
            func array(_ around: Int) -> [Float] {
                var a = [Float](repeating: -777, count: max(0, around + Int.random(in: -3...3, using: &rng)))
                if Bool.random(using: &rng) { a.reserveCapacity(around + 5) }
                return a
            }
            var output = array(count)
            var gradients = BatchNormGradients<Float>(input: Bool.random(using: &rng) ? array(count) : nil,
                                                      weight: array(channels), bias: nil)
            let (outputBefore, gradientsBefore) = (output.map { $0 }, gradients)
            let deservesError = weight.count != channels || (residual.map { $0.count != count } ?? false)
                || count / channels < 2
            do throws(BatchNormError) {
                let want = try? BatchNormalization.forwardTraining(
                    x, shape: dimensions, layout: layout, weight: weight, residual: residual,
                    activation: activation, executor: executor)
                let statistics = try BatchNormalization.forwardTraining(
                    x, into: &output, shape: dimensions, layout: layout, weight: weight, residual: residual,
                    activation: activation, executor: executor)
                #expect(!deservesError)
                #expect(output.map(\.bitPattern) == want?.output.map(\.bitPattern))
                let wantGradients = try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: dimensions, layout: layout, statistics: statistics,
                    weight: weight, activation: activation, forwardOutput: output,
                    wantsResidualGradient: residual != nil, executor: executor)
                try BatchNormalization.backward(
                    outputGradient: dy, input: x, shape: dimensions, layout: layout, statistics: statistics,
                    weight: weight, activation: activation, forwardOutput: output, into: &gradients,
                    wantsResidualGradient: residual != nil, executor: executor)
                #expect(gradients.input?.map(\.bitPattern) == wantGradients.input?.map(\.bitPattern))
                #expect(gradients.residual?.map(\.bitPattern) == wantGradients.residual?.map(\.bitPattern))
                #expect(gradients.weight == wantGradients.weight && gradients.bias == wantGradients.bias)
                succeeded += 1
            } catch {
                failed += 1
                #expect(deservesError, "threw \(error)")
                #expect(output == outputBefore, "output changed by a failing call")
                #expect(gradients.input == gradientsBefore.input && gradients.weight == gradientsBefore.weight)
            }
        }
        #expect(succeeded > 40 && failed > 20, "succeeded \(succeeded), failed \(failed)")
    }
}
